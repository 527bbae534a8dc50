"""Fit a new camera (issue 43): does `pasture adapt` (label spreading, then the head refitted) help on photo
sources the model never saw, and do `pasture ask`'s labels beat random ones?

(a) The default's head trained on cowhorse-dev's 100 training photos, adapted to all 240 photos of
    cowhorse-sources as one new camera (labels hidden from the method, used only to score), per source.
(b) Leave one source out over the 8 sources: the head trained on the other 7, the held-out source split
    in half (seeded): one half the unlabeled pool the method sees, the other half scored. And pairs: each
    one-class cow source with each one-class horse source held out together (3 x 4 = 12 two-class new
    cameras; each source's halves as above), the head trained on the other 6.
Conditions: unadapted; self-training (the head refitted on its own confident pseudo-labels, p >= 0.9:
the obvious method); label spreading from nothing; label spreading from the head's probabilities
(`pasture adapt`); the latter with K = 2, 5, 10, 20 pool photos labelled, chosen by `ask` or at random (5
draws). In (a) every condition is scored on all 240 photos (labelled ones included: at most 20 of 240).
The head is fitted as `pasture train` fits it (C by held-out cross-entropy on stratified folds) and the
guard of classify.adapt is applied (a refused adaptation scores as unadapted). Features come from the
default's feature cache.

    python benchmarks/adapt.py [--out benchmarks/results/adapt.json]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from _common import RESULTS, eight_sources, write_results
from scipy import stats

from pasture.classify.adapt import ask_order, guard, spread_to_target, target_labels
from pasture.classify.features import feature_cache
from pasture.classify.logistic import choose_head_c, fit_logistic_head
from pasture.classify.recipes import get_recipe
from pasture.data.layouts import decode_files
from pasture.models import create_model

LABEL_COUNTS = (2, 5, 10, 20)
DRAWS = 5
CONFIDENT = 0.9  # self-training keeps pseudo-labels at least this sure


def sources_and_features():
    """(features, labels, source, split) of the 440 cow/horse photos of the 8 sources."""
    files, labels, sources, splits = eight_sources()
    recipe = get_recipe("probe")
    model = create_model(recipe.model, 2, recipe.image_size, weights="imagenet")
    features = feature_cache(recipe).features(model, decode_files(files, recipe.image_size))
    return features, torch.tensor(labels), sources, splits


def fitted_head(features: torch.Tensor, labels: torch.Tensor):
    c, _, _ = choose_head_c(features, labels, 2, True, None, 0)
    return fit_logistic_head(features, labels, 2, c, True), c


def conditions(train_x, train_y, pool_x, pool_y, score_x, seed: int) -> dict[str, list[torch.Tensor]]:
    """Each condition's predictions on `score_x` (a list: one per random draw), and the seconds each took."""
    head, c = fitted_head(train_x, train_y)
    with torch.no_grad():
        original_pool = head(pool_x).argmax(1)
        unadapted = head(score_x).argmax(1)
    out: dict[str, list[torch.Tensor]] = {"unadapted": [unadapted]}

    def refit(extra_x, extra_y):
        new = fit_logistic_head(torch.cat([train_x, extra_x]), torch.cat([train_y, extra_y]), 2, c, True)
        with torch.no_grad():
            adapted_pool, scored = new(pool_x).argmax(1), new(score_x).argmax(1)
        why, _ = guard(original_pool, adapted_pool, ["cow", "horse"])
        return unadapted if why is not None else scored

    with torch.no_grad():
        sure = torch.softmax(head(pool_x), 1)
    keep = sure.max(1).values >= CONFIDENT
    out["self-training"] = [refit(pool_x[keep], sure.argmax(1)[keep])]
    plain = spread_to_target(train_x, train_y, pool_x, 2)
    out["label spreading from nothing"] = [refit(pool_x, plain.argmax(1))]
    # what the guard of spreading's own confidence would keep: its scores stay below 0.6 on these photos,
    # so a cut at 0.6 or 0.8 kept no photo at all (the unadapted head; measured, not listed)
    spread = spread_to_target(train_x, train_y, pool_x, 2, head_probabilities=sure)
    out["label spreading from the head (pasture adapt)"] = [refit(pool_x, spread.argmax(1))]
    generator = torch.Generator().manual_seed(seed)
    for k in LABEL_COUNTS:
        if k > len(pool_x):
            continue
        asked = ask_order(spread, pool_x, k)
        draws = {"ask": [asked]}
        draws["random"] = [torch.randperm(len(pool_x), generator=generator)[:k].tolist() for _ in range(DRAWS)]
        for how, picks in draws.items():
            results = []
            for chosen in picks:
                labelled = {index: int(pool_y[index]) for index in chosen}
                pseudo, _ = target_labels(train_x, train_y, pool_x, 2, labelled, sure)  # as `pasture adapt`
                joins = pseudo >= 0
                results.append(refit(pool_x[joins], pseudo[joins]))
            out[f"{k} labels by {how}"] = results
    return out


def accuracy(predictions: list[torch.Tensor], truth: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    values = [
        float((p == truth)[mask].float().mean() if mask is not None else (p == truth).float().mean())
        for p in predictions
    ]
    return statistics.mean(values)


def mean_ci(values: list[float]) -> dict:
    mean = statistics.mean(values)
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0
    return {"mean": mean, "ci95": [mean - half, mean + half], "n_sources": len(values)}


def seeded_halves(held: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A held-out source's photos in half, seeded: (the unlabeled pool, the scored half)."""
    rows = held.nonzero().flatten()
    order = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))]
    return order[: len(order) // 2], order[len(order) // 2 :]


def summarise(per_unit: dict[str, dict[str, float]], label: str) -> dict:
    """Each condition's mean over the held-out units (sources, or pairs of them) with a t interval, the
    lowest, and paired against unadapted (Wilcoxon; the units more than 2 points worse); printed."""
    units = sorted(per_unit)
    summary = {}
    for name in per_unit[units[0]]:
        values = [per_unit[unit][name] for unit in units if name in per_unit[unit]]
        row = mean_ci(values)
        row["lowest"] = min(values)
        if name != "unadapted":
            base = [per_unit[unit]["unadapted"] for unit in units if name in per_unit[unit]]
            differences = [v - b for v, b in zip(values, base)]
            row["paired_vs_unadapted"] = {
                "mean_difference": statistics.mean(differences),
                "wilcoxon_p": float(stats.wilcoxon(differences).pvalue) if any(differences) else 1.0,
                "worse_by_more_than_2_points": [u for u, d in zip(units, differences) if d < -0.02],
            }
        summary[name] = row
        paired = row.get("paired_vs_unadapted")
        print(
            f"{label} mean {name:46s} {100 * row['mean']:.1f}% (95% CI {100 * row['ci95'][0]:.1f}-"
            f"{100 * row['ci95'][1]:.1f}, {row['n_sources']} held out; lowest {100 * row['lowest']:.1f}%)"
            + (
                f"; paired {100 * paired['mean_difference']:+.1f} points, p = {paired['wilcoxon_p']:.3f}"
                if paired
                else ""
            )
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(RESULTS / "adapt.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    features, labels, sources, splits = sources_and_features()
    names = sorted(set(sources))
    # (a) trained on dev's training photos, the whole of cowhorse-sources as one new camera
    dev_train = torch.tensor([s.startswith("cowhorse-dev/train") for s in splits])
    target = torch.tensor([s.startswith("cowhorse-sources") for s in splits])
    started = time.perf_counter()
    found = conditions(features[dev_train], labels[dev_train], features[target], labels[target], features[target], 0)
    seconds = time.perf_counter() - started
    truth, target_sources = labels[target], [s for s, t in zip(sources, target.tolist()) if t]
    part_a = {}
    print("(a) trained on cowhorse-dev, adapted to cowhorse-sources (240 photos), accuracy:")
    for name, predictions in found.items():
        row = {"overall": accuracy(predictions, truth)}
        for source in sorted(set(target_sources)):
            row[source] = accuracy(predictions, truth, torch.tensor([s == source for s in target_sources]))
        part_a[name] = row
        print(f"  {name:46s} " + "  ".join(f"{key} {100 * value:5.1f}" for key, value in row.items()))
    # (b) leave one source out: half of the held-out source the pool, half scored
    per_source: dict[str, dict[str, float]] = {}
    timings = []
    for source in names:
        held = torch.tensor([s == source for s in sources])
        pool, scored = seeded_halves(held)
        started = time.perf_counter()
        found = conditions(features[~held], labels[~held], features[pool], labels[pool], features[scored], 1)
        timings.append(time.perf_counter() - started)
        per_source[source] = {name: accuracy(predictions, labels[scored]) for name, predictions in found.items()}
        print(
            f"(b) {source:28s} " + "  ".join(f"{k}: {100 * v:.1f}" for k, v in list(per_source[source].items())[:3]),
            flush=True,
        )
    summary = summarise(per_source, "(b)")
    # (b) pairs: an unseen cow source and an unseen horse source held out together, a two-class new camera
    cow_only = [name for name in names if set(labels[torch.tensor([s == name for s in sources])].tolist()) == {0}]
    horse_only = [name for name in names if set(labels[torch.tensor([s == name for s in sources])].tolist()) == {1}]
    per_pair: dict[str, dict[str, float]] = {}
    for cow in cow_only:
        for horse in horse_only:
            split = [seeded_halves(torch.tensor([s == name for s in sources])) for name in (cow, horse)]
            pool, scored = torch.cat([h[0] for h in split]), torch.cat([h[1] for h in split])
            held = torch.tensor([s in (cow, horse) for s in sources])
            found = conditions(features[~held], labels[~held], features[pool], labels[pool], features[scored], 2)
            per_pair[f"{cow} + {horse}"] = {name: accuracy(p, labels[scored]) for name, p in found.items()}
    pair_summary = summarise(per_pair, "(b) pairs")
    write_results(
        args.out,
        {
            "cpu": platform.processor() or platform.machine(),
            "a_dev_to_sources": part_a,
            "a_seconds_all_conditions": seconds,
            "b_loso_per_source": per_source,
            "b_loso_summary": summary,
            "b_pairs_per_pair": per_pair,
            "b_pairs_summary": pair_summary,
            "b_seconds_per_source_all_conditions": statistics.mean(timings),
        },
    )


if __name__ == "__main__":
    main()
