"""Intervals and summaries. Every accuracy pasture prints carries one of these, and its n.

Pure Python + math: no torch, so reports and the CLI can use it cheaply.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics

Z95 = 1.959963984540054  # two-sided 95% normal quantile

# Two-sided 95% Student-t quantiles for small degrees of freedom (df 1..30); beyond that, ~normal.
_T95 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion correct/n (95% by default).

    Better than the normal approximation for small n and for accuracies near 0 or 1. n=0 -> (0, 1).
    """
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= correct <= n:
        raise ValueError(f"correct={correct} must lie in [0, n={n}]")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n the bounds are exactly 0 or 1 (the formula gets there only up to float rounding: 2.8e-17
    # for 0 of 12, which put an observed 0% outside its own interval).
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return (low, high)


def t_quantile_95(df: int) -> float:
    if df < 1:
        return float("nan")
    return _T95[df - 1] if df <= len(_T95) else Z95


def mean_interval(values: list[float], bounds: tuple[float, float] | None = (0.0, 1.0)) -> dict:
    """Mean, sample std and 95% t-interval of the mean over repeated runs (seeds or folds).

    The t-interval is symmetric, so for accuracies near 100% (or 0%) it can pass the possible range
    (train accuracies 1.0, 1.0, 0.6 give [0.31, 1.38]); it is clipped to `bounds`, by default [0, 1]
    because everything pasture averages over runs is a proportion. `bounds=None` leaves it as is."""
    n = len(values)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "ci95": [float("nan"), float("nan")], "n": 0}
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    half = t_quantile_95(n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
    low, high = mean - half, mean + half
    if bounds is not None and n > 1:
        low, high = max(bounds[0], low), min(bounds[1], high)
    return {"mean": mean, "std": std, "ci95": [low, high], "n": n}


Z80 = 0.8416212335729143  # one-sided normal quantile for 80% power
EXACT_SIGN_FLIP_MAX = 16  # enumerate all 2^n sign patterns up to this many pairs


def sign_flip_p_value(differences: list[float], samples: int = 20000, seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip permutation test of mean(differences) == 0.

    Exact (all 2^n sign patterns) for n <= 16, Monte Carlo with `samples` draws beyond.
    """
    n = len(differences)
    if n == 0:
        return 1.0
    observed = abs(sum(differences))
    tolerance = 1e-12 * max(1.0, observed)
    if n <= EXACT_SIGN_FLIP_MAX:
        extreme = sum(
            abs(sum(sign * value for sign, value in zip(signs, differences))) >= observed - tolerance
            for signs in itertools.product((1, -1), repeat=n)
        )
        return extreme / 2**n
    rng = random.Random(seed)
    extreme = sum(
        abs(sum(value if rng.random() < 0.5 else -value for value in differences)) >= observed - tolerance
        for _ in range(samples)
    )
    return (extreme + 1) / (samples + 1)


def bootstrap_interval(differences: list[float], samples: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of paired differences (seeded, reproducible)."""
    n = len(differences)
    if n == 0:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(differences) for _ in range(n)) / n for _ in range(samples))
    return (means[int(0.025 * samples)], means[int(0.975 * samples) - 1])


def corrected_resampled_t(differences: list[float], folds: int) -> tuple[float, float, float]:
    """(p-value, half-width of the 95% interval, standard error) of the mean of paired differences from
    repeated k-fold cross-validation, by the corrected resampled t-test (Nadeau and Bengio 2003, as
    Bouckaert and Frank 2004 apply it to r x k folds).

    The folds' differences are not independent: every training part shares (k-2)/(k-1) of its photos
    with every other one, and repeats reuse the same photos. Treating the r x k differences as
    independent pairs (a plain paired test) underestimates their variance and finds differences that
    are not there (tests/test_statistics.py measures its false-positive rate). The correction adds
    n_test / n_train = 1 / (k - 1) to the 1 / n of the variance of the mean."""
    from scipy import stats as scipy_stats  # a base dependency, imported where used (the CLI's --help stays light)

    n = len(differences)
    if n < 2 or folds < 2:
        return float("nan"), float("nan"), float("nan")
    mean = statistics.fmean(differences)
    se = math.sqrt((1 / n + 1 / (folds - 1)) * statistics.variance(differences))
    if se == 0:
        return (1.0 if mean == 0 else 0.0), 0.0, 0.0
    p_value = float(2 * scipy_stats.t.sf(abs(mean) / se, df=n - 1))
    return p_value, float(scipy_stats.t.ppf(0.975, df=n - 1)) * se, se


def exact_mcnemar(before: list[bool], after: list[bool]) -> dict:
    """The exact McNemar test of two models on the same photos: `gained` (photos `after` gets right and
    `before` does not), `lost` (the other way round) and the two-sided p-value of that split when neither
    model is better (each disagreement a fair coin: scipy's binomtest(gained, gained + lost, 0.5))."""
    gained = sum(now and not then for then, now in zip(before, after))
    lost = sum(then and not now for then, now in zip(before, after))
    n = gained + lost
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2**n
    return {"gained": gained, "lost": lost, "p_value": min(1.0, 2 * tail)}


def difference_interval_text(ci95: list[float], separator: str = " to ") -> str:
    """A paired difference's interval as text ('+1.0% to +3.0%'); 'no interval (one pair)' when it has
    none (one pair has no spread to resample)."""
    low, high = ci95
    if math.isnan(low) or math.isnan(high):
        return "no interval (one pair)"
    return f"{low:+.1%}{separator}{high:+.1%}"


def paired_comparison(
    candidate: list[float],
    baseline: list[float],
    seed: int = 0,
    folds: int | None = None,
    seeds_of_one_split: bool = False,
) -> dict:
    """Compare two conditions run on the same seeds/folds (pair i shares its split and seed).

    Pairs that are independent (seeds on a fixed split, held-out groups): the mean difference, its 95%
    bootstrap interval and the sign-flip p-value. Pairs that are the r x k folds of repeated k-fold
    cross-validation (`folds=k`): the corrected resampled t-test's p-value and t-interval, whose unit is
    the fold with the overlap of training parts accounted for. Both with the smallest difference this
    design could detect (80% power, 5% two-sided) and a plain-words verdict.

    `seeds_of_one_split`: the pairs differ only by seed. When every seed gave the same accuracy in both
    conditions (a recipe the seed does not change, such as a probe's deterministic head), the n pairs
    are one pair repeated: a sign-flip test over them would report p = 2/2^n and a zero-width interval
    for what is one comparison on one test split, so they count as one pair.
    """
    if len(candidate) != len(baseline):
        raise ValueError("paired comparison needs the same number of runs in both conditions")
    runs = len(candidate)
    repeated = seeds_of_one_split and runs > 1 and len(set(candidate)) == 1 and len(set(baseline)) == 1
    if repeated:
        candidate, baseline = candidate[:1], baseline[:1]
    differences = [a - b for a, b in zip(candidate, baseline)]
    n = len(differences)
    mean = statistics.fmean(differences) if n else float("nan")
    sd = statistics.stdev(differences) if n > 1 else float("nan")
    if folds is not None:
        p_value, half, se = corrected_resampled_t(differences, folds)
        low, high = mean - half, mean + half
        detectable = (t_quantile_95(n - 1) + Z80) * se if n > 1 else float("nan")
        can_reach = n >= 2
        test = "corrected resampled t-test (Nadeau and Bengio 2003) over folds"
    else:
        # One pair has no spread to resample: no interval rather than a zero-width one.
        low, high = bootstrap_interval(differences, seed=seed) if n > 1 else (float("nan"), float("nan"))
        p_value = sign_flip_p_value(differences, seed=seed)
        detectable = (t_quantile_95(n - 1) + Z80) * sd / math.sqrt(n) if n > 1 else float("nan")
        # The smallest p-value a sign-flip test can reach with n pairs is 2 / 2^n: below 6 pairs it can
        # never reach 5%, whatever the data.
        can_reach = n >= 1 and 2 / 2**n <= 0.05
        test = "sign-flip permutation test"
    if can_reach and p_value <= 0.05 and low > 0:
        verdict = "helps"
    elif can_reach and p_value <= 0.05 and high < 0:
        verdict = "hurts"
    else:
        if repeated:
            reason = (
                f"every one of the {runs} seeds gave the same accuracy in both conditions: the seed does not "
                "change these runs, so they are one pair on one test split; compare over folds (--folds 5) "
                "or held-out sources (--folds groups)"
            )
        elif not can_reach:
            reason = f"{n} paired runs cannot reach p <= 0.05; use at least 6 seeds or folds"
        elif math.isfinite(detectable) and detectable > 0:
            reason = f"this design detects differences of about {detectable:.1%} or more"
        else:
            reason = "every paired run gave the same accuracy"
        verdict = f"no detectable difference at this sample size ({reason})"
    return {
        "mean_difference": mean,
        "ci95": [low, high],
        "p_value": p_value,
        "n_pairs": n,
        **({"runs_per_condition": runs, "same_every_seed": True} if repeated else {}),
        "test": test,
        "sd_difference": sd,
        "detectable_difference": detectable,
        "verdict": verdict,
        "differences": differences,
    }
