"""pasture's local web app: teach (a card per class: drop photos or record them with the camera; train
with live progress, cancel), test (drop new photos and see labels, probabilities and where the model
looked, or watch live predictions from the camera), runs (accuracy with its interval, curves, model card,
a download per export format, resume or delete).

FastAPI with one static page of plain HTML and JavaScript, chosen over Gradio because it is light
(FastAPI + uvicorn + python-multipart: about 20 MB, against 341 MB measured for gradio), works with no
internet at all (no CDN scripts or fonts), and every bad input gets the exact one-line message pasture
gives on the command line. The app calls pasture.api only. It binds 127.0.0.1 unless told otherwise, and
answers only its own page (app/guard.py: Host allowlist, launch token, no cross-site writes, a CSP).

Work that takes time (decoding photos, predicting, heatmaps, export) runs in worker threads, and
training in its own thread, so the page's other requests are answered while it runs.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import importlib.util
import json
import os
import re
import shutil
import socket
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse
from starlette.concurrency import run_in_threadpool

from pasture import api
from pasture.app.guard import LOCAL_HOSTS, Guard, local_url, new_token
from pasture.app.improve import improve_routes
from pasture.app.jobs import Busy, Jobs, prepare_data, remove_leftovers
from pasture.app.live import LiveModel, label_photos
from pasture.app.runs import run_routes
from pasture.app.state import (
    Admission,
    AppState,
    NotFound,
    TooBusy,
    check_images,
    finished_run,
    form_name,
    problem,
    run_folder,
    staging,
    whole_number,
)
from pasture.app.uploads import Limits, TooLarge, receive_form
from pasture.core.errors import FolderBusy, UserError
from pasture.core.paths import ensure_under, printable_name, safe_path_part

STATIC = Path(__file__).with_name("static")
# The page's choices are recipes, by the names `pasture recipes` and the CLI use (issue 44: the page's
# "tiny" was the from-scratch CNN while the CLI's `tiny` is a small pretrained probe).
MODES = {
    "probe": {"recipe": "probe"},  # pretrained EfficientNet-Lite0 + Lite2 features + a logistic head: seconds
    "scratch": {"recipe": "scratch"},  # the report's small CNN from scratch: 0.7 ms per image, learns the source
}
OLD_MODES = {"accurate": "probe", "tiny": "scratch"}  # the page's names before, still taken from API callers
EPOCHS = (1, 1000)  # the bounds of a form's epochs: one request must not hold the only training slot for days
MAX_CLASSES = 100
# Tests labelled or waiting for the model at once; past it a 429 says to wait (45 at once held the server
# for minutes and made GET /api/runs wait 23 s: issue 40). Their uploads wait on disk, not in memory.
MAX_TESTS = 4
MAX_IMPROVING = 2  # Improve's Asks read a whole batch of photos through the backbones: two at once at most


# The status of a refused request by the kind of its UserError (400 for any other).
ERROR_STATUS = (((Busy, FolderBusy), 409), (TooLarge, 413), (TooBusy, 429))


# A request's staging folder inside RUNS (.upload-<pid>-<random>/00001/, app.jobs.staging_prefix): the
# page knows a photo by its own name, not by where the server put it.
STAGED_PART = re.compile(r"\.(?:upload|predict|live|target)-\d+-[A-Za-z0-9_]+/(?:photos/)?(?:\d{5}/)?")


def _as_shown(message: str, runs: Path) -> str:
    """An error message as the page shows it: without the server's absolute paths (the runs folder and
    a request's staging folders), which tell a browser nothing it needs and the machine's layout."""
    return STAGED_PART.sub("", message.replace(f"{runs}{os.sep}", "").replace(str(runs), "RUNS"))


def _teach_request(fields: dict, files: dict[str, list[Path]]) -> tuple[str | None, dict[str, list[Path]], dict]:
    """(run name or None, {class name: photos}, training settings) of a Teach form, every field checked."""
    try:
        names = json.loads(fields.get("classes", "[]"))
    except (json.JSONDecodeError, RecursionError):  # a list nested 30,000 deep is no list of names
        raise UserError("classes: not a JSON list of class names; send the form as the page does") from None
    if not isinstance(names, list) or len(names) < 2:
        raise UserError("name at least two classes, each with its photos")
    if len(names) > MAX_CLASSES:
        raise UserError(f"classes: at most {MAX_CLASSES}")
    classes: dict[str, list[Path]] = {}
    for index, raw in enumerate(names):
        class_name = form_name(raw, "class name")
        if class_name in classes:
            raise UserError(f"class {class_name}: named twice")
        photos = files.get(f"class_{index}", [])
        if len(photos) < 2:
            raise UserError(f"class {class_name}: give at least 2 photos (one to train on, one to test)")
        classes[class_name] = photos
    mode = fields.get("mode", "probe")
    mode = OLD_MODES.get(mode, mode)
    if mode not in MODES:
        raise UserError(f"mode '{printable_name(mode[:20])}': choose probe or scratch")
    settings: dict[str, Any] = dict(MODES[mode])
    epochs = whole_number(fields, "epochs", EPOCHS)
    if api.resolve_recipe(settings["recipe"]).pretrained == "probe":
        if epochs is not None:  # refused, not ignored: the page sends none in this mode
            raise UserError(
                f"epochs: the {mode} recipe has none (its head is solved to convergence); leave it empty or choose scratch"
            )
    else:
        settings["epochs"] = epochs or api.resolve_recipe(settings["recipe"]).epochs
    run_name = fields.get("name", "").strip()
    return (form_name(run_name, "run name") if run_name else None), classes, settings


@asynccontextmanager
async def _uploaded_files(request: Request, runs: Path, kind: str, limits: Limits):
    """The files of a request's form (every field), staged in a RUNS/.<kind> folder that is removed when
    the block ends."""
    with staging(runs, kind) as staged:
        _, files = await receive_form(request, Path(staged), limits)
        yield [path for group in files.values() for path in group]


def _page_routes(state: AppState) -> APIRouter:
    """The page and its static files (no CDN, no inline script: the CSP forbids both)."""
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    def page():
        return (STATIC / "page.html").read_text(encoding="utf-8")

    @router.get("/static/{file}")
    def static(file: str):
        kinds = {"page.js": "text/javascript", "page.css": "text/css", "icon.svg": "image/svg+xml"}
        if file not in kinds:
            return problem(404, f"{file}: no such file")
        return FileResponse(STATIC / file, media_type=kinds[file])

    return router


def _teach_routes(state: AppState) -> APIRouter:
    """Teach: photos in, a training job out; its job's status and cancel."""
    router = APIRouter()
    runs, jobs, limits = state.runs, state.jobs, state.limits

    @router.post("/api/teach")
    async def teach(request: Request):
        jobs.check_free()  # before reading the photos: a refused teach stores nothing
        with staging(runs, ".upload-") as staged:
            fields, files = await receive_form(request, Path(staged), limits)
            run_name, classes, settings = _teach_request(fields, files)
            await run_in_threadpool(check_images, [photo for photos in classes.values() for photo in photos])
            run = run_folder(runs, run_name or time.strftime("run-%Y%m%d-%H%M%S"))
            if run.exists():
                raise UserError(f"{run.name}: a run of that name exists; choose another name")
            jobs.check_free()
            home = prepare_data(runs, run.name, classes, settings)
            try:
                job = jobs.start(run)
            except BaseException:
                shutil.rmtree(home, ignore_errors=True)
                raise
            return {"job": job["id"], "run": run.name, "epochs": settings.get("epochs")}

    @router.get("/api/jobs/{job_id}")
    def job_status(job_id: str):
        status = jobs.status(job_id)
        return status if status is not None else problem(404, f"{job_id}: no such job")

    @router.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str):
        status = jobs.cancel(job_id)
        return status if status is not None else problem(404, f"{job_id}: no such job")

    return router


def _test_routes(state: AppState) -> APIRouter:
    """Test: labels, probabilities and heatmaps of dropped photos."""
    router = APIRouter()
    runs, explanations, limits = state.runs, state.explanations, state.limits

    @router.post("/api/runs/{name}/predict")
    async def predict(name: str, request: Request):
        folder = finished_run(runs, name)
        with state.tests.entered():
            async with _uploaded_files(request, runs, ".predict-", limits) as photos:
                if not photos:
                    raise UserError("drop at least one photo to test")
                return await run_in_threadpool(label_photos, state.live, folder, photos, explanations)

    @router.post("/api/runs/{name}/live")
    async def live(name: str, request: Request):
        folder = finished_run(runs, name)
        async with _uploaded_files(request, runs, ".live-", dataclasses.replace(limits, files=1)) as frames:
            if len(frames) != 1:
                raise UserError("send one camera frame, as the page does")
            return await run_in_threadpool(state.live.label, folder, frames[0])

    @router.post("/api/runs/{name}/explanations/{batch}/{index}/occlusion")
    async def occlusion(name: str, batch: str, index: int):
        folder = finished_run(runs, name)
        where = ensure_under(explanations / safe_path_part(batch, "batch"), explanations)
        if not where.is_dir():
            raise UserError("that Test's photos were cleared (newer Tests replace older ones); test the photo again")
        with state.tests.entered():
            made = await run_in_threadpool(state.live.occlude, folder, where, index)
        return {"image": f"/api/explanations/{batch}/{made}"}

    @router.get("/api/explanations/{batch}/{file}")
    def heatmap(batch: str, file: str):
        path = ensure_under(explanations / safe_path_part(batch, "batch") / safe_path_part(file, "file"), explanations)
        kinds = {".png": "image/png", ".jpg": "image/jpeg"}  # heatmaps; nearest training photos' thumbnails
        if path.suffix not in kinds or not path.is_file():
            return problem(404, f"{file}: no such heatmap")
        return FileResponse(path, media_type=kinds[path.suffix])

    return router


def create_app(
    runs: str | Path,
    max_file_bytes: int | None = None,
    *,
    token: str | None = None,
    hosts: set[str] | None = None,
    limits: Limits | None = None,
):
    """The app over the run folders in `runs` (created if needed), behind the guard (app/guard.py):
    `token` is the launch token (None: no token, the Host and Origin checks stay), `hosts` the names
    besides 127.0.0.1, localhost and [::1] it answers to. What a killed app left in `runs` is removed."""
    runs = Path(runs).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    remove_leftovers(runs)
    limits = limits or Limits()
    if max_file_bytes is not None:
        limits = dataclasses.replace(limits, file_bytes=max_file_bytes)
    state = AppState(
        runs,
        Jobs(runs),
        runs / ".explanations",
        limits,
        LiveModel(),
        Admission(MAX_TESTS, "Tests"),
        Admission(MAX_IMPROVING, "batches of new photos"),
    )
    state.explanations.mkdir(exist_ok=True)
    app = FastAPI(title="pasture", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(UserError)
    async def user_error(request: Request, error: UserError):
        status = next((code for kinds, code in ERROR_STATUS if isinstance(error, kinds)), 400)
        return problem(status, _as_shown(str(error), runs))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, error: NotFound):
        return problem(404, str(error))

    for routes in (_page_routes, run_routes, _teach_routes, _test_routes, improve_routes):
        app.include_router(routes(state))
    app.state.jobs, app.state.live, app.state.tests = state.jobs, state.live, state.tests
    return Guard(app, token=token, hosts=hosts)


HEAVY_MODULES = ("timm", "captum.attr", "matplotlib.pyplot")  # what a Teach or Test imports, when installed


def settle_heap() -> None:
    """Import what the work will import, then move every object alive now out of the garbage collector's
    view (gc.freeze). Without this, a full collection walks torch's, timm's and Captum's hundreds of
    thousands of objects, holding the GIL for 400-500 ms: the app stopped answering for that long every
    few seconds during a Test (measured with a gc callback, benchmarks/app_responsive.py)."""
    for name in HEAVY_MODULES:
        if importlib.util.find_spec(name.split(".")[0]) is not None:
            importlib.import_module(name)
    gc.collect()
    gc.freeze()


def serve(
    runs: str | Path,
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    token: bool = True,
    allow_hosts: tuple[str, ...] = (),
    say=print,
    warn=None,
) -> None:
    """Run the app until Ctrl-C (uvicorn), printing the URL to open (with the launch token)."""
    import uvicorn

    warn = warn or (lambda message: None)
    launch_token = new_token() if token else None
    hosts = {host, *allow_hosts}
    if host in ("0.0.0.0", "::"):  # every interface: the names and addresses others will type
        name = socket.gethostname()
        hosts |= {name, socket.getfqdn()}
        try:
            hosts |= {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
        except OSError:
            pass
    if host not in LOCAL_HOSTS:
        warn(
            f"--host {host}: the app is reachable from other machines; anyone who has the link (with its token) "
            "can use it, and the traffic is not encrypted: prefer an SSH tunnel (see the README)"
        )
    if not token:
        warn(
            "--no-token: any program or user on this machine (and, with --host, on the network) can use the app; "
            "the Host and Origin checks still keep other web sites out"
        )
    app = create_app(runs, token=launch_token, hosts=hosts)
    settle_heap()
    say(f"pasture app: {local_url(host, port, launch_token)}  (runs in {runs}; Ctrl-C stops it)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
