"""Figures of a run: learning curves and confusion matrix. matplotlib (Agg) is imported lazily."""

from __future__ import annotations

import io
import os
from pathlib import Path

from pasture.core.runs import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot with the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | os.PathLike) -> None:
    """Write `figure` as PNG atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())


def plot_curves(history: list[dict], path: str | Path, title: str = "") -> None:
    """Loss and accuracy per epoch (train; test when recorded) -> PNG."""
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.4))
    loss_axis.plot(epochs, [row["train_loss"] for row in history], label="train loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("cross-entropy")
    loss_axis.legend()
    accuracy_axis.plot(epochs, [row["train_accuracy"] for row in history], label="train (augmented batches)")
    scored = [row for row in history if "test_accuracy" in row]  # every epoch, or every K-th (--eval-every)
    if scored:
        accuracy_axis.plot(
            [row["epoch"] for row in scored],
            [row["test_accuracy"] for row in scored],
            label="test",
            marker="." if len(scored) < len(history) else None,
        )
    accuracy_axis.set_ylim(0, 1.02)
    accuracy_axis.set_xlabel("epoch")
    accuracy_axis.set_ylabel("accuracy")
    accuracy_axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def plot_c_search(losses_by_c: dict[str, float], chosen: float, folds: str, path: str | Path, title: str = "") -> None:
    """A probe head's choice of C: held-out cross-entropy against C (log scale), the chosen C marked ->
    PNG. What a probe run's curves.png shows: it has no epochs, its head is solved to convergence."""
    plt = pyplot()
    values = sorted((float(c), loss) for c, loss in losses_by_c.items())
    figure, axis = plt.subplots(figsize=(5.2, 3.4))
    axis.plot([c for c, _ in values], [loss for _, loss in values], marker="o", label="held-out cross-entropy")
    axis.axvline(chosen, color="#a40000", linestyle="--", label=f"chosen C = {chosen:g}")
    axis.set_xscale("log")
    axis.set_xlabel("C (weaker regularisation to the right)")
    axis.set_ylabel("cross-entropy")
    axis.set_title(f"{title}\nC chosen on {folds}" if title else f"C chosen on {folds}", fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def plot_confusion(confusion: list[list[int]], classes: list[str], path: str | Path, title: str = "") -> None:
    """Confusion matrix (rows: true class, columns: predicted) with counts in the cells -> PNG."""
    plt = pyplot()
    size = max(3.0, 0.9 * len(classes) + 1.5)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(confusion, cmap="Blues")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    peak = max((max(row) for row in confusion), default=0)
    for row_index, row in enumerate(confusion):
        for column_index, count in enumerate(row):
            colour = "white" if peak and count > peak / 2 else "black"
            axis.text(column_index, row_index, str(count), ha="center", va="center", color=colour)
    if title:
        axis.set_title(title)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
