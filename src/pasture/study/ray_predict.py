"""`pasture predict RUN PHOTOS --csv OUT --engine ray`: the photos in shards over a Ray cluster, the rows
streamed into one CSV, resumable after a kill.

How it maps onto Ray (the engine pasture already uses for studies, pasture.study.ray_engine): the driver
sends the run's files once (Ray's object store) and each shard's photo bytes with its task, so workers
need no copy of the run or the photos, only the same pasture; a worker loads the run once and keeps it
for its next shards. Each finished shard is written at once as its own part (OUT's folder,
.OUT.parts/), so a killed predict keeps the shards it finished and the same command continues; when
every shard is in, the parts become OUT, in the order of the photos, and the parts go. The rows are
predictions.batch_cells, as a local predict writes them, and a shard is a whole number of the local
batches, so the numbers are the local run's.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from pasture.classify.predictions import (
    EXPORTED_SUFFIXES,
    batch_cells,
    batch_size_for,
    csv_header,
    decode_or_reason,
    temporary_csv,
)
from pasture.classify.trained import LoadedRun, csv_scorer, finished_run_config
from pasture.core.errors import UserError
from pasture.core.imagefile import image_files_in
from pasture.core.paths import check_output_file
from pasture.core.runs import atomic_write_json
from pasture.study.ray_engine import RayEngine

SHARD = 512  # photos a task scores: a multiple of every batch size (8 to 64), about a minute at 260 px
RUN_FILES = ("config.json", "metrics.json", "checkpoint.pt", "familiarity.pt")
IN_FLIGHT = 2  # shards submitted per CPU of the cluster at once: the driver holds only their photos' bytes

_kept: dict[str, LoadedRun] = {}  # in a worker process: the run it loaded last, by the digest of its files


def _worker_run(digest: str, run_files: dict[str, bytes]) -> LoadedRun:
    if digest not in _kept:
        folder = Path(tempfile.mkdtemp(prefix="pasture-ray-run-"))
        for name, data in run_files.items():
            (folder / name).write_bytes(data)
        _kept.clear()
        _kept[digest] = LoadedRun(folder, "cpu")
    return _kept[digest]


def score_shard(digest: str, run_files: dict[str, bytes], names: list[str], contents: list[bytes], unknown: bool):
    """A shard's CSV rows (batch_cells), on a worker: the photos decoded from their bytes as pasture
    decodes files (EXIF orientation, RGB, resize, centre crop)."""
    model = _worker_run(digest, run_files)
    with tempfile.TemporaryDirectory(prefix="pasture-ray-photos-") as scratch:
        decoded = []
        for index, (name, data) in enumerate(zip(names, contents)):
            path = Path(scratch) / f"{index}{Path(name).suffix}"
            path.write_bytes(data)
            decoded.append(decode_or_reason(path, model.image_size))
    scorer, familiar = csv_scorer(model), model.familiarity is not None
    step, cells = batch_size_for(model.image_size), []
    for start in range(0, len(names), step):
        batch = [Path(name) for name in names[start : start + step]]
        cells += batch_cells(batch, decoded[start : start + step], scorer, model.classes, familiar, unknown)
    return cells


def _digest(parts: list[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:24]


def predict_on_ray(
    run: str | os.PathLike,
    paths,
    out: str | os.PathLike | None,
    *,
    engine: str = "ray",
    address: str | None = None,
    quiet: bool = True,
    unknown: bool = False,
) -> dict:
    """Score the photos of `paths` with the run RUN on a Ray cluster (`address`: HOST:PORT or auto; None
    starts Ray on this machine) into the CSV `out`, as write_predictions_csv does locally; returns the
    counts."""
    if engine != "ray":
        raise UserError(f"--engine {engine}: choose local or ray")
    if out is None or str(run).endswith(EXPORTED_SUFFIXES):
        raise UserError("--engine ray: give a run folder and --csv OUT (the rows stream into one CSV)")
    files = image_files_in(paths)
    if not files:
        raise UserError("predict: give at least one image file or folder")
    out = check_output_file(out, "--csv")
    run = Path(run)
    config = finished_run_config(run)
    run_files = {name: (run / name).read_bytes() for name in RUN_FILES if (run / name).is_file()}
    digest = _digest(list(run_files.values()))
    shards = [files[start : start + SHARD] for start in range(0, len(files), SHARD)]
    parts = out.with_name(f".{out.name}.parts")
    manifest = {
        "run": digest,
        "files": _digest([str(path).encode() for path in files]),
        "shard": SHARD,
        "unknown": unknown,
    }
    if not (parts / "manifest.json").is_file() or json.loads((parts / "manifest.json").read_text()) != manifest:
        shutil.rmtree(parts, ignore_errors=True)  # another run, other photos: nothing to continue
        parts.mkdir()
        atomic_write_json(parts / "manifest.json", manifest)
    todo = [index for index in range(len(shards)) if not (parts / f"{index:06d}.csv").is_file()]
    cluster = RayEngine(address)
    ray = cluster.start()
    try:
        remote = ray.remote(num_cpus=1)(score_shard)
        run_ref = ray.put(run_files)
        limit = IN_FLIGHT * max(1, int(ray.cluster_resources().get("CPU", 1)))
        pending: dict = {}
        with tqdm(total=len(files), unit="img", desc="predict (ray)", disable=quiet, file=sys.stderr) as bar:
            bar.update(sum(len(shards[index]) for index in range(len(shards)) if index not in todo))
            while todo or pending:
                while todo and len(pending) < limit:
                    index = todo.pop(0)
                    contents = [_bytes(path) for path in shards[index]]
                    names = [str(path) for path in shards[index]]
                    pending[remote.remote(digest, run_ref, names, contents, unknown)] = index
                [done], _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(done)
                _write_part(parts / f"{index:06d}.csv", ray.get(done))
                bar.update(len(shards[index]))
    finally:
        cluster.close()
    return _assemble(parts, len(shards), out, config["classes"], (run / "familiarity.pt").is_file(), len(files))


def _bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""  # decoded as "not an image", the row says it was skipped


def _write_part(path: Path, cells: list[list[str]]) -> None:
    with tempfile.NamedTemporaryFile("w", newline="", encoding="utf-8", dir=path.parent, delete=False) as handle:
        csv.writer(handle).writerows(cells)
    os.replace(handle.name, path)


def _assemble(parts: Path, shards: int, out: Path, classes: list[str], familiarity: bool, images: int) -> dict:
    """OUT from the parts, in the order of the photos, streamed into a temporary file renamed over OUT (a
    part at a time in memory); the parts removed after."""
    counts = {"images": images, "predicted": 0, "skipped": 0}
    with temporary_csv(out) as handle:
        writer = csv.writer(handle)
        writer.writerow(csv_header(classes, familiarity))
        for index in range(shards):
            with (parts / f"{index:06d}.csv").open(newline="", encoding="utf-8") as part:
                for cells in csv.reader(part):
                    writer.writerow(cells)
                    counts["skipped" if cells[-1] else "predicted"] += 1
    os.replace(handle.name, out)
    shutil.rmtree(parts, ignore_errors=True)
    return {**counts, "csv": str(out), "engine": "ray", "shards": shards}
