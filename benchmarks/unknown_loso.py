"""Leave-one-source-out for "unknown" and honest confidence (issue 41): each of the 8 cow/horse photo
sources held out in turn, the default probe's head and familiarity fitted on the other 7 exactly as
`pasture train` fits them (C and the threshold on stratified folds of the training photos; no --groups),
and scored on
- the held-out source ("known, new camera"): accuracy, the share flagged unfamiliar, ECE of the head's
  probabilities, before and after a temperature fitted on the training photos' held-out folds (stratified,
  and, as with `train --groups`, the 7 training sources held out in turn);
- shared/data/others (cats, dogs, sheep: "another animal"): the share caught, and AUROC against the
  held-out source, for each score tried:
    knn        the familiarity (k=5 cosine distance to the training photos), pasture's score
    maxprob    the head's top probability (what other tools show)
    concepts   the share of the photo's ImageNet probability (Lite0's own 1000-class head, read from the
               same features) that falls on the ImageNet classes holding 90% of the training photos'
               mass: an attempt to tell another animal (a sheep is a "ram") from a new camera (a
               feedlot cow is still an "ox")
    knn+concepts  flagged by both

Features come from the default's feature cache (one backbone pass per photo, reused by later runs).

    python benchmarks/unknown_loso.py [--out benchmarks/results/unknown_loso.json]
"""

from __future__ import annotations

import argparse
import csv
import platform
import time
from pathlib import Path

import torch
from _common import DEFAULT_DATA, RESULTS, eight_sources, write_results

from pasture.classify.calibration import auroc, calibration, proportion
from pasture.classify.familiarity import Familiarity
from pasture.classify.features import feature_cache
from pasture.classify.logistic import choose_head_c, fit_logistic_head
from pasture.classify.recipes import get_recipe
from pasture.data.layouts import decode_files
from pasture.models import create_model
from pasture.models.pretrained import imagenet_classifier

SHARED = DEFAULT_DATA.parent
CONCEPT_MASS = 0.9  # the training photos' ImageNet classes that hold this share of their mean probability
LITE0_WIDTH = 1280  # the first features of the default are Lite0's pooled features, its ImageNet head's input


TEMPERATURES = torch.logspace(-1.5, 1.5, 601)  # 0.03 to 32: a grid fine enough that NLL is flat between points


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T that minimises the cross-entropy of softmax(logits / T) (Guo et al. 2017): one
    number, so it changes no label, only how sure the probabilities are. Rows with NaN logits (photos no
    fold held out) are left out; 1.0 when none is left. A grid rather than an optimiser: one dimension,
    deterministic, no failure to converge."""
    usable = ~torch.isnan(logits).any(1)
    if not usable.any():
        return 1.0
    scaled = logits[usable].double()[None] / TEMPERATURES.double()[:, None, None]
    losses = torch.nn.functional.cross_entropy(
        scaled.flatten(0, 1), labels[usable].repeat(len(TEMPERATURES)), reduction="none"
    ).view(len(TEMPERATURES), -1)
    return float(TEMPERATURES[losses.mean(1).argmin()])


def photos() -> tuple[list[Path], list[int], list[str], list[Path]]:
    """(files, labels, sources) of the 8 cow/horse sources, and the files of shared/others."""
    files, labels, sources, _ = eight_sources()
    with (SHARED / "others" / "MANIFEST.csv").open() as handle:
        others = [SHARED / "others" / row["file"] for row in csv.DictReader(handle)]
    return files, labels, sources, others


def concept_scores(imagenet_probabilities: torch.Tensor, train_rows: torch.Tensor) -> torch.Tensor:
    """Each photo's ImageNet probability mass on the training photos' main ImageNet classes."""
    mean = imagenet_probabilities[train_rows].mean(0)
    order = mean.argsort(descending=True)
    count = int((mean[order].cumsum(0) < CONCEPT_MASS).sum()) + 1
    return imagenet_probabilities[:, order[:count]].sum(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(RESULTS / "unknown_loso.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    files, labels_list, sources, other_files = photos()
    recipe = get_recipe("probe")
    model = create_model(recipe.model, 2, recipe.image_size, weights="imagenet")
    cache = feature_cache(recipe)
    started = time.perf_counter()
    features = cache.features(model, decode_files(files, recipe.image_size))
    other_features = cache.features(model, decode_files(other_files, recipe.image_size))
    print(f"features of {len(files) + len(other_files)} photos: {time.perf_counter() - started:.0f} s")
    labels = torch.tensor(labels_list)
    head = imagenet_classifier("effnet-lite0").get_classifier()
    with torch.no_grad():
        imagenet = torch.softmax(head(torch.cat([features, other_features])[:, :LITE0_WIDTH]), 1)
    rows = []
    pooled: dict[str, list] = {"before": [], "after": [], "grouped_before": [], "grouped_after": [], "labels": []}
    for source in sorted(set(sources)):
        held = torch.tensor([s == source for s in sources])
        train_x, train_y = features[~held], labels[~held]
        c, _, held_logits = choose_head_c(train_x, train_y, 2, True, None, 0)
        temperature = fit_temperature(held_logits, train_y)
        # the same, with the training sources known (train --groups): C and T on the 7 sources held out in turn
        inner = [name for name, out in zip(sources, held.tolist()) if not out]
        grouped_c, _, grouped_logits = choose_head_c(train_x, train_y, 2, True, inner, 0)
        grouped_t = fit_temperature(grouped_logits, train_y)
        grouped_head = fit_logistic_head(train_x, train_y, 2, grouped_c, True)
        logistic = fit_logistic_head(train_x, train_y, 2, c, True)
        familiarity = Familiarity.fit(train_x, train_y, 0)
        with torch.no_grad():
            logits = logistic(features[held])
            other_logits = logistic(other_features)
        before, after = torch.softmax(logits, 1), torch.softmax(logits / temperature, 1)
        pooled["before"].append(before)
        pooled["after"].append(after)
        pooled["labels"].append(labels[held])
        with torch.no_grad():
            grouped_logits_held = grouped_head(features[held])
        pooled["grouped_before"].append(torch.softmax(grouped_logits_held, 1))
        pooled["grouped_after"].append(torch.softmax(grouped_logits_held / grouped_t, 1))
        known, others = familiarity.score(features[held]), familiarity.score(other_features)
        train_rows = (~held).nonzero().flatten()
        concepts = concept_scores(imagenet, train_rows)
        known_concepts, other_concepts = concepts[: len(files)][held], concepts[len(files) :]
        concept_cut = concepts[train_rows].sort().values[int(0.05 * len(train_rows))]  # keeps 95% of training
        correct = before.argmax(1) == labels[held]
        max_known, max_other = before.max(1).values, torch.softmax(other_logits, 1).max(1).values
        row = {
            "source": source,
            "n": int(held.sum()),
            "temperature": temperature,
            "temperature_grouped": grouped_t,
            "accuracy": proportion(correct),
            "accuracy_familiar": proportion(correct[known["familiar"]]),
            "accuracy_unfamiliar": proportion(correct[~known["familiar"]]),
            "flagged_knn": proportion(~known["familiar"]),
            "caught_knn": proportion(~others["familiar"]),
            "flagged_concepts": proportion(known_concepts < concept_cut),
            "caught_concepts": proportion(other_concepts < concept_cut),
            "flagged_both": proportion(~known["familiar"] & (known_concepts < concept_cut)),
            "caught_both": proportion(~others["familiar"] & (other_concepts < concept_cut)),
            "auroc_knn": auroc(others["distance"], known["distance"]),
            "auroc_maxprob": auroc(-max_other, -max_known),
            "auroc_concepts": auroc(-other_concepts, -known_concepts),
            "ece_before": calibration(before, labels[held])["ece"],
            "ece_after": calibration(after, labels[held])["ece"],
        }
        rows.append(row)
        print(
            f"{source:28s} n={row['n']:3d} acc {row['accuracy']['share']:.3f} T={temperature:.2f} Tg={grouped_t:.2f} "
            f"ECE {row['ece_before']:.3f}->{row['ece_after']:.3f} flagged knn {row['flagged_knn']['share']:.2f} "
            f"concepts {row['flagged_concepts']['share']:.2f} both {row['flagged_both']['share']:.2f} | caught knn "
            f"{row['caught_knn']['share']:.2f} concepts {row['caught_concepts']['share']:.2f} both "
            f"{row['caught_both']['share']:.2f} | AUROC knn {row['auroc_knn']:.3f} maxprob {row['auroc_maxprob']:.3f} "
            f"concepts {row['auroc_concepts']:.3f}",
            flush=True,
        )
    every = torch.cat(pooled["labels"])
    summary = {
        "ece_before_pooled": calibration(torch.cat(pooled["before"]), every),
        "ece_after_pooled": calibration(torch.cat(pooled["after"]), every),
        "ece_grouped_before_pooled": calibration(torch.cat(pooled["grouped_before"]), every),
        "ece_grouped_after_pooled": calibration(torch.cat(pooled["grouped_after"]), every),
    }
    for key in ("ece_before", "ece_after", "auroc_knn", "auroc_maxprob", "auroc_concepts"):
        summary[f"mean_{key}"] = sum(row[key] for row in rows) / len(rows)
    for key in ("flagged_knn", "caught_knn", "flagged_concepts", "caught_concepts", "flagged_both", "caught_both"):
        summary[f"mean_{key}"] = sum(row[key]["share"] for row in rows) / len(rows)
    print(
        f"pooled ECE (n={summary['ece_before_pooled']['n']}): {summary['ece_before_pooled']['ece']:.3f} before, "
        f"{summary['ece_after_pooled']['ece']:.3f} after the temperature; with --groups (C and T by inner "
        f"leave-one-source-out) {summary['ece_grouped_before_pooled']['ece']:.3f} before, "
        f"{summary['ece_grouped_after_pooled']['ece']:.3f} after; "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if k.startswith("mean_"))
    )
    write_results(args.out, {"cpu": platform.processor() or platform.machine(), "per_source": rows, "summary": summary})


if __name__ == "__main__":
    main()
