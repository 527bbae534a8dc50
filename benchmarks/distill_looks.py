"""Does a distilled student look where its teacher looks? Grad-CAM on photos of unseen sources.

Reads the runs of benchmarks/distill_target.py (run it first) and, for each held-out source, draws the
Grad-CAM map (pasture explain's) of the teacher (probe), the from-scratch paper-cnn (`default`) and
the two students (`distill`, `distill+target`) on the test half of that source. There are no animal
outlines in these sets, so the teacher's map stands in for "where the animal is" (it is right on
about 85% of unseen-source photos): a student's map is scored by

- pointing: how often its hottest pixel lies in the teacher's top 20% (chance: 20%);
- correlation: Pearson's r between its map and the teacher's, on a 64 x 64 grid.

Both of pasture explain's maps are scored: Grad-CAM (the last convolutional layer: 14 x 14 for
paper-cnn at 64 px, 7 x 7 for the teacher) and occlusion (model-agnostic: a grey square slid over
the photo). Prints a table (mean over photos, 95% interval over the 8 sources) and writes
DIR/looks.png: one photo per source, each with the four occlusion maps.

    python benchmarks/distill_looks.py [--out DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import RESULTS, write_results
from distill_target import halves
from loso import link_sources

MODELS = ("probe", "default", "distill", "distill+target")
GRID = 64
TOP_SHARE = 0.2


def maps_for(run: Path, files: list[Path]) -> dict[str, torch.Tensor]:
    """Grad-CAM and occlusion maps of `run` for its predicted class on `files` (pasture explain's two),
    each N x GRID x GRID in [0, 1]."""
    from pasture.classify.evaluate import predict_probabilities, to_float
    from pasture.classify.explain import gradcam, occlusion
    from pasture.classify.trained import load_run
    from pasture.data.decode import decode_image_and_size

    model, config = load_run(run)
    images = torch.stack([decode_image_and_size(path, config["image_size"])[0] for path in files])
    predicted = predict_probabilities(model, images, tta=False).argmax(1)
    maps = {}
    for name, method in (("gradcam", gradcam), ("occlusion", occlusion)):
        found = torch.cat(
            [
                method(model, to_float(images[start : start + 16]), predicted[start : start + 16])
                for start in range(0, len(files), 16)
            ]
        )
        maps[name] = F.interpolate(found[:, None], size=(GRID, GRID), mode="bilinear", align_corners=False)[:, 0]
    return maps


def scores(student: torch.Tensor, teacher: torch.Tensor) -> dict[str, list[float]]:
    """Per photo: does the student's hottest pixel fall in the teacher's top share; Pearson's r."""
    flat_student, flat_teacher = student.flatten(1), teacher.flatten(1)
    threshold = flat_teacher.quantile(1 - TOP_SHARE, dim=1, keepdim=True)
    hottest = flat_student.argmax(1, keepdim=True)
    pointing = (flat_teacher.gather(1, hottest) >= threshold).float()[:, 0]
    centred_s = flat_student - flat_student.mean(1, keepdim=True)
    centred_t = flat_teacher - flat_teacher.mean(1, keepdim=True)
    r = (centred_s * centred_t).sum(1) / (centred_s.norm(dim=1) * centred_t.norm(dim=1)).clamp_min(1e-12)
    return {"pointing": pointing.tolist(), "correlation": r.tolist()}


def figure(examples: list[tuple[torch.Tensor, dict[str, torch.Tensor]]], path: Path) -> None:
    from pasture.core.plots import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(len(examples), len(MODELS), figsize=(2.2 * len(MODELS), 2.2 * len(examples)))
    for row, (photo, maps) in enumerate(examples):
        picture = photo.permute(1, 2, 0).numpy()
        for column, name in enumerate(MODELS):
            axis = axes[row][column]
            axis.imshow(picture)
            heat = F.interpolate(maps[name][None, None], size=picture.shape[:2], mode="bilinear")[0, 0]
            axis.imshow(heat.numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            axis.set_title(name if row == 0 else "", fontsize=9)
            axis.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(RESULTS / "distill_target"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from pasture.core.stats import mean_interval
    from pasture.data.decode import decode_image_and_size

    out = Path(args.out)
    per_source: dict[str, dict[str, dict[str, float]]] = {}
    examples = []
    with tempfile.TemporaryDirectory() as scratch:
        pool = Path(scratch) / "pool"
        for source in sorted(link_sources(pool)):
            runs = out / "runs" / source / f"seed{args.seed}"
            if not all((runs / name / "metrics.json").is_file() for name in MODELS):
                print(f"{source}: runs missing in {runs}; run benchmarks/distill_target.py first", file=sys.stderr)
                return 2
            photos = sorted(next(pool.glob(f"*/{source}")).iterdir())
            test = halves(photos)[1]
            maps = {name: maps_for(runs / name, test) for name in MODELS}
            per_source[source] = {}
            for name in MODELS[1:]:
                row = per_source[source].setdefault(name, {})
                for method in ("gradcam", "occlusion"):
                    found = scores(maps[name][method], maps["probe"][method])
                    row.update({f"{method} {key}": sum(values) / len(values) for key, values in found.items()})
            picture = decode_image_and_size(test[0], GRID * 2)[0]
            examples.append((picture, {name: maps[name]["occlusion"][0] for name in MODELS}))
            print(
                source,
                {
                    name: {key: round(value, 2) for key, value in row.items()}
                    for name, row in per_source[source].items()
                },
                flush=True,
            )
    keys = [f"{method} {key}" for method in ("gradcam", "occlusion") for key in ("pointing", "correlation")]
    summary = {
        name: {
            key: mean_interval(
                [per_source[source][name][key] for source in per_source],
                bounds=(-1.0, 1.0) if key.endswith("correlation") else (0.0, 1.0),
            )
            for key in keys
        }
        for name in MODELS[1:]
    }
    print(
        f"\nAgreement with the teacher's map (mean over {len(per_source)} sources, 95% CI over sources); pointing: "
        f"the hottest pixel lies in the teacher's top {TOP_SHARE:.0%} (chance {TOP_SHARE:.0%})"
    )
    print("| model | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, row in summary.items():
        print(
            f"| {name} | "
            + " | ".join(
                f"{row[key]['mean']:.2f} ({row[key]['ci95'][0]:.2f} to {row[key]['ci95'][1]:.2f})" for key in keys
            )
            + " |"
        )
    figure(examples[:6], out / "looks.png")
    print(f"figure: {out / 'looks.png'}")
    write_results(out / "looks.json", {"seed": args.seed, "per_source": per_source, "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
