"""Improve: fit a run to a new camera from the page (issue 43). Drop the camera's photos (no labels);
the app asks for the few worth labelling (`pasture ask`: the least certain, spread over the photos) as
cards with a button per class; Adapt makes a new run (`pasture adapt`: label spreading over the run's
training photos and the new ones, the labels given kept) as a job with progress, and answers with how
many labels changed and the class shares before and after, or why the guard kept the original. Check
scores the original and the adapted run on labelled photos of the new camera that neither saw: accuracy
with its interval, and the paired test on the photos where they disagree.

The new photos wait in RUNS/.target-<pid>-<random>/photos between the two steps (the last
MAX_TARGETS batches; a killed app's are removed at start-up like any staging folder), and the adapted
run reads its training photos from the original's RUNS/.data-<run> (app.jobs keeps them with the run).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import tempfile
from pathlib import Path

import torch
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from pasture import api
from pasture.app.jobs import METRICS_SHOWN, staging_prefix
from pasture.app.state import AppState, NotFound, check_images, finished_run, run_folder, staging, whole_number
from pasture.app.uploads import receive_form
from pasture.classify.trained import finished_run_config
from pasture.core.errors import UserError
from pasture.core.paths import ensure_under, safe_path_part
from pasture.core.runs import atomic_write_text
from pasture.core.stats import exact_mcnemar, wilson_interval
from pasture.data.layouts import decode_files

TARGET_PREFIX = ".target-"
MAX_TARGETS = 3  # batches of new photos kept between Ask and Adapt (older ones are removed)
ASK_K = (1, 50)  # photos to label a request may ask for
ASK_DEFAULT = 10  # benchmarks/adapt.py: 10 labels from ask took cowhorse-sources from 97.5% to 97.9%
PHOTO_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
ADAPTED_SHOWN = ("changed", "n", "shares_before", "shares_after", "labelled", "kept_original", "why")


def target_folder(runs: Path, target: object) -> Path:
    """RUNS/.target-<pid>-<random> of an earlier Ask of this app, else NotFound."""
    if not isinstance(target, str) or not target.startswith(staging_prefix(TARGET_PREFIX)):
        raise NotFound(
            "that batch of new photos is not here (the app restarted, or newer batches replaced it); drop them again"
        )
    folder = ensure_under(runs / safe_path_part(target, "target"), runs)
    if not (folder / "photos").is_dir():
        raise NotFound("that batch of new photos was cleared (newer batches replace older ones); drop them again")
    return folder


def _keep_newest_targets(runs: Path) -> None:
    mine = sorted(runs.glob(f"{staging_prefix(TARGET_PREFIX)}*"), key=lambda folder: folder.stat().st_mtime_ns)
    for folder in mine[:-MAX_TARGETS]:
        shutil.rmtree(folder, ignore_errors=True)


def labels_csv(labels: object, photos: Path, classes: list[str]) -> str:
    """LABELS.csv's text (file,label) from the page's {file: class}, each photo one of `photos` and each
    class one of the run's; anything else is a one-line error before any work starts."""
    if not isinstance(labels, dict) or not all(isinstance(v, str) and isinstance(k, str) for k, v in labels.items()):
        raise UserError("labels: send {photo: class} as the page does")
    for file, label in labels.items():
        if label not in classes:
            raise UserError(f"labels: {label!r} is not a class of the run ({', '.join(classes)})")
        if not ensure_under(photos / file, photos).is_file():
            raise UserError(f"labels: no photo {file!r} in this batch; ask again")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file", "label"])
    writer.writerows(labels.items())
    return text.getvalue()


def improve_routes(state: AppState) -> APIRouter:
    """Improve: ask which new photos to label, serve them to the page, adapt, check."""
    router = APIRouter()
    for add in (_ask_routes, _adapt_route, _check_route):
        add(router, state)
    return router


def _ask_routes(router: APIRouter, state: AppState) -> None:
    runs, limits = state.runs, state.limits

    @router.post("/api/runs/{name}/ask")
    async def ask(name: str, request: Request):
        run = finished_run(runs, name)
        with state.improving.entered():
            target = Path(tempfile.mkdtemp(prefix=staging_prefix(TARGET_PREFIX), dir=runs))
            try:
                (target / "photos").mkdir()
                fields, files = await receive_form(request, target / "photos", limits)
                photos = [path for group in files.values() for path in group]
                if len(photos) < 2:
                    raise UserError("drop at least 2 photos from the new camera")
                k = min(whole_number(fields, "k", ASK_K) or ASK_DEFAULT, len(photos))
                await run_in_threadpool(check_images, photos)
                asked = await run_in_threadpool(api.ask, run, target / "photos", k, target / "ask.csv", "auto")
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
        _keep_newest_targets(runs)
        rows = [{**row, "photo": f"/api/targets/{target.name}/photos/{row['file']}"} for row in asked["rows"]]
        classes = json.loads((run / "config.json").read_text(encoding="utf-8"))["classes"]
        return {
            "target": target.name,
            "n": len(photos),
            "classes": classes,
            "rows": rows,
            **{"estimated_shares": asked["estimated_shares"]},
        }

    @router.get("/api/targets/{target}/photos/{file:path}")
    def photo(target: str, file: str):
        folder = target_folder(runs, target) / "photos"
        path = ensure_under(folder / file, folder)
        if path.suffix.lower() not in PHOTO_TYPES or not path.is_file():
            raise NotFound(f"{file}: no such photo")
        return FileResponse(path, media_type=PHOTO_TYPES[path.suffix.lower()])


def _adapt_route(router: APIRouter, state: AppState) -> None:
    runs, jobs, limits = state.runs, state.jobs, state.limits

    @router.post("/api/runs/{name}/adapt")
    async def adapt(name: str, request: Request):
        run = finished_run(runs, name)
        with staging(runs, ".upload-") as staged:
            fields, _ = await receive_form(request, Path(staged), dataclasses.replace(limits, files=0))
        target = target_folder(runs, fields.get("target"))
        out = run_folder(runs, fields.get("name", "").strip() or f"{name}-adapted")
        if out.exists():
            raise UserError(f"{out.name}: a run of that name exists; choose another name")
        try:
            labels = json.loads(fields.get("labels", "{}"))
        except (json.JSONDecodeError, RecursionError):
            raise UserError("labels: not JSON; send the form as the page does") from None
        atomic_write_text(target / "labels.csv", labels_csv(labels, target / "photos", _classes(run)))

        def work(warnings: list[str]) -> dict:
            result = api.adapt(
                run, target / "photos", out, labels=target / "labels.csv", device="auto", warn=warnings.append
            )
            shown = {"adapted": {key: result[key] for key in ADAPTED_SHOWN if key in result}}
            if not result["kept_original"]:
                shown["metrics"] = {key: result["metrics"][key] for key in METRICS_SHOWN}
            return shown

        job = jobs.begin(out.name, work)  # refused (Busy, 409) while a training or another adaptation runs
        return {"job": job["id"], "run": out.name, "from": name}


def _check_route(router: APIRouter, state: AppState) -> None:
    runs, limits = state.runs, state.limits

    @router.post("/api/runs/{name}/check")
    async def check(name: str, request: Request):
        run = finished_run(runs, name)
        with state.improving.entered(), staging(runs, ".upload-") as staged:
            fields, files = await receive_form(request, Path(staged), limits)
            adapted = finished_run(runs, fields.get("other", ""))
            classes = _classes(run)
            if _classes(adapted) != classes:
                raise UserError(f"{adapted.name}: its classes are not {name}'s; compare a run with its adaptation")
            photos = [path for index in range(len(classes)) for path in files.get(f"class_{index}", [])]
            truth = [index for index in range(len(classes)) for _ in files.get(f"class_{index}", [])]
            if not photos:
                raise UserError("drop labelled photos of the new camera on at least one class to check")
            await run_in_threadpool(check_images, photos)
            return await run_in_threadpool(compare_on_photos, [run, adapted], photos, truth)


def _classes(run: Path) -> list[str]:
    return finished_run_config(run)["classes"]  # the checked reader: a damaged config.json is a message


def compare_on_photos(runs: list[Path], photos: list[Path], truth: list[int]) -> dict:
    """Each run's accuracy on the labelled `photos` with its 95% interval and n, and (for two runs) the
    exact McNemar test on the photos where they disagree: the same photos, so the comparison is paired."""
    right, decoded = [], {}  # decoded once per input size (an adapted run has its original's)
    for run in runs:
        model = api.load(run, device="auto")
        if model.image_size not in decoded:
            decoded[model.image_size] = decode_files(photos, model.image_size)
        rows = model.label(decoded[model.image_size], [path.name for path in photos])
        right.append(torch.tensor([model.classes.index(row["label"]) == label for row, label in zip(rows, truth)]))
    n = len(photos)
    shown = {
        "n": n,
        "runs": [
            {"run": run.name, "accuracy": int(hits.sum()) / n, "ci95": list(wilson_interval(int(hits.sum()), n))}
            for run, hits in zip(runs, right)
        ],
    }
    if len(right) == 2:
        shown.update(exact_mcnemar(right[0].tolist(), right[1].tolist()))
    return shown
