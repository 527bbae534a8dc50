"""How the default probe's backbone was chosen without looking at the held-out source.

For each of the 8 photo sources (benchmarks/loso.py's tree) held out in turn, every candidate backbone's
logistic head is cross-validated by leave-one-source-out inside the other 7 sources (pasture's own
choose_head_c: held-out cross-entropy, C from 0.01 to 10); the candidate with the lowest held-out
cross-entropy is trained on all 7 and scored on the held-out source. The nested figure is the honest
estimate of "choose the backbone on your training sources"; the last line is the choice made on all 8
sources (what a user's new photos would get).

    python benchmarks/probe_choice.py [--candidates effnet-lite0 effnet-lite2 effnet-lite0+lite2] [--out FILE]

Features come from pasture's feature cache (shared with `pasture train`; the first run computes them:
about 3 minutes per backbone for the 440 photos on 2 cores; 70 s when cached).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import RESULTS, write_results
from loso import link_sources

from pasture.classify.features import feature_cache
from pasture.classify.logistic import choose_head_c, fit_logistic_head
from pasture.classify.recipes import resolve_recipe
from pasture.core.defaults import DEFAULT_RECIPE
from pasture.data.layouts import load_pool
from pasture.models import create_model


def features_of(model_name: str, data: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    recipe = resolve_recipe("probe", model=model_name)
    pool = load_pool(data, recipe.image_size, groups="subfolders", warn=lambda message: None).train
    backbone = create_model(recipe.model, len(pool.classes), recipe.image_size, weights="imagenet")
    return feature_cache(recipe).features(backbone, pool.images), pool.labels, pool.groups


def balanced_accuracy(head, features: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        predicted = head(features).argmax(1)
    recalls = [float((predicted[labels == k] == k).float().mean()) for k in labels.unique().tolist()]
    return sum(recalls) / len(recalls)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", nargs="+", default=["effnet-lite0", "effnet-lite2", "effnet-lite0+lite2"])
    parser.add_argument("--out", default=str(RESULTS / "probe_choice.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        link_sources(data)
        features = {}
        for name in args.candidates:
            features[name], labels, groups = features_of(name, data)
            print(f"features of {name}: {tuple(features[name].shape)}", flush=True)
    sources = sorted(set(groups))
    rows = {}
    for source in sources:
        inside = torch.tensor([group != source for group in groups])
        inner_groups = [group for group in groups if group != source]
        chosen = {}
        for name in args.candidates:
            c, how, _ = choose_head_c(features[name][inside], labels[inside], 2, True, inner_groups, seed=0)
            chosen[name] = (how["held_out_cross_entropy_by_c"][str(c)], c)
        best = min(args.candidates, key=lambda name: chosen[name])
        head = fit_logistic_head(features[best][inside], labels[inside], 2, chosen[best][1], True)
        rows[source] = {
            "chosen": best,
            "c": chosen[best][1],
            "balanced_accuracy": balanced_accuracy(head, features[best][~inside], labels[~inside]),
            "inner_cross_entropy": {n: v[0] for n, v in chosen.items()},
        }
        print(
            f"{source[:40]:40} chose {best:20} C={chosen[best][1]:<5} {rows[source]['balanced_accuracy']:.1%}",
            flush=True,
        )
    scores = [row["balanced_accuracy"] for row in rows.values()]
    final = {name: choose_head_c(features[name], labels, 2, True, groups, seed=0)[1] for name in args.candidates}
    on_all = min(
        args.candidates, key=lambda name: final[name]["held_out_cross_entropy_by_c"][str(final[name]["chosen_c"])]
    )
    print(
        f"\nnested choice: mean {sum(scores) / len(scores):.1%} over {len(scores)} held-out sources, lowest "
        f"{min(scores):.1%}"
    )
    print(
        f"chosen on all {len(sources)} sources: {on_all} (the default recipe's is "
        f"{resolve_recipe(DEFAULT_RECIPE).model})  [{time.perf_counter() - started:.0f} s]"
    )
    write_results(
        args.out,
        {
            "command": ["python", "benchmarks/probe_choice.py", *sys.argv[1:]],
            "per_source": rows,
            "nested_mean": sum(scores) / len(scores),
            "nested_lowest": min(scores),
            "chosen_on_all": on_all,
            "candidates": args.candidates,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
