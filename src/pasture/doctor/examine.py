"""`pasture doctor DATA`: every check on one dataset, before any training, as one report (a dict that is
printed, written as doctor.json, and drawn as doctor.html with thumbnails).

The images are loaded exactly as `pasture train` would load them (same layout rules, same skipped
files, same split for DATA/<class>/ with the same --test-fraction and --split-seed), so "copies across
train/test" means across the split a run would use.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pasture.classify.familiarity import strangers_in_class
from pasture.core.defaults import DataOptions, Warn, warn_to_stderr
from pasture.core.errors import UserError
from pasture.core.locks import folder_lock
from pasture.core.runs import atomic_write_json, atomic_write_text, check_output_folder, check_writable
from pasture.core.runtime import progress_bar
from pasture.data import ImageSet, load_dataset
from pasture.doctor.checks import DUPLICATE_DISTANCE, group_check, near_duplicates, perceptual_hashes, shortcut_probe
from pasture.doctor.extra import require_extra
from pasture.doctor.imagestats import file_families, file_statistics, pixel_statistics, size_summary, to_stats_size
from pasture.doctor.labels import image_size_for, label_issues, probe_features, resolve_label_model
from pasture.doctor.report import findings, render_html

IMBALANCE_RATIO = 1.5  # largest class / smallest class above this gets a line in the findings
REPORT_FILES = ("doctor.json", "doctor.html")


def _everything(dataset) -> tuple[ImageSet, list[str]]:
    """Train and test as one ImageSet, with the split of each image."""
    parts = [dataset.train] + ([dataset.test] if dataset.test is not None else [])
    groups = None if dataset.train.groups is None else [g for part in parts for g in part.groups]
    images = ImageSet(
        images=torch.cat([part.images for part in parts]),
        labels=torch.cat([part.labels for part in parts]),
        files=[f for part in parts for f in part.files],
        classes=dataset.classes,
        split="all",
        groups=groups,
    )
    return images, [part.split for part in parts for _ in range(len(part))]


def _counts(images: ImageSet, splits: list[str]) -> dict:
    counts: dict[str, dict[str, int]] = {name: {} for name in images.classes}
    for label, split in zip(images.labels.tolist(), splits):
        row = counts[images.classes[label]]
        row[split] = row.get(split, 0) + 1
    totals = {name: sum(row.values()) for name, row in counts.items()}
    ratio = max(totals.values()) / max(1, min(totals.values()))
    return {"per_class": counts, "totals": totals, "imbalance_ratio": ratio, "imbalanced": ratio > IMBALANCE_RATIO}


def examine(
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    options: DataOptions = DataOptions(),
    label_model: str = "auto",
    duplicate_distance: int = DUPLICATE_DISTANCE,
    seed: int = 0,
    device: str | torch.device = "cpu",
    quiet: bool = False,
    warn: Warn = warn_to_stderr,
) -> dict:
    """Check DATA before training; returns the report (see pasture.doctor.report.findings for its
    headline lines) and, with `out`, writes OUT/doctor.json and OUT/doctor.html."""
    require_extra()
    label_model = resolve_label_model(label_model)
    if not 0 <= duplicate_distance <= 32:
        raise UserError(f"--duplicate-distance {duplicate_distance}: give 0 (exact copies) to 32 bits of 64")
    if out is not None:
        check_output_folder(Path(out), "doctor.json", "doctor report")
    dataset = load_dataset(data, image_size_for(label_model), options, warn=warn)
    images, splits = _everything(dataset)
    root = Path(data)
    names = [os.path.relpath(file, root) for file in images.files]

    bar = progress_bar(len(images), 0, quiet, desc="doctor: statistics", unit="image")
    file_rows = []
    for file in images.files:
        file_rows.append(file_statistics(file))
        bar.update(1)
    bar.close()
    families = {**pixel_statistics(to_stats_size(images.images)), **file_families(file_rows)}
    labels = images.labels.numpy()
    report = {
        "data": str(root),
        "layout": dataset.layout,
        "classes": images.classes,
        "n": len(images),
        "files": names,
        "splits": splits,
        "labels": labels.tolist(),
        "groups": images.groups,
        "counts": _counts(images, splits),
        "skipped": dataset.skipped,
        "sizes": size_summary(file_rows),
        "duplicates": near_duplicates(
            perceptual_hashes(images.images), labels.tolist(), splits, images.classes, duplicate_distance
        ),
        "shortcuts": shortcut_probe(families, labels, seed),
        "groups_check": group_check(families, labels, images.groups, images.classes, seed)
        if images.groups is not None
        else None,
    }
    if not quiet and label_model != "none":
        print(f"doctor: out-of-fold predictions ({label_model}) for label issues ...", flush=True)
    # One pass of the pretrained backbones serves the label check and the strangers check.
    features = probe_features(images, device) if label_model == "probe" else None
    issues = label_issues(images, label_model, seed, device, quiet, features)
    if issues is not None:
        issues.pop("probabilities", None)
    report["label_issues"] = issues
    report["strangers"] = strangers_in_class(features, images.labels) if features is not None else None
    report["findings"] = findings(report)
    if out is not None:
        _write(Path(out), report, images)
    return report


def _write(out: Path, report: dict, images: ImageSet) -> None:
    out.mkdir(parents=True, exist_ok=True)
    check_writable(out)
    with folder_lock(out, "doctor report"):
        atomic_write_text(out / "doctor.html", render_html(report, images.files))
        atomic_write_json(out / "doctor.json", report)  # last: its presence marks a finished report
