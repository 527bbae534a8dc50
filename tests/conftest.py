"""Tiny generated image sets for tests. Never the shared photos: every image here is made by the test.

Class "cow" images are reddish with a bright square, "horse" images bluish with a dark bar, plus
noise, so a model can learn them but they are not all identical.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "cowhorse-dev"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One torch thread per xdist worker (and per process a test starts: they inherit the environment), so
    # that two workers on two cores do not oversubscribe them: spinning threads slow everything by 10x.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def image_seed(label: str, index: int, size: int) -> int:
    """A seed that is the same in every process: Python salts str hashes per process, so hash()
    would give each test run (and each subprocess) different images."""
    return zlib.crc32(f"{label}|{index}|{size}".encode())


def make_image(label: str, index: int, size: int = 24) -> Image.Image:
    rng = np.random.default_rng(image_seed(label, index, size))
    pixels = rng.integers(0, 60, size=(size, size, 3)).astype(np.int16)
    if label == "cow":
        pixels[..., 0] += 150
        corner = rng.integers(0, size // 2)
        pixels[corner : corner + size // 3, corner : corner + size // 3] = 240
    else:
        pixels[..., 2] += 150
        row = rng.integers(0, size - 4)
        pixels[row : row + 3, :] = 10
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_class_folders(root: Path, counts: dict[str, int], size: int = 24, start: int = 0, suffix=".png") -> Path:
    for label, count in counts.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(start, start + count):
            make_image(label if label in ("cow", "horse") else "horse", index, size).save(
                folder / f"{label}_{index:03d}{suffix}"
            )
    return root


def write_split_data(root: Path) -> Path:
    """ROOT/train/{cow,horse} (8 each) + ROOT/test/{cow,horse} (6 each), 24x24 PNGs."""
    write_class_folders(root / "train", {"cow": 8, "horse": 8})
    write_class_folders(root / "test", {"cow": 6, "horse": 6}, start=100)
    (root / "MANIFEST.csv").write_text("file,label\n")
    return root


@pytest.fixture
def split_data(tmp_path) -> Path:
    """DATA/train/{cow,horse} (8 each) + DATA/test/{cow,horse} (6 each), 24x24 PNGs."""
    return write_split_data(tmp_path / "data")


@pytest.fixture
def flat_data(tmp_path) -> Path:
    """DATA/{cow,horse} with 10 images each, 24x24 PNGs."""
    root = tmp_path / "flat"
    write_class_folders(root, {"cow": 10, "horse": 10})
    (root / "README.txt").write_text("not a class folder")
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache folder: nothing is written to the user's ~/.cache."""
    monkeypatch.setenv("PASTURE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def in_process_runs(request, monkeypatch):
    """--jobs auto picks one run at a time, in this process, in every test: a study's runs are tiny here,
    and starting the worker processes (each imports torch) cost more than the runs (a 2-search tune test:
    139 s with workers, see the suite's durations); spies (monkeypatched functions) see the runs, which a
    worker process would not; and pytest-xdist's workers already fill the cores. Tests of --jobs auto
    itself are marked `real_auto_jobs`; tests of parallel runs ask for --jobs 2 explicitly."""
    if request.node.get_closest_marker("real_auto_jobs"):
        return
    from pasture.study import engines

    monkeypatch.setattr(engines, "auto_jobs", lambda device, out=None: 1)


def interrupt_on_call(monkeypatch, module, name: str, call: int):
    """Make `module.name` raise KeyboardInterrupt on its `call`-th call (a Ctrl-C at a known point).
    Returns a function that puts the real one back."""
    real = getattr(module, name)
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupting)
    return lambda: monkeypatch.setattr(module, name, real)


def gan_trained_whole_and_resumed(data, tmp_path, monkeypatch, settings: dict, interrupt_at_grid: int):
    """The GAN units of `api.gan_train(data, **settings)` run whole, and run again interrupted at its
    `interrupt_at_grid`-th sample grid (Ctrl-C) and resumed: (whole, resumed). They must be equal."""
    import pasture.gan.trainer as trainer
    from pasture import api
    from pasture.core.errors import Interrupted
    from pasture.core.runs import load_checkpoint

    api.gan_train(data, tmp_path / "whole", **settings)
    restore = interrupt_on_call(monkeypatch, trainer, "save_grid", interrupt_at_grid)
    with pytest.raises(Interrupted):
        api.gan_train(data, tmp_path / "cut", **settings)
    restore()
    api.gan_train(data, tmp_path / "cut", resume=True, **settings)
    return tuple(load_checkpoint(tmp_path / name / "checkpoint.pt")["units"] for name in ("whole", "cut"))


HOLD_LOCK = """
import sys, time
from pathlib import Path
from pasture.core.locks import folder_lock
with folder_lock(Path(sys.argv[1]), "test"):
    print("held", flush=True)
    sys.stdin.readline()  # until the test says so (or closes stdin)
    if len(sys.argv) > 2:
        exec(sys.argv[2])  # what the holder does last, still holding the lock
"""


@contextlib.contextmanager
def held_by_another_process(folder: Path, last: str | None = None):
    """A second, live process holds `folder`'s lock (pasture's own folder_lock) until the block ends; then
    it runs `last` (Python) while still holding it, and lets go. Yields the process."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder), *([last] if last else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def predict_without_torch(model_file: Path, folder: Path) -> list[dict]:
    """`pasture predict MODEL_FILE FOLDER --json` in a fresh interpreter, checked to have imported no
    torch (an exported model runs with its own runtime alone); returns the rows."""
    import json

    code = (
        "import sys; from pasture.cli import main; code = main(['predict', sys.argv[1], sys.argv[2], '--json']);"
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(model_file), str(folder)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_predicts_as_the_run(model_file: Path, run: Path, folder: Path) -> None:
    """An exported model gives the run's labels on `folder`, and its probabilities to 1e-4."""
    from pasture import api

    rows, from_run = api.predict(model_file, [folder]), api.predict(run, [folder])
    assert [row["label"] for row in rows] == [row["label"] for row in from_run]
    for ours, theirs in zip(rows, from_run):
        assert abs(ours["probability"] - theirs["probability"]) < 1e-4


@contextlib.contextmanager
def local_ray_instance(ray, prefix: str, num_cpus: int, private_cache: bool = False):
    """A local Ray instance (starting one takes seconds) in its own short temp folder (Ray's socket paths
    must fit 107 bytes), without the token file Ray would write to ~/.ray; with `private_cache`, its
    workers keep pasture's caches in that folder too. Shut down, removed and the environment restored after."""
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    changes = {"RAY_AUTH_MODE": "disabled"}
    if private_cache:
        changes["PASTURE_CACHE_DIR"] = os.path.join(folder, "cache")
    saved = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        _temp_dir=folder,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
