"""What a GAN folder reports: summary.json (the last losses of each unit, diversity, time) and its check,
the folder's kind for opened_run, and the loss plot (the report's Figure 7)."""

from __future__ import annotations

from pathlib import Path

from pasture.core.plots import pyplot, save_figure
from pasture.core.runs import FolderKind, is_whole_number
from pasture.gan.presets import GanPreset


def plot_gan_losses(log: list[dict], path: Path) -> None:
    """G and D losses per iteration (the report's Figure 7), one panel per unit."""
    plt = pyplot()
    units = sorted({row["unit"] for row in log})
    figure, axes = plt.subplots(1, len(units), figsize=(5 * len(units), 3.2), squeeze=False)
    for axis, unit in zip(axes[0], units):
        rows = [row for row in log if row["unit"] == unit]
        steps = [row["iteration"] for row in rows]
        axis.plot(steps, [row["loss_g"] for row in rows], label="G", linewidth=0.8)
        axis.plot(steps, [row["loss_d"] for row in rows], label="D", linewidth=0.8)
        axis.set_xlabel("iteration")
        axis.set_ylabel("loss")
        axis.set_title(f"unit {unit}")
        axis.legend()
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def summary_problem(summary: dict) -> str | None:
    """The schema of a finished GAN folder's summary.json."""
    if not is_whole_number(summary.get("units"), 1, 10_000) or not isinstance(summary.get("final"), dict):
        return "is not the summary of a finished GAN"
    return None


GAN_FOLDER = FolderKind("GAN", "summary.json", summary_problem)  # a GAN's folder, to opened_run


def gan_summary(result: dict, chosen: GanPreset, dataset) -> dict:
    """summary.json of a finished GAN folder: the last log row of each unit, diversity and time."""
    last = {}
    for unit in range(len(result["units"])):
        rows = [row for row in result["log"] if row["unit"] == unit]
        if rows:
            last[str(unit)] = {key: rows[-1][key] for key in ("loss_d", "loss_g", "d_real", "d_fake", "p_aug")}
    return {
        "preset": chosen.name,
        "units": len(result["units"]),
        "iterations": chosen.iterations,
        "diversity_vs_real": result["diversity"],
        "final": last,
        "seconds": result["seconds"],
        "n_train": len(dataset.train),
        "classes": dataset.classes,
    }
