"""Finishing a trained run's folder: score the model on the test split, write its figures (curves,
confusion, top losses), MODEL_CARD.md, and metrics.json last, which marks the run as finished.
"""

from __future__ import annotations

from pathlib import Path

from pasture.classify.card import model_card
from pasture.classify.explain import score_and_plot_top_losses
from pasture.classify.recipes import Recipe
from pasture.classify.trained import run_config_problem
from pasture.core.plots import plot_c_search, plot_confusion, plot_curves
from pasture.core.runs import atomic_write_json, atomic_write_text, read_checked_json


def finish_run(out: Path, result, dataset, recipe: Recipe) -> dict:
    """Score the trained model (score_run) and write the figures, MODEL_CARD.md and metrics.json; returns
    the record."""
    record = score_and_plot_top_losses(result, dataset, recipe, out)
    head = (record.notes or {}).get("head") or {}
    if recipe.pretrained == "probe" and head.get("held_out_cross_entropy_by_c"):  # no epochs: the C search
        plot_c_search(
            head["held_out_cross_entropy_by_c"],
            head["chosen_c"],
            head["folds"],
            out / "curves.png",
            f"{recipe.model} / {recipe.name}",
        )
    else:
        plot_curves(record.history, out / "curves.png", title=f"{recipe.model} / {recipe.name}")
    plot_confusion(
        record.confusion,
        dataset.classes,
        out / "confusion.png",
        title=f"test: {record.test_correct}/{record.n_test} correct",
    )
    metrics = record.to_dict()
    config = read_checked_json(out / "config.json", run_config_problem, what="run folder")
    atomic_write_text(out / "MODEL_CARD.md", model_card(config, metrics))
    # metrics.json last: its presence marks the run as finished.
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
