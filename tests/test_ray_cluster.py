"""A real Ray head node on 127.0.0.1 (`ray start --head`, dashboard off, token authentication on) and
a study run through `pasture experiment --engine ray --ray-address`, as a user of a cluster would."""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")

QUICK = "recipe=default,epochs=2,image_size=16,batch_size=8"
# the ray command installed beside this Python (a venv's or pyenv's bin/), else the one on PATH
RAY = (
    str(Path(sys.executable).with_name("ray"))
    if Path(sys.executable).with_name("ray").is_file()
    else shutil.which("ray")
)
PASTURE = [sys.executable, "-m", "pasture.cli"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def head_node(tmp_path):
    """A head node in its own process group (killed as a group after the test), its own temp folder
    and a token of this test's own, so nothing is written to ~/.ray and nothing else is stopped."""
    folder = tempfile.mkdtemp(prefix="phead", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            "--port",
            str(port),
            "--node-ip-address",
            "127.0.0.1",
            "--include-dashboard=false",
            "--num-cpus",
            "2",
            "--temp-dir",
            folder,
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not _listening(port):
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not start (exit code {head.poll()})")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", env
    finally:
        for sent in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(head.pid, sent)
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                continue
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_a_study_runs_on_a_real_head_node(head_node, split_data, tmp_path):
    address, env = head_node
    out = tmp_path / "study"
    command = [
        *PASTURE,
        "experiment",
        str(split_data),
        "--out",
        str(out),
        "--conditions",
        f"a:{QUICK}",
        f"b:{QUICK},lr=0.01",
        "--seeds",
        "2",
        "--engine",
        "ray",
        "--ray-address",
        address,
        "--quiet",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert [row["runs"] for row in results["conditions"]] == [2, 2]
    assert len(list((out / "runs").glob("*/top_losses.png"))) == 4
    # the same command again finds every run stored
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and json.loads((out / "results.json").read_text())["runs_computed"] == 0


@pytest.mark.slow
def test_an_address_where_no_head_listens_is_a_one_line_error(split_data, tmp_path):
    port = _free_port()  # nothing listens there
    started = time.monotonic()
    done = subprocess.run(
        [
            *PASTURE,
            "experiment",
            str(split_data),
            "--out",
            str(tmp_path / "x"),
            "--conditions",
            f"a:{QUICK}",
            "--engine",
            "ray",
            "--ray-address",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert f"--ray-address 127.0.0.1:{port}: cannot reach a Ray head there" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "x").exists()
    assert time.monotonic() - started < 60  # not Ray's own minutes of retrying
