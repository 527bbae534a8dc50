"""Fit a new camera with networks, leave one source out (issue 43 (b) for a from-scratch recipe and a student):
for each of the 8 photo sources, runs are trained on the other 7 (DATA/<class>/ folders of links; pasture
splits its own test photos from them) and the held-out source is split in half (seeded, as
benchmarks/adapt.py's (b)): one half is the new camera's unlabeled photos, the other half is scored.

Runs per held-out source, each scored on the scored half (labels used only to score):
- `scratch`: `pasture train DATA --recipe scratch` (a from-scratch network: `pasture adapt` refuses it,
  benchmarks/adapt_networks.py shows why: it labels none of a new camera's photos surely);
- `probe` and `adapted probe`: the default, and `pasture adapt PROBE POOL` (label spreading);
- `student of probe` / `student of adapted probe`: `pasture train DATA --teacher T --unlabeled POOL`, the
  report's CNN distilled from the probe as trained / from the adapted probe (the route `adapt` prints for
  small networks);
- with --finetune, also `finetune` and `adapted finetune` (`pasture adapt` of a fine-tuned run: the recipe
  trained again with the photos it labels at >= 0.95; about 10 minutes a source on 2 cores).
Means over sources with a t interval, the lowest source, paired against scratch (Wilcoxon over sources; exact
McNemar over all scored photos), seconds per run.

    python benchmarks/adapt_networks_loso.py [--finetune] [--sources NAME ...] [--work /tmp/pasture-adapt-loso]

About 20 minutes on 2 cores without --finetune (features of the 440 photos cached).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import torch
from _common import RESULTS, eight_sources, write_results
from adapt import seeded_halves
from scipy import stats

from pasture import api
from pasture.core.device import cpu_model
from pasture.core.stats import exact_mcnemar, wilson_interval

CLASSES = ("cow", "horse")
BASE = "scratch"  # what every other run is compared with: the network a small-data user trains first


def linked(files: list[Path], labels: list[int], folder: Path) -> None:
    """FOLDER/<class>/<n>_<name>: links to the photos (never copies), unique names across sources."""
    for index, (path, label) in enumerate(zip(files, labels)):
        target = folder / CLASSES[label] / f"{index:04d}_{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path.resolve())


def scored(run: Path, folder: Path) -> list[bool]:
    """Whether the run labels each photo of FOLDER (class folders) right, in file order."""
    rows = sorted(api.predict(run, [folder]), key=lambda row: row["file"])
    return [row["label"] == Path(row["file"]).parent.name for row in rows]


def one_source(source: str, files, labels, sources, work: Path, finetune: bool) -> tuple[dict, dict]:
    """(each run's right/wrong on the scored half, seconds per run) with `source` held out."""
    pool, score = (rows.tolist() for rows in seeded_halves(torch.tensor([name == source for name in sources])))
    rest = [index for index, name in enumerate(sources) if name != source]
    shutil.rmtree(work, ignore_errors=True)
    for name, rows in (("data", rest), ("pool", pool), ("scored", score)):
        linked([files[i] for i in rows], [labels[i] for i in rows], work / name)
    data, pool_folder, common = work / "data", work / "pool", {"quiet": True, "force": True}
    seconds: dict[str, float] = {}

    def timed(name: str, call) -> None:
        started = time.perf_counter()
        call()
        seconds[name] = time.perf_counter() - started

    timed("scratch", lambda: api.train(data, work / "scratch", recipe="scratch", **common))
    timed("probe", lambda: api.train(data, work / "probe", **common))
    timed("adapted probe", lambda: api.adapt(work / "probe", pool_folder, work / "adapted probe", force=True))
    if not (work / "adapted probe").is_dir():  # the guard kept the original: the adapted run is the probe
        shutil.copytree(work / "probe", work / "adapted probe")
    for teacher in ("probe", "adapted probe"):
        timed(
            f"student of {teacher}",
            lambda teacher=teacher: api.train(
                data, work / f"student of {teacher}", teacher=work / teacher, unlabeled=pool_folder, **common
            ),
        )
    if finetune:
        timed("finetune", lambda: api.train(data, work / "finetune", recipe="finetune", **common))
        timed(
            "adapted finetune", lambda: api.adapt(work / "finetune", pool_folder, work / "adapted finetune", force=True)
        )
        if not (work / "adapted finetune").is_dir():
            shutil.copytree(work / "finetune", work / "adapted finetune")
    runs = [path for path in work.iterdir() if (path / "metrics.json").is_file()]
    return {run.name: scored(run, work / "scored") for run in sorted(runs)}, seconds


def summary(per_source: dict[str, dict[str, list[bool]]]) -> dict:
    sources = sorted(per_source)
    table = {}
    for name in per_source[sources[0]]:
        values = [sum(per_source[s][name]) / len(per_source[s][name]) for s in sources]
        mean = statistics.mean(values)
        half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
        base = [sum(per_source[s][BASE]) / len(per_source[s][BASE]) for s in sources]
        pooled = [hit for s in sources for hit in per_source[s][name]]
        pooled_base = [hit for s in sources for hit in per_source[s][BASE]]
        differences = [v - b for v, b in zip(values, base)]
        table[name] = {
            "mean": mean,
            "ci95": [mean - half, mean + half],
            "n_sources": len(values),
            "lowest": min(values),
            "pooled": {
                "accuracy": sum(pooled) / len(pooled),
                "ci95": list(wilson_interval(sum(pooled), len(pooled))),
                "n": len(pooled),
            },
            f"vs_{BASE}": None
            if name == BASE
            else {
                "mean_difference": statistics.mean(differences),
                "wilcoxon_p": float(stats.wilcoxon(differences).pvalue) if any(differences) else 1.0,
                "mcnemar": exact_mcnemar(pooled_base, pooled),
            },
        }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--finetune", action="store_true", help="also fine-tune and adapt it (10 min a source)")
    parser.add_argument(
        "--sources", nargs="*", help="hold out only these sources (a look at a few; the mean is over all 8)"
    )
    parser.add_argument("--work", default="/tmp/pasture-adapt-loso")
    parser.add_argument("--out", default=str(RESULTS / "adapt_networks_loso.json"))
    args = parser.parse_args()
    files, labels, sources, _ = eight_sources()
    per_source, seconds = {}, {}
    for source in sorted(set(args.sources or sources)):
        per_source[source], seconds[source] = one_source(
            source, files, labels, sources, Path(args.work) / "source", args.finetune
        )
        print(
            f"{source:28s} n={len(per_source[source][BASE]):3d}  "
            + "  ".join(f"{name} {sum(hits) / len(hits):6.1%}" for name, hits in per_source[source].items()),
            flush=True,
        )
    table = summary(per_source) if len(per_source) > 2 else {}
    print(f"\nleave one source out ({len(per_source)} held out; half of each unlabeled, half scored):")
    for name, row in table.items():
        against = row[f"vs_{BASE}"]
        print(
            f"  {name:26s} mean {row['mean']:6.1%} (95% CI {row['ci95'][0]:.1%}-{row['ci95'][1]:.1%}), lowest "
            f"{row['lowest']:.1%}; pooled {row['pooled']['accuracy']:.1%} (n={row['pooled']['n']})"
            + (
                ""
                if against is None
                else f"; vs {BASE} {against['mean_difference']:+.1%}, Wilcoxon p = {against['wilcoxon_p']:.3f}, "
                f"McNemar +{against['mcnemar']['gained']}/-{against['mcnemar']['lost']} p = {against['mcnemar']['p_value']:.2g}"
            )
        )
    mean_seconds = {name: statistics.mean(s[name] for s in seconds.values()) for name in next(iter(seconds.values()))}
    print("seconds per run (mean over sources): " + ", ".join(f"{k} {v:.0f}" for k, v in mean_seconds.items()))
    per_source_accuracy = {
        source: {name: {"accuracy": sum(h) / len(h), "n": len(h)} for name, h in runs.items()}
        for source, runs in per_source.items()
    }
    write_results(
        args.out,
        {
            "cpu": cpu_model(),
            "finetune": args.finetune,
            "per_source": per_source_accuracy,
            "summary": table,
            "seconds": mean_seconds,
        },
    )


if __name__ == "__main__":
    main()
