"""Predictions for any number of image files, streamed to CSV with bounded memory. Torch-free: the same
code serves a run folder (torch model) and an exported ONNX file (ONNX Runtime alone)."""

from __future__ import annotations

import csv
import glob
import os
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pasture.core.errors import UserError, write_failed
from pasture.core.imagefile import BadImage, decode_array
from pasture.core.paths import check_output_file, display_name, new_file_mode, printable_name
from pasture.core.processes import process_alive

# The files `predict` runs with their own runtime, without torch, and what each runner says of one that is
# not there (the CLI says the same before the runtime loads: pasture.cli.early).
MISSING_EXPORT = {
    ".onnx": "no such file; give the file `pasture export` wrote",
    ".xml": "no such model; give the model.xml `pasture export --format openvino` wrote",
    ".tflite": "no such model; give the .tflite file `pasture export --format tflite` wrote",
}
EXPORTED_SUFFIXES = tuple(MISSING_EXPORT)


def missing_export(path: str | os.PathLike) -> UserError:
    """The one-line error for an exported model file that is not there."""
    return UserError(f"{printable_name(path)}: {MISSING_EXPORT[Path(path).suffix]}")


UNKNOWN = "unknown"  # the label of a photo unlike every training photo, with --unknown (classify.familiarity)
BATCH = 64  # images decoded and scored at once at 96 px or less: memory stays at one batch, whatever the count


def batch_size_for(image_size: int) -> int:
    """Fewer images per batch for larger inputs: EfficientNet at 224 px in batches of 64 peaked at 1.6-1.8 GiB
    (benchmarks/batch_predict.py); the batch shrinks with the pixel count, 8 at the least."""
    return max(8, min(BATCH, int(BATCH * (96 / image_size) ** 2)))


def prediction_rows(
    files: list[Path],
    probabilities: list[list[float]],
    classes: list[str],
    familiarity: list[tuple[float, bool]] | None = None,
    unknown: bool = False,
) -> list[dict]:
    """One row per image, as `pasture predict` prints them (the same for a run folder and an ONNX file).
    With `familiarity` ((share, familiar) per image, classify.familiarity), the columns familiarity and
    familiar; with `unknown` too, an unfamiliar photo's label is UNKNOWN and its best class is kept in
    best_class."""
    rows = []
    for index, (path, probs) in enumerate(zip(files, probabilities)):
        best = max(range(len(probs)), key=probs.__getitem__)
        row = {
            "file": display_name(path),  # printable: bytes that are not UTF-8 appear as \xff escapes
            "label": classes[best],
            "probability": probs[best],
            "probabilities": dict(zip(classes, probs)),
        }
        if familiarity is not None:
            share, familiar = familiarity[index]
            row.update({"familiarity": share, "familiar": bool(familiar), "best_class": classes[best]})
            if unknown and not familiar:
                row["label"] = UNKNOWN
        rows.append(row)
    return rows


def decode_or_reason(path: Path, image_size: int) -> tuple[np.ndarray | None, str]:
    try:
        return decode_array(path, image_size)[0], ""
    except BadImage as error:
        return None, str(error)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(text: str) -> str:
    """`text` as a cell a spreadsheet shows as text: a leading = + - @ tab or CR (a photo named
    =HYPERLINK(...), a class named so) gets a leading apostrophe, OWASP's advice against CSV injection."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def remove_stale_temp_files(out: Path) -> None:
    """The temporary files that a killed `predict --csv` left beside `out`: named
    .<name>.<pid>.<random>.tmp, removed when their process is gone."""
    for path in out.parent.glob(f".{glob.escape(out.name)}.*.tmp"):
        pid = path.name[len(out.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            path.unlink(missing_ok=True)


def _scored_rows(
    paths: list[Path],
    arrays: list[np.ndarray],
    probabilities_of: Callable[[np.ndarray], Any],
    classes: list[str],
    familiarity: bool,
    unknown: bool,
) -> list[dict]:
    """prediction_rows of one decoded batch (the one rule for labels, "unknown" included); none for a
    batch whose every file was unusable."""
    if not arrays:
        return []
    scored = probabilities_of(np.stack(arrays))
    probabilities, familiar = scored if familiarity else (scored, None)
    return prediction_rows(paths, np.asarray(probabilities).tolist(), classes, familiar, unknown)


def csv_header(classes: list[str], familiarity: bool) -> list[str]:
    extra = ["familiarity", "familiar"] if familiarity else []
    return ["file", "label", "probability", *(f"p_{name}" for name in classes), *extra, "skipped"]


def batch_cells(
    names: list[Path],
    decoded: list[tuple[np.ndarray | None, str]],
    probabilities_of: Callable[[np.ndarray], Any],
    classes: list[str],
    familiarity: bool,
    unknown: bool,
) -> list[list[str]]:
    """The CSV rows (cells, as csv_header) of one batch: `names` the files as the CSV names them, `decoded`
    each one's (uint8 array, "") or (None, why it was skipped); the last cell is the reason, empty for a
    predicted photo. The same cells for a local predict and a shard scored on a Ray worker."""
    usable = [name for name, (array, _) in zip(names, decoded) if array is not None]
    arrays = [array for array, _ in decoded if array is not None]
    rows = iter(_scored_rows(usable, arrays, probabilities_of, classes, familiarity, unknown))
    extra = 2 if familiarity else 0
    cells = []
    for name, (array, reason) in zip(names, decoded):
        if array is None:
            blank = [""] * (2 + len(classes) + extra)
            cells.append([spreadsheet_cell(display_name(name)), *blank, spreadsheet_cell(reason)])
            continue
        row = next(rows)
        columns = [f"{row['familiarity']:.4f}", "yes" if row["familiar"] else "no"] if familiarity else []
        cells.append(
            [
                spreadsheet_cell(row["file"]),
                spreadsheet_cell(row["label"]),  # labels are cells too
                f"{row['probability']:.6f}",
                *(f"{row['probabilities'][name]:.6f}" for name in classes),
                *columns,
                "",
            ]
        )
    return cells


def temporary_csv(out: Path):
    """An open text file beside `out` (.<name>.<pid>.<random>.tmp, remove_stale_temp_files' pattern), with
    the mode of a new file, to be renamed over `out` when whole."""
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (renamed into place or removed by the caller)
        "w",
        newline="",
        encoding="utf-8",
        dir=out.parent,
        prefix=f".{out.name}.{os.getpid()}.",
        suffix=".tmp",
        delete=False,
    )
    os.fchmod(handle.fileno(), new_file_mode())
    return handle


def write_predictions_csv(
    files: list[Path],
    classes: list[str],
    image_size: int,
    probabilities_of: Callable[[np.ndarray], Any],
    out: str | os.PathLike,
    quiet: bool = False,
    familiarity: bool = False,
    unknown: bool = False,
) -> dict:
    """Decode, score and write `files` a batch at a time (batch_size_for) to the CSV `out`: one row per image (file, label,
    probability, one p_<class> column per class), or its file and the reason it was skipped. Written to
    a temporary file renamed over `out` at the end, so an interrupted run leaves no half CSV.
    `probabilities_of` maps uint8 N x 3 x S x S to N x classes; with `familiarity`, to (N x classes,
    [(familiarity, familiar)] per image), written as two more columns (and with `unknown`, an unfamiliar
    photo's label is "unknown"). Returns counts."""
    out = check_output_file(out, "--csv")
    remove_stale_temp_files(out)
    counts = {"images": len(files), "predicted": 0, "skipped": 0}
    handle = temporary_csv(out)
    try:
        with (
            handle,
            ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool,
            tqdm(total=len(files), unit="img", desc="predict", disable=quiet, file=sys.stderr, leave=False) as bar,
        ):
            writer = csv.writer(handle)
            writer.writerow(csv_header(classes, familiarity))
            step = batch_size_for(image_size)
            for start in range(0, len(files), step):
                batch = files[start : start + step]
                decoded = list(pool.map(lambda path: decode_or_reason(path, image_size), batch))  # Pillow frees the GIL
                for cells in batch_cells(batch, decoded, probabilities_of, classes, familiarity, unknown):
                    writer.writerow(cells)
                    counts["skipped" if cells[-1] else "predicted"] += 1
                bar.update(len(batch))
        os.replace(handle.name, out)
    except BaseException as error:
        Path(handle.name).unlink(missing_ok=True)
        failed = write_failed(error, out) if isinstance(error, OSError) else None
        if failed is not None:  # a full disk: named by the user's file, not the temporary one
            raise failed from None
        raise
    return {**counts, "csv": str(out)}


def in_batches(run, images_uint8: np.ndarray, batch_size: int, classes: int) -> np.ndarray:
    """`run` (a batch of images -> its probabilities) over `images_uint8` in batches of `batch_size`,
    concatenated (N x classes; 0 x classes for no images). Every exported model's runner uses it."""
    chunks = [
        np.asarray(run(images_uint8[start : start + batch_size])) for start in range(0, len(images_uint8), batch_size)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, classes), dtype=np.float32)


def familiarity_threshold(metadata: dict) -> float | None:
    """The distance above which an exported model's photo is unfamiliar, from its metadata (None: the file
    has no familiarity outputs: a run without a bank, an older export, int8, TFLite or Core ML)."""
    value = metadata.get("familiarity_threshold")
    return None if value is None else float(value)


def exported_outputs(run, images_uint8: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Every output of an exported model (`run`: a batch -> its outputs, probabilities first) over
    `images_uint8` in batches, each concatenated; [] for no images."""
    parts = [
        [np.asarray(output) for output in run(images_uint8[start : start + batch_size])]
        for start in range(0, len(images_uint8), batch_size)
    ]
    return [np.concatenate(outputs) for outputs in zip(*parts)] if parts else []


def exported_scores(
    run, images_uint8: np.ndarray, batch_size: int, classes: int, threshold: float | None
) -> tuple[np.ndarray, list[tuple[float, bool]] | None]:
    """(probabilities N x classes, [(familiarity, familiar)] per image or None) of an exported model:
    with a threshold, its outputs 1 and 2 are the familiarity and the distance (export.FamiliarExportGraph)."""
    outputs = exported_outputs(run, images_uint8, batch_size)
    if not outputs:
        return np.zeros((0, classes), dtype=np.float32), [] if threshold is not None else None
    if threshold is None:
        return outputs[0], None
    return outputs[0], list(zip(outputs[1].tolist(), (outputs[2].astype(np.float64) <= threshold).tolist()))
