"""Do GAN samples help? The verdict for the projected GAN (issue 30), paired, in-source and on unseen sources.

Needs the sampled sets that benchmarks/gan.py writes (DIR/synth_projected, DIR/synth_default: 500 per
class from GANs trained on cowhorse-dev's TRAIN split only). For each recipe (scratch, small-data,
probe, distill), the same recipe without samples is the baseline, paired run by run:

  in-source   cowhorse-dev's fixed split, `--seeds` seeds (default 10): the 100 test photos come from
              the same sources as the training photos (not the figure users need; printed for
              comparison with the report's own setting).
  unseen      leave-one-source-out over cowhorse-dev + cowhorse-sources (8 sources, benchmarks/loso.py),
              `--loso-seeds` seeds averaged within each source. A GAN must never have seen the source
              held out, so two projected GANs serve: the one on cowhorse-dev's TRAIN split (its three
              sources) gives the samples when one of cowhorse-sources' five is held out, and one trained
              here on cowhorse-sources (its training split) when one of cowhorse-dev's three is held out.
              The paired verdict is over all 8 sources, each with the GAN that never saw it. With
              --no-sources-gan (13 minutes less), over the 5 sources the cowhorse-dev GAN never saw.

The samples take 30% of each batch (`ratio=0.3`, as the `scratch+gan` condition); for the probe they
are extra rows of the head's fit carrying 30% of its weight. For `distill` they join the transfer set,
labelled by the teacher (the probe), 250 per class as in the `distill+projected` condition: passed as
`unlabeled=DIR`, since the teacher's labels, not the GAN's, are what the student learns. Its unseen
part computes two teacher banks (Lite0 + Lite2 at 260 px over every view) per held-out source: hours on
a 2-core CPU without bf16. One GAN (seed 0) serves every seed: the
spread is the classifiers', not the GAN's (a GAN per seed and per held-out source would be 10 + 8 GANs
of about 10 minutes each on 2 cores; `pasture experiment --conditions scratch scratch+projected` trains
one per replicate where the time exists).

    python benchmarks/gan_verdict.py [--gans benchmarks/results/gan] [--seeds 10] [--loso-seeds 2]
                                     [--recipes scratch small-data probe distill] [--out DIR]

Prints one table and writes DIR/gan_verdict.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import DEFAULT_DATA, RESULTS, data_or_exit, write_results
from loso import SHARED, run_loso

from pasture import api
from pasture.core.stats import difference_interval_text, paired_comparison


def dev_sources(data: Path) -> set[str]:
    import csv

    with open(data / "MANIFEST.csv", newline="", encoding="utf-8") as handle:
        return {row["source_repo"].replace("/", "__") for row in csv.DictReader(handle)}


RECIPES = ("scratch", "small-data", "probe", "distill")
TRANSFER_PER_CLASS = 250  # GAN samples per class in a student's transfer set, as `distill+projected`


def transfer_set(synth: Path) -> Path:
    """The same GAN's samples, TRANSFER_PER_CLASS per class (seed 0), for a distillation transfer set."""
    smaller = synth.with_name(f"{synth.name}_{TRANSFER_PER_CLASS}")
    if not (smaller / "synth.json").is_file():
        gan_dir = json.loads((synth / "synth.json").read_text())["gan"]
        api.gan_sample(gan_dir, smaller, per_class=TRANSFER_PER_CLASS, seed=0, force=True)
    return smaller


def conditions_for(recipe: str, synthetic: dict[str, Path]) -> list[str]:
    """The recipe alone, then with each named synthetic set: 30% of each batch (or of the probe head's
    weight); for `distill`, in the transfer set the teacher labels."""
    if recipe == "distill":
        return [recipe] + [
            f"distill+{name}:recipe=distill,teacher=probe,unlabeled={transfer_set(path)}"
            for name, path in synthetic.items()
        ]
    return [recipe] + [
        f"{recipe}+{name}:recipe={recipe},synthetic={path},ratio=0.3" for name, path in synthetic.items()
    ]


def line(label: str, comparison: dict) -> str:
    return (
        f"{label}: {comparison['mean_difference']:+.1%} (95% CI {difference_interval_text(comparison['ci95'])}, "
        f"p={comparison['p_value']:.3f}, n={comparison['n_pairs']} pairs)"
        + (" [every seed the same run in both: one pair]" if comparison.get("same_every_seed") else "")
    )


def sources_gan(gans: Path) -> Path:
    """Samples of a projected GAN trained on cowhorse-sources (for the held-out cowhorse-dev sources)."""
    gan_dir, synth = gans / "gan_projected_sources", gans / "synth_projected_sources"
    if not (gan_dir / "summary.json").is_file():
        resume = (gan_dir / "checkpoint.pt").is_file()
        api.gan_train(SHARED / "cowhorse-sources", gan_dir, preset="projected", resume=resume, quiet=False)
    if not (synth / "synth.json").is_file():
        api.gan_sample(gan_dir, synth, per_class=500, seed=0)
    return synth


def in_source(args, data: Path, gans: Path, out: Path) -> dict:
    verdict = {}
    for recipe in args.recipes:
        synthetic = {"projected": gans / "synth_projected"}
        if recipe == "scratch":  # the default GAN's samples too, for contrast
            synthetic["default-gan"] = gans / "synth_default"
        results = api.experiment(
            data,
            out / f"in_source_{recipe}",
            conditions=conditions_for(recipe, synthetic),
            seeds=args.seeds,
            quiet=True,
            command=["python", "benchmarks/gan_verdict.py"],
        )
        verdict[recipe] = {
            "conditions": {row["condition"]: row["test"] for row in results["conditions"]},
            "comparisons": {f"{row['condition']} vs {row['baseline']}": row for row in results["comparisons"]},
        }
        for row in results["comparisons"]:
            print(line(f"in-source {row['condition']} vs {row['baseline']}", row), flush=True)
    return verdict


def unseen(args, data: Path, gans: Path, out: Path) -> dict:
    seen_by_dev_gan = dev_sources(data)
    synthetic = {"projected-dev": gans / "synth_projected"}
    if args.sources_gan:
        synthetic["projected-sources"] = sources_gan(gans)
    conditions = [c for recipe in args.recipes for c in conditions_for(recipe, synthetic)]
    results = run_loso(
        conditions, args.loso_seeds, str(out / "loso"), ["python", "benchmarks/gan_verdict.py"], jobs="auto"
    )
    rows = {row["condition"]: row["per_group"] for row in results["conditions"]}
    verdict = {}
    for recipe in args.recipes:
        plain = rows[recipe]
        # each held-out source gets the samples of a GAN that never saw it (none: left out of the verdict)
        gan_for = {
            g: ("projected-sources" if args.sources_gan else None) if g in seen_by_dev_gan else "projected-dev"
            for g in plain
        }
        paired = [g for g in plain if gan_for[g] is not None]
        mixed = {g: rows[f"{recipe}+{gan_for[g] or 'projected-dev'}"][g]["mean"] for g in plain}
        comparison = paired_comparison([mixed[g] for g in paired], [plain[g]["mean"] for g in paired])
        verdict[recipe] = {
            "comparison": comparison,
            "sources_paired": paired,
            "per_source": {
                g: {
                    "without": plain[g]["mean"],
                    "with_projected": mixed[g],
                    "gan": gan_for[g] or "projected-dev (saw it)",
                }
                for g in plain
            },
        }
        print(line(f"unseen sources {recipe}+projected vs {recipe}", comparison), flush=True)
        for g in plain:
            mark = "" if gan_for[g] else " (the GAN trained on this source: not in the verdict)"
            print(f"    {g}: {plain[g]['mean']:.0%} -> {mixed[g]:.0%}{mark}")
    return verdict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--gans", default=str(RESULTS / "gan"))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--loso-seeds", type=int, default=2)
    parser.add_argument("--recipes", nargs="+", default=["scratch", "small-data", "probe", "distill"], choices=RECIPES)
    parser.add_argument("--out", default=str(RESULTS / "gan_verdict"))
    parser.add_argument("--only", choices=["in-source", "unseen"], help="run one of the two parts")
    parser.add_argument(
        "--no-sources-gan",
        dest="sources_gan",
        action="store_false",
        help="no second GAN on cowhorse-sources: pair only the 5 sources the cowhorse-dev GAN never saw",
    )
    args = parser.parse_args()
    data, gans, out = data_or_exit(args.data), Path(args.gans), Path(args.out)
    for name in ("synth_projected", "synth_default"):
        if not (gans / name / "synth.json").is_file():
            print(f"no {gans / name}; run benchmarks/gan.py first (or pass --gans DIR)", file=sys.stderr)
            return 2
    verdict = {}
    if args.only != "in-source":
        verdict["unseen"] = unseen(args, data, gans, out)
    if args.only != "unseen":
        verdict["in_source"] = in_source(args, data, gans, out)
    write_results(out / f"gan_verdict{'_' + args.only if args.only else ''}.json", verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
