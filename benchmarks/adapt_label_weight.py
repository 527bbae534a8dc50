"""How much should a labelled photo of the new camera weigh in the adapted head? (issue 43: "the labelled
target photos join training, with a weight chosen in the benchmark"). The conditions of
benchmarks/adapt.py with K = 5, 10, 20 labels (by `ask`, and at random: 5 draws), each labelled photo
weighing w = 1, 3, 10 or 30 in the head's fit (every other photo 1); (a) and (b) as there.

    python benchmarks/adapt_label_weight.py [--out benchmarks/results/adapt_label_weight.json]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import RESULTS, write_results
from adapt import fitted_head, seeded_halves, sources_and_features

from pasture.classify.adapt import ask_order, guard, spread_to_target
from pasture.classify.logistic import fit_logistic_head

WEIGHTS = (1, 3, 10, 30)
KS = (5, 10, 20)


def run(train_x, train_y, pool_x, pool_y, score_x, score_y, seed: int) -> dict[str, float]:
    """Accuracy on `score_x` unadapted and for each K, way of choosing and weight (random: mean of 5)."""
    head, c = fitted_head(train_x, train_y)
    with torch.no_grad():
        sure = torch.softmax(head(pool_x), 1)
        original_pool = sure.argmax(1)
        base = float((head(score_x).argmax(1) == score_y).float().mean())
    spread = spread_to_target(train_x, train_y, pool_x, 2, head_probabilities=sure)
    out = {"unadapted": base}
    gen = torch.Generator().manual_seed(seed)
    for k in KS:
        picks = {
            "ask": [ask_order(spread, pool_x, k)],
            "random": [torch.randperm(len(pool_x), generator=gen)[:k].tolist() for _ in range(5)],
        }
        for how, draws in picks.items():
            for w in WEIGHTS:
                accs = []
                for chosen in draws:
                    lab = {i: int(pool_y[i]) for i in chosen}
                    pseudo = spread_to_target(train_x, train_y, pool_x, 2, lab, sure).argmax(1)
                    rw = torch.ones(len(train_x) + len(pool_x))
                    for i, label in lab.items():
                        pseudo[i] = label
                        rw[len(train_x) + i] = w
                    new = fit_logistic_head(
                        torch.cat([train_x, pool_x]), torch.cat([train_y, pseudo]), 2, c, True, row_weights=rw
                    )
                    with torch.no_grad():
                        why, _ = guard(original_pool, new(pool_x).argmax(1), ["cow", "horse"])
                        pred = head(score_x).argmax(1) if why else new(score_x).argmax(1)
                    accs.append(float((pred == score_y).float().mean()))
                out[f"{k} {how} w{w}"] = statistics.mean(accs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(RESULTS / "adapt_label_weight.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    features, labels, sources, splits = sources_and_features()
    dev_train = torch.tensor([s.startswith("cowhorse-dev/train") for s in splits])
    target = torch.tensor([s.startswith("cowhorse-sources") for s in splits])
    a = run(
        features[dev_train], labels[dev_train], features[target], labels[target], features[target], labels[target], 0
    )
    print("(a)", {k: round(100 * v, 1) for k, v in a.items()}, flush=True)
    names = sorted(set(sources))
    per = {}
    for source in names:
        held = torch.tensor([s == source for s in sources])
        pool, scored = seeded_halves(held)
        per[source] = run(
            features[~held], labels[~held], features[pool], labels[pool], features[scored], labels[scored], 1
        )
        print(
            source,
            {k: round(100 * v, 1) for k, v in per[source].items() if k.startswith("10") or k == "unadapted"},
            flush=True,
        )
    for key in per[names[0]]:
        vals = [per[s][key] for s in names]
        print(f"(b) {key:20s} mean {100 * statistics.mean(vals):.1f} lowest {100 * min(vals):.1f}")
    summary = {
        key: {"mean": statistics.mean([per[s][key] for s in names]), "lowest": min(per[s][key] for s in names)}
        for key in per[names[0]]
    }
    write_results(args.out, {"a_dev_to_sources": a, "b_loso_per_source": per, "b_loso_summary": summary})


if __name__ == "__main__":
    main()
