"""The app's work (a training, an adaptation): one at a time, cancellable, resumable, and nothing of the
user's left behind.

A teach's photos live in RUNS/.data-<run>/ (with settings.json, what to train, and owner.pid, the app
process that uses them) beside their run, as a run trained from the command line keeps pointing at its
folder: a cancelled run resumes from them (same data, same settings: pasture's own --resume), and a
finished one reads them again to fit a new camera (Improve), for export's parity check and for its
figures. They go with the run when it is deleted, and at once when a training fails before the run has
a folder. At start-up the app removes what a killed app left: its staging folders (named with their
owner's pid) and the photos of runs that no longer exist, never those of a live process.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pasture import api
from pasture.core.errors import Interrupted, UserError
from pasture.core.locks import folder_lock
from pasture.core.processes import process_alive
from pasture.core.runs import atomic_write_json, read_json
from pasture.core.runtime import StopRequested, stoppable

DATA_PREFIX = ".data-"  # + run name: the photos a run trains on, kept until it finishes
STAGING_PREFIXES = (".upload-", ".predict-", ".live-", ".target-")  # + owner pid + "-" + random: one request's files
OWNER_FILE = "owner.pid"
METRICS_SHOWN = ("test_accuracy", "test_ci95", "n_test", "per_class", "confusion", "classes")  # a job's result
SETTINGS_FILE = "settings.json"


class Busy(UserError):
    """The one training slot is taken, or the run is training: answered 409."""


def staging_prefix(kind: str) -> str:
    """ ".upload-<pid>-": a request's staging folder, named by the process that owns it."""
    return f"{kind}{os.getpid()}-"


def data_home(runs: Path, run_name: str) -> Path:
    return runs / f"{DATA_PREFIX}{run_name}"


def _owner(folder: Path) -> int | None:
    try:
        return int((folder / OWNER_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _run_state(run: Path) -> str:
    """'missing', 'finished' or 'unfinished'."""
    if not (run / "config.json").is_file():
        return "missing"
    return "finished" if (run / "metrics.json").is_file() else "unfinished"


def resumable(runs: Path, run_name: str) -> bool:
    home = data_home(runs, run_name)
    return (home / SETTINGS_FILE).is_file() and (home / "data").is_dir() and _run_state(runs / run_name) != "finished"


def remove_leftovers(runs: Path) -> list[str]:
    """Remove what a killed app left in `runs` (only pasture's own folders, only when their owner is not
    alive); returns their names."""
    removed = []
    for folder in sorted(runs.iterdir()):
        if not folder.is_dir():
            continue
        name = folder.name
        if name.startswith(STAGING_PREFIXES):
            match = re.match(r"^\.[a-z]+-(\d+)-", name)
            owner = int(match.group(1)) if match else None
            if owner == os.getpid() or process_alive(owner):
                continue
        elif name.startswith(DATA_PREFIX):
            owner = _owner(folder)
            if owner == os.getpid() or process_alive(owner):
                continue
            if _run_state(runs / name[len(DATA_PREFIX) :]) != "missing":
                continue  # kept with its run: resumed, adapted or deleted with it from the Runs page
        else:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(name)
    return removed


def prepare_data(runs: Path, run_name: str, class_folders: dict[str, list[Path]], settings: dict) -> Path:
    """Move a teach's photos (already checked) into RUNS/.data-<run>/data/<class>/ with its settings."""
    home = data_home(runs, run_name)
    if home.exists():
        if process_alive(_owner(home)):
            raise Busy(f"{run_name}: a training of that name is starting; choose another name")
        shutil.rmtree(home)
    (home / "data").mkdir(parents=True)
    try:
        for class_name, photos in class_folders.items():
            target = home / "data" / class_name
            target.mkdir()
            for photo in photos:
                photo.rename(target / f"{photo.parent.name}_{photo.name}")
        atomic_write_json(home / SETTINGS_FILE, settings)
        (home / OWNER_FILE).write_text(f"{os.getpid()}\n")
    except BaseException:  # nothing half-made left behind (a class folder the disk refused, Ctrl-C)
        shutil.rmtree(home, ignore_errors=True)
        raise
    return home


class Jobs:
    """One job (a training, an adaptation) at a time: a laptop's cores are all it has; a training's progress is
    read from its history.jsonl."""

    def __init__(self, runs: Path):
        self.runs = runs
        self.lock = threading.Lock()
        self.jobs: dict[str, dict] = {}
        self.stops: dict[str, threading.Event] = {}

    def running(self) -> dict | None:
        return next((job for job in self.jobs.values() if job["state"] == "running"), None)

    def check_free(self) -> None:
        job = self.running()
        if job is not None:
            raise Busy(f"a training is running ({job['run']}); wait for it, or cancel it")

    def start(self, run: Path, resume: bool = False) -> dict:
        """Train `run` from its RUNS/.data-<run> (resume: continue its checkpoint) in a thread."""
        home = data_home(self.runs, run.name)
        settings = read_json(home / SETTINGS_FILE)
        history = run / "history.jsonl"
        start_epoch = len(history.read_text().splitlines()) if resume and history.is_file() else 0

        def train(warnings: list[str]) -> dict:
            (home / OWNER_FILE).write_text(f"{os.getpid()}\n")
            try:
                metrics = api.train(home / "data", run, quiet=True, warn=warnings.append, resume=resume, **settings)
            finally:
                # Tidy first, then say it is over: whoever sees the final state sees the folder as it stays.
                if _run_state(run) == "missing":  # failed before the run had a folder: its photos go
                    shutil.rmtree(home, ignore_errors=True)
                else:
                    (home / OWNER_FILE).unlink(missing_ok=True)  # kept with the run; no live owner now
            return {"metrics": {key: metrics[key] for key in METRICS_SHOWN}}

        # epochs: None for a probe (no epochs: the page shows a bar without an end)
        return self.begin(run.name, train, epochs=settings.get("epochs"), start_epoch=start_epoch)

    def begin(
        self, run_name: str, work: Callable[[list[str]], dict], epochs: int | None = None, start_epoch: int = 0
    ) -> dict:
        """Run `work(warnings)` (it returns what the finished job reports) in a thread, in the one slot, as
        the job of the run `run_name`; refused (Busy) while another job runs."""
        with self.lock:
            self.check_free()
            job_id = uuid.uuid4().hex[:12]
            job: dict[str, Any] = {
                "id": job_id,
                "state": "running",
                "run": run_name,
                "epochs": epochs,
                "started": time.time(),
                "warnings": [],
                "stopping": False,
                "start_epoch": start_epoch,
            }
            self.jobs[job_id] = job
            self.stops[job_id] = threading.Event()
        threading.Thread(target=self._work, args=(job, work), daemon=True, name=f"pasture-job-{run_name}").start()
        return job

    def cancel(self, job_id: str) -> dict | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        if job["state"] == "running":
            job["stopping"] = True
            self.stops[job_id].set()
        return self.status(job_id)

    def _work(self, job: dict, work: Callable[[list[str]], dict]) -> None:
        outcome: dict[str, object] = {"state": "error", "error": "the work stopped unexpectedly; please report it"}
        try:
            with stoppable(self.stops[job["id"]]):
                outcome = {"state": "done", **work(job["warnings"])}
        except (Interrupted, StopRequested):
            outcome = {"state": "cancelled", "error": f"{job['run']}: cancelled; resume or delete it on the Runs page"}
        except UserError as error:
            outcome = {"state": "error", "error": str(error)}
        except Exception as error:  # a bug: the page says so, the server keeps running
            outcome = {"state": "error", "error": f"it failed ({type(error).__name__}: {error}); please report it"}
        finally:
            job.update(outcome)

    def training(self, run_name: str) -> bool:
        job = self.running()
        return job is not None and job["run"] == run_name

    def delete(self, run: Path) -> None:
        """Remove a run folder and its kept photos; refused while it trains (here or in another process)."""
        if self.training(run.name):
            raise Busy(f"{run.name}: training now; cancel it first")
        with folder_lock(run, "run"):  # refused (FolderBusy) while another process writes it
            shutil.rmtree(run)
        shutil.rmtree(data_home(self.runs, run.name), ignore_errors=True)

    def status(self, job_id: str) -> dict | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        report = {key: value for key, value in job.items() if key not in ("started", "start_epoch")}
        history = self.runs / job["run"] / "history.jsonl"
        epochs_done = len(history.read_text().splitlines()) if history.is_file() else 0
        fresh = epochs_done - job["start_epoch"]
        elapsed = time.time() - job["started"]
        report.update(
            epoch=epochs_done,
            elapsed_s=round(elapsed, 1),
            eta_s=round(elapsed / fresh * (job["epochs"] - epochs_done), 1) if fresh > 0 and job["epochs"] else None,
        )
        return report
