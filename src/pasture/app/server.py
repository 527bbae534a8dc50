"""pasture's local web app: teach (name classes, drop photos, train with live progress), test (drop new
photos, see labels and probabilities), runs (accuracy with its interval, curves, model card, ONNX).

FastAPI with one static page of plain HTML and JavaScript, chosen over Gradio because it is light
(FastAPI + uvicorn + python-multipart: about 20 MB, against 341 MB measured for gradio), works with no
internet at all (no CDN scripts or fonts), and every bad input gets the exact one-line message pasture
gives on the command line. The app calls pasture.api only. It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from pasture import api
from pasture.classify.trained import run_config_problem
from pasture.core.errors import UserError
from pasture.core.imagefile import BadImage, decode_array
from pasture.core.paths import ensure_under, path_part_problem, safe_path_part
from pasture.core.record import record_problem
from pasture.core.runs import read_checked_json

PAGE = Path(__file__).with_name("page.html")
MAX_FILE_BYTES = 20 * 1024 * 1024  # per uploaded photo; a phone's photo is 2-8 MB
MAX_FILES = 2000  # per request
MODES = {  # what "accurate" and "tiny" mean, as recipes
    "accurate": {"recipe": "probe"},  # pretrained EfficientNet-Lite0 features + a linear head: seconds
    "tiny": {"recipe": "default"},  # the report's small CNN from scratch: 0.7 ms per image, learns the source
}
RUN_FILES_SHOWN = {"curves.png": "image/png", "confusion.png": "image/png", "top_losses.png": "image/png", "MODEL_CARD.md": "text/markdown"}


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Jobs:
    """One training at a time (a laptop's cores are all it has); its progress read from history.jsonl."""

    def __init__(self, runs: Path):
        self.runs = runs
        self.lock = threading.Lock()
        self.jobs: dict[str, dict] = {}

    def running(self) -> dict | None:
        return next((job for job in self.jobs.values() if job["state"] == "running"), None)

    def start(self, run: Path, data: Path, settings: dict) -> dict:
        with self.lock:
            if self.running() is not None:
                raise UserError("a training is running; wait for it to finish")
            job = {"id": uuid.uuid4().hex[:12], "state": "running", "run": run.name, "epochs": settings["epochs"],
                   "started": time.time(), "warnings": []}
            self.jobs[job["id"]] = job
        threading.Thread(target=self._train, args=(job, run, data, settings), daemon=True).start()
        return job

    def _train(self, job: dict, run: Path, data: Path, settings: dict) -> None:
        try:
            metrics = api.train(data, run, quiet=True, warn=job["warnings"].append, **settings)
            job.update(state="done", metrics={key: metrics[key] for key in (
                "test_accuracy", "test_ci95", "n_test", "per_class", "confusion", "classes")})
        except UserError as error:
            job.update(state="error", error=str(error))
        except Exception as error:  # a bug: the page says so, the server keeps running
            job.update(state="error", error=f"training failed ({type(error).__name__}: {error})")
        finally:
            shutil.rmtree(data, ignore_errors=True)

    def status(self, job_id: str) -> dict | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        report = {key: value for key, value in job.items() if key != "started"}
        history = self.runs / job["run"] / "history.jsonl"
        epochs_done = len(history.read_text().splitlines()) if history.is_file() else 0
        elapsed = time.time() - job["started"]
        report.update(epoch=epochs_done, elapsed_s=round(elapsed, 1),
                      eta_s=round(elapsed / epochs_done * (job["epochs"] - epochs_done), 1) if epochs_done else None)
        return report


def _run_folder(runs: Path, name: str) -> Path:
    """RUNS/<name>, refusing any name that would leave RUNS (separators, .., absolute, NUL)."""
    return ensure_under(runs / safe_path_part(name, "run name"), runs)


def _run_summary(folder: Path) -> dict:
    # The one checked reader of run files: a damaged or hand-edited folder is a message, not a crash.
    config = read_checked_json(folder / "config.json", run_config_problem, what="run folder")
    row = {"name": folder.name, "recipe": config["recipe"]["name"], "model": config["model"],
           "classes": config["classes"], "finished": (folder / "metrics.json").is_file()}
    if row["finished"]:
        metrics = read_checked_json(folder / "metrics.json", record_problem, what="finished run")
        row.update({key: metrics[key] for key in ("test_accuracy", "test_ci95", "n_test", "per_class")})
    return row


async def _uploads(request: Request, staging: Path, max_file_bytes: int) -> tuple[dict, dict[str, list[Path]]]:
    """(form fields, {field: saved files}) of a multipart request, every file checked for size."""
    form = await request.form(max_files=MAX_FILES, max_fields=MAX_FILES)
    fields, files = {}, {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            fields[key] = value
            continue
        data = await value.read()
        name = Path(value.filename or "upload").name
        if len(data) > max_file_bytes:
            raise UserError(f"{name}: {len(data) / 1e6:.1f} MB, above the {max_file_bytes / 1e6:.0f} MB limit per photo; "
                            "downscale it")
        if path_part_problem(name) is not None:
            name = f"upload_{len(files.get(key, []))}.jpg"
        target = staging / key / f"{len(files.get(key, [])):05d}"  # one folder per file: names may repeat
        target.mkdir(parents=True, exist_ok=True)
        path = ensure_under(target / name, staging)
        path.write_bytes(data)
        files.setdefault(key, []).append(path)
    return fields, files


def _check_images(files: list[Path]) -> None:
    for path in files:
        try:
            decode_array(path, 16)
        except BadImage as error:
            raise UserError(f"{path.name}: {error}; remove it and try again") from None


KEEP_EXPLANATIONS = 20


def _add_heatmaps(rows_and_photos: list[tuple[dict, Path]], run: Path, explanations: Path) -> None:
    """Where the model looked (pasture explain) for each predicted photo, as a "heatmap" URL in its row.
    Without the explain extra the rows stay as they are: the page then shows labels only."""
    if not rows_and_photos:
        return
    if importlib.util.find_spec("captum") is None:
        return
    batch = uuid.uuid4().hex[:12]
    rows = api.explain(run, [photo for _, photo in rows_and_photos], explanations / batch, device="auto")
    for (row, _), explained in zip(rows_and_photos, rows):
        row["heatmap"] = f"/api/explanations/{batch}/{explained['heatmap']}"
    for old in sorted(explanations.iterdir(), key=lambda path: path.stat().st_mtime)[:-KEEP_EXPLANATIONS]:
        shutil.rmtree(old, ignore_errors=True)


def create_app(runs: str | Path, max_file_bytes: int = MAX_FILE_BYTES) -> FastAPI:
    """The app over the run folders in `runs` (created if needed)."""
    runs = Path(runs).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    app = FastAPI(title="pasture", docs_url=None, redoc_url=None)
    jobs = Jobs(runs)
    explanations = runs / ".explanations"  # heatmaps of the Test page; the newest KEEP_EXPLANATIONS batches stay

    @app.exception_handler(UserError)
    async def user_error(request: Request, error: UserError):
        return _problem(400, str(error))

    @app.get("/", response_class=HTMLResponse)
    def page():
        return PAGE.read_text(encoding="utf-8")

    @app.get("/api/runs")
    def list_runs():
        rows = []
        for folder in sorted(runs.iterdir()):
            if folder.is_dir() and (folder / "config.json").is_file():
                try:
                    rows.append(_run_summary(folder))
                except UserError:
                    continue  # a damaged folder is left out of the list, not a crash
        return rows

    @app.get("/api/runs/{name}")
    def run_details(name: str):
        folder = _run_folder(runs, name)
        if not (folder / "config.json").is_file():
            return _problem(404, f"{name}: no such run")
        summary = _run_summary(folder)
        card = folder / "MODEL_CARD.md"
        summary["card"] = card.read_text(encoding="utf-8") if card.is_file() else ""
        return summary

    @app.get("/api/runs/{name}/files/{file}")
    def run_file(name: str, file: str):
        folder = _run_folder(runs, name)
        if file not in RUN_FILES_SHOWN or not (folder / file).is_file():
            return _problem(404, f"{name}/{file}: not a file the app shows")
        return FileResponse(folder / file, media_type=RUN_FILES_SHOWN[file])

    @app.get("/api/runs/{name}/export")
    def export(name: str):
        folder = _run_folder(runs, name)
        onnx = folder / "model.onnx"
        if not onnx.is_file():
            api.export(folder)
        return FileResponse(onnx, media_type="application/octet-stream", filename=f"{name}.onnx")

    @app.post("/api/teach")
    async def teach(request: Request):
        staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=runs))
        try:
            fields, files = await _uploads(request, staging, max_file_bytes)
            names = json.loads(fields.get("classes", "[]"))
            if not isinstance(names, list) or len(names) < 2:
                raise UserError("name at least two classes, each with its photos")
            data = staging / "data"
            for index, name in enumerate(names):
                class_name = safe_path_part(str(name).strip(), "class name")
                photos = files.get(f"class_{index}", [])
                if len(photos) < 2:
                    raise UserError(f"class {class_name}: give at least 2 photos (one to train on, one to test)")
                _check_images(photos)
                target = data / class_name
                if target.exists():
                    raise UserError(f"class {class_name}: named twice")
                target.mkdir(parents=True)
                for photo in photos:
                    photo.rename(target / f"{photo.parent.name}_{photo.name}")
            mode = fields.get("mode", "tiny")
            if mode not in MODES:
                raise UserError(f"mode {mode}: choose accurate or tiny")
            run = _run_folder(runs, fields.get("name") or time.strftime("run-%Y%m%d-%H%M%S"))
            if run.exists():
                raise UserError(f"{run.name}: a run of that name exists; choose another name")
            settings = dict(MODES[mode])
            if fields.get("epochs"):
                settings["epochs"] = int(fields["epochs"])
            settings["epochs"] = settings.get("epochs") or api.resolve_recipe(settings["recipe"]).epochs
            prepared = Path(tempfile.mkdtemp(prefix=".data-", dir=runs))
            shutil.move(str(data), prepared / "data")
            job = jobs.start(run, prepared / "data", settings)
            return {"job": job["id"], "run": run.name, "epochs": settings["epochs"]}
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @app.get("/api/explanations/{batch}/{file}")
    def heatmap(batch: str, file: str):
        path = ensure_under(explanations / safe_path_part(batch, "batch") / safe_path_part(file, "file"), explanations)
        if path.suffix != ".png" or not path.is_file():
            return _problem(404, f"{file}: no such heatmap")
        return FileResponse(path, media_type="image/png")

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str):
        status = jobs.status(job_id)
        return status if status is not None else _problem(404, f"{job_id}: no such job")

    @app.post("/api/runs/{name}/predict")
    async def predict(name: str, request: Request):
        folder = _run_folder(runs, name)
        if not (folder / "metrics.json").is_file():
            return _problem(404, f"{name}: no finished run of that name")
        staging = Path(tempfile.mkdtemp(prefix=".predict-", dir=runs))
        try:
            _, files = await _uploads(request, staging, max_file_bytes)
            photos = [path for group in files.values() for path in group]
            if not photos:
                raise UserError("drop at least one photo to test")
            rows, usable = [], []
            for photo in photos:
                shown = photo.name
                try:
                    decode_array(photo, 16)
                except BadImage as error:
                    rows.append({"file": shown, "error": str(error)})
                    continue
                [row] = api.predict(folder, [photo], device="auto")
                rows.append({**row, "file": shown})
                usable.append((rows[-1], photo))
            _add_heatmaps(usable, folder, explanations)
            return rows
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    return app


def serve(runs: str | Path, host: str = "127.0.0.1", port: int = 7860, warn=None) -> None:
    """Run the app until Ctrl-C (uvicorn)."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1") and warn is not None:
        warn(f"--host {host}: the app is reachable from other machines; it has no login")
    uvicorn.run(create_app(runs), host=host, port=port, log_level="warning")
