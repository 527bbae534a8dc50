"""What a finished run does: evaluate, predict, load, explain, export; and the data doctor."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from pasture.classify.calibration import calibration
from pasture.classify.evaluate import accuracy_report, group_reports
from pasture.classify.explain import explain_images, write_evaluation
from pasture.classify.familiarity import familiarity_report, others_report
from pasture.classify.trained import LoadedRun, predict_files
from pasture.core.defaults import DEFAULT_MIN_IMAGE_SIZE, DataOptions, Warn, warn_to_stderr
from pasture.core.device import resolve_device
from pasture.core.errors import UserError
from pasture.core.imagefile import datasets_holding
from pasture.core.paths import check_outside
from pasture.core.runs import check_output_folder
from pasture.data import class_index_map, decode_files, image_files_in, load_labelled_folder
from pasture.doctor.examine import examine
from pasture.export.formats import export_run
from pasture.export.onnx_runner import EXPORTED_SUFFIXES, predict_onnx
from pasture.study.ray_predict import predict_on_ray


def evaluate(
    run: str | os.PathLike,
    data: str | os.PathLike,
    *,
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE,
    strict: bool = False,
    groups: str | None = None,
    group_column: str = "group",
    device: str = "auto",
    out: str | os.PathLike | None = None,
    others: str | os.PathLike | None = None,
    warn: Warn = warn_to_stderr,
) -> dict:
    """Accuracy of a trained run on DATA (its test split, or every image of DATA/<class>/), with its
    calibration (classify.calibration) and, for a probe run, the familiarity of the photos; `others` (a
    folder of photos of none of the classes): the share caught as unfamiliar and the AUROC.

    Classes are matched by name; a class in DATA that the model does not know is a UserError.
    Returns accuracy, ci95, n, per_class, confusion (over the model's classes) and classes; with
    `groups` (a CSV with columns file and `group_column`, or "subfolders" for DATA/<class>/<group>/),
    also per_group: accuracy, ci95, n and per-class counts of each group (photo source). With `out`,
    writes OUT/evaluation.json (the report), confusion.png and top_losses.png (the photos the model got
    most confidently wrong, with Grad-CAM heatmaps when Captum is installed).
    """
    check_outside(out, data)
    if out is not None:
        check_output_folder(Path(out), "evaluation.json", "evaluation")
    loaded = LoadedRun(run, resolve_device(device))
    if others is not None and loaded.familiarity is None:  # said before any photo is read
        raise UserError(f"--others: {run} keeps no training photos' features (a probe run does); nothing to compare")
    model, config, model_classes = loaded.model, loaded.config, loaded.classes
    images, skipped = load_labelled_folder(
        data, config["image_size"], min_image_size, strict, warn, groups=groups, group_column=group_column
    )
    to_model_index = class_index_map(images.classes, model_classes, f"{data}: class folders")
    labels = to_model_index[images.labels]
    probabilities, found = loaded.scores(images.images)
    predicted = probabilities.argmax(1)
    report = accuracy_report(predicted, labels, model_classes)
    if images.groups is not None:
        report["per_group"] = group_reports(predicted, labels, images.groups, model_classes)
    report["skipped"], report["calibration"] = skipped, calibration(probabilities, labels)
    if found is not None:
        report["familiarity"] = familiarity_report(found, predicted == labels, labels, model_classes, images.groups)
        if others is not None:
            report["others"] = others_report(loaded.scores, loaded.image_size, others, found, probabilities)
    if out is not None:
        write_evaluation(Path(out), report, model, images, labels, probabilities, {"run": str(run), "data": str(data)})
    return report


def predict(
    run: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    *,
    device: str = "auto",
    csv: str | os.PathLike | None = None,
    quiet: bool = True,
    unknown: bool = False,
    engine: str = "local",
    ray_address: str | None = None,
) -> list[dict] | dict:
    """Label and probabilities for each image file (folders are searched for images). `run` is a run
    folder, or a file written by `export` (run with ONNX Runtime alone). A run that keeps its training
    photos' features (the default probe) adds familiarity and familiar (classify.familiarity); with
    `unknown`, an unfamiliar photo is labelled "unknown".

    With `csv`, any number of images are streamed to that CSV file with bounded memory (one row per
    image, or the reason it was skipped) and a progress bar unless `quiet`; returns the counts. With
    `engine="ray"`, in shards on a Ray cluster (`ray_address`), resumable (study.ray_predict)."""
    if engine != "local":  # the engine's name and what it needs are checked there
        return predict_on_ray(run, paths, csv, engine=engine, address=ray_address, quiet=quiet, unknown=unknown)
    if str(run).endswith(EXPORTED_SUFFIXES):  # an exported file: its runtime alone, no torch
        return predict_onnx(run, paths, csv=csv, quiet=quiet, unknown=unknown)
    return predict_files(load(run, device=device), image_files_in(paths), csv, quiet, unknown)


def load(run: str | os.PathLike, *, device: str = "auto") -> LoadedRun:
    """A finished run loaded once, for many predictions: `.label(uint8 N x 3 x S x S, names)` gives
    predict's rows, `.probabilities(images)` the array; `.classes`, `.image_size` (S)."""
    return LoadedRun(run, resolve_device(device))


NEAREST = 3  # training photos shown beside an explanation


def explain(
    run: str | os.PathLike, paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, device: str = "auto"
) -> list[dict]:
    """Where the model looked, for each image: its label and probability, and OUT/<n>_<name>.png with the
    photo, its Grad-CAM heatmap (last convolutional layer) and its occlusion map (no gradients), and for a
    run that keeps its training photos' features, the 3 nearest training photos (class, distance),
    written with OUT/explanations.json. Needs the extra .[explain] (Captum)."""
    check_outside(out, [*paths, *datasets_holding(paths)])
    loaded = load(run, device=device)
    files = image_files_in(paths)
    if not files:
        raise UserError("explain: give at least one image file or folder")
    check_output_folder(Path(out), "explanations.json", "explanation folder")
    images = decode_files(files, loaded.image_size)
    nearest = None
    if loaded.familiarity is not None:
        nearest = [row.get("nearest", []) for row in loaded.label(images, [str(f) for f in files], nearest=NEAREST)]
    return explain_images(loaded.model, loaded.config, files, images, out, nearest=nearest)


def doctor(
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    label_model: str = "auto",
    duplicate_distance: int = 6,
    seed: int = 0,
    data_options: DataOptions | None = None,
    device: str = "auto",
    quiet: bool = True,
    warn: Warn = warn_to_stderr,
    **fields,
) -> dict:
    """Check DATA before training: counts and imbalance, skipped files, sizes, near-duplicates (across
    the split a run would use, and across classes), a shortcut probe (can trivial image statistics
    predict the class?), sources that hold one class only (with groups), and likely label errors
    (cleanlab on out-of-fold probabilities of the pretrained probe, or of a from-scratch recipe).

    Returns the report; `report["findings"]` holds its headline lines. With `out`, writes
    OUT/doctor.json and OUT/doctor.html (thumbnails of each finding). Needs the extra .[doctor].
    `fields` are DataOptions fields as keywords (groups="subfolders", split_by_group=True)."""
    check_outside(out, data)
    options = dataclasses.replace(data_options or DataOptions(), **fields)
    return examine(
        data,
        out,
        options=options,
        label_model=label_model,
        duplicate_distance=duplicate_distance,
        seed=seed,
        device=resolve_device(device),
        quiet=quiet,
        warn=warn,
    )


def export(run: str | os.PathLike, out: str | os.PathLike | None = None, *, format: str = "onnx") -> dict:
    """Write RUN's model as one self-contained file (ONNX: uint8 images in, class probabilities out, with
    classes, input size, precision and the test accuracy with its interval in its metadata), checked
    against the run with ONNX Runtime on its test images. `format`: onnx (fp32, RUN/model.onnx: the
    same probabilities to 1e-4) or onnx-int8 (RUN/model.int8.onnx: calibrated on the run's training
    photos, written only when it gives the fp32 model's label on at least 99% of its test photos) or
    openvino (RUN/openvino/model.xml + model.bin, checked to 1e-4 with the OpenVINO runtime) or coreml
    (RUN/model.mlpackage: an image in, probabilities out; checked against the run on Apple systems, as a
    specification elsewhere).
    Returns file, format, bytes, what it was checked on and how, metadata (export.formats.export_run:
    never inside the run's data folder, under a reader's lock on the run)."""
    return export_run(run, out, format)
