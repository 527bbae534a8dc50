"""Intervals and summaries. Every accuracy pasture prints carries one of these, and its n.

Pure Python + math: no torch, so reports and the CLI can use it cheaply.
"""

from __future__ import annotations

import math
import statistics

Z95 = 1.959963984540054  # two-sided 95% normal quantile

# Two-sided 95% Student-t quantiles for small degrees of freedom (df 1..30); beyond that, ~normal.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042]


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
    return (max(0.0, centre - half), min(1.0, centre + half))


def t_quantile_95(df: int) -> float:
    if df < 1:
        return float("nan")
    return _T95[df - 1] if df <= len(_T95) else Z95


def mean_interval(values: list[float]) -> dict:
    """Mean, sample std and 95% t-interval of the mean over repeated runs (seeds or folds)."""
    n = len(values)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "ci95": [float("nan"), float("nan")], "n": 0}
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    half = t_quantile_95(n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": n}


def format_accuracy(correct: int, n: int) -> str:
    """'72.0% (95% CI 58.3-82.5%, n=50)'."""
    low, high = wilson_interval(correct, n)
    acc = correct / n if n else float("nan")
    return f"{acc:.1%} (95% CI {low:.1%}-{high:.1%}, n={n})"
