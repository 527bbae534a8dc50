"""The Ray engine: a study's runs as Ray tasks, on this machine or on a Ray cluster.

Why Ray: a study is many independent Python runs, and Ray core tasks are the conventional engine for
that, run by people who already operate clusters; the same code runs on a laptop (a local instance)
and on a cluster (`--ray-address`). pasture adds nothing to operate.

How a study maps onto it:
- The driver (the machine that runs `pasture experiment`) loads and decodes the photos once and puts
  the uint8 tensors in Ray's object store (RunInputs.of_task in pasture.study.inputs lists what each run
  reads); workers read nothing from disk, so worker nodes need no copy of the photos and no shared
  filesystem, only the same pasture and torch.
- Each GAN of a GAN condition is one task; the runs that use it depend on its result (Ray waits).
- Each run is one task returning its result and figure; the driver writes the store exactly as the
  local engine does (same keys, same files), so a study can be started on one engine and finished on
  the other.
- Threads: each task asks Ray for `threads` CPUs (num_cpus) and sets torch to that many threads, so a
  node runs at most cores/threads tasks at once and never oversubscribes its cores. The default is
  1: a study has many more runs than cores, and for these small models a second thread makes a run
  only about 1.4x faster while a second run beside it doubles the work done (the paper study on 2
  cores: 142 s with 1 thread per task, 193 s with 2; benchmarks/engines.py). Raise it
  (`--threads-per-run`) for big models, or when the runs are fewer than the cores.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import torch

from pasture.core.errors import UserError
from pasture.core.extras import optional_import
from pasture.core.runs import load_checkpoint, versions
from pasture.core.runtime import usable_cores
from pasture.study.design import RunTask
from pasture.study.engines import Finished
from pasture.study.gan_store import gan_location, store_gan, train_task_gan
from pasture.study.inputs import LOCAL, RunInputs
from pasture.study.run import compute_run, store_run

# What must be equal on every node: a run's numbers depend on them (pasture, torch, torchvision), and
# Ray itself needs the same Python minor version.
MATCHED = ("pasture", "torch", "torchvision", "python")


def _ray():
    return optional_import("ray", "--engine ray", "ray")


def _matched_versions() -> dict:
    found = versions()
    found["python"] = ".".join(found["python"].split(".")[:2])
    return {name: found.get(name) for name in MATCHED}


class VersionMismatch(Exception):
    """A worker's pasture/torch differs from the driver's (raised in the worker, explained by the driver)."""


def _check_versions(expected: dict) -> None:
    found = _matched_versions()
    different = [
        f"{name} {found[name]} (driver: {expected[name]})" for name in MATCHED if found[name] != expected[name]
    ]
    if different:
        raise VersionMismatch(f"node {socket.gethostname()} has {', '.join(different)}")


# ----------------------------------------------------------------------------------------------
# What runs in a worker


def _receive(task: RunTask, expected: dict, keys: list, values: tuple, gan_names: tuple | list = ()) -> RunInputs:
    """Set a worker up for one task: versions checked; returns the shipped inputs, which the run reads
    in place of the disk (a worker lives for many tasks; each task gets only its own)."""
    _check_versions(expected)
    if task.threads:
        torch.set_num_threads(task.threads)
    return RunInputs.shipped(keys, list(values[: len(keys)]), gan_names, values[len(keys) :])


def _files_in(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def remote_run(task: RunTask, expected: dict, keys: list, gan_names: list, *values) -> tuple[dict, float, dict]:
    """One run in a worker: (the dict to store, the classifier's seconds, its files by name)."""
    inputs = _receive(task, expected, keys, values, gan_names)
    with tempfile.TemporaryDirectory(prefix="pasture-run-") as folder:
        stored, seconds = compute_run(task, Path(folder), inputs)
        return stored, seconds, _files_in(Path(folder))


def remote_gan(task: RunTask, expected: dict, keys: list, *values) -> tuple[list, tuple[dict, dict]]:
    """One GAN in a worker: (its units, for the runs that use it; (summary, files) for the store)."""
    inputs = _receive(task, expected, keys, values)
    with tempfile.TemporaryDirectory(prefix="pasture-gan-") as folder:
        units, summary = train_task_gan(task, gan_location(task, inputs), Path(folder))
        return units, (summary, _files_in(Path(folder)))


def node_versions() -> dict:
    return {"host": socket.gethostname(), **_matched_versions()}


# ----------------------------------------------------------------------------------------------
# The driver


def _split_address(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address}: give auto or HOST:PORT (the head node's GCS port, 6379 by default)")
    return host, port


def _check_address(address: str) -> None:
    """Fail in seconds, not minutes: ray.init on an address where nothing listens retries for minutes."""
    host, port = _split_address(address)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise UserError(
            f"--ray-address {address}: cannot reach a Ray head there ({error.strerror or error}); "
            f"start one with `ray start --head --port {port}` or check the address"
        ) from None


class RayEngine:
    """Runs a study's runs as Ray tasks (see the module docstring). With no address, starts a Ray
    instance on this machine for the study (`num_cpus`: all cores by default) and stops it after; with
    "auto" or HOST:PORT, joins that cluster. A Ray instance already started in this process (a
    notebook's) is used as it is and left running."""

    name = "ray"

    def __init__(self, address: str | None = None, threads: int = 1, num_cpus: int | None = None):
        if threads < 1:
            raise UserError(f"--threads-per-run {threads}: must be at least 1")
        if address not in (None, "auto", "local"):
            _split_address(address)
        self.address, self.threads, self.num_cpus = address, threads, num_cpus
        self._ray = None
        self._started_here = False

    def threads_per_run(self) -> int:
        return self.threads

    def parallel(self) -> int:
        ray = self.start()
        return max(1, int(ray.cluster_resources().get("CPU", 1)) // self.threads)

    def start(self):
        """Start or join Ray (once), check every node's versions, return the ray module. Called before
        a study writes anything, so a cluster that cannot be used leaves no half-made folder."""
        if self._ray is not None:
            return self._ray
        ray = _ray()
        if not ray.is_initialized():
            if self.address not in (None, "auto", "local"):
                _check_address(self.address)
            options = {"logging_level": "ERROR", "log_to_driver": False, "include_dashboard": False}
            try:
                if self.address in (None, "local"):
                    ray.init(address="local", num_cpus=self.num_cpus or usable_cores(), **options)
                else:
                    ray.init(address=self.address, **options)
            except ConnectionError as error:
                # Ray >= 2.59 heads started with `ray start --head` may require a token from their drivers
                raise UserError(
                    f"--ray-address {self.address}: {str(error).splitlines()[0]}; start a head with "
                    "`ray start --head`, and if the cluster uses token authentication set "
                    "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN) here"
                ) from None
            except RuntimeError as error:  # e.g. Ray's own version check against the cluster
                raise UserError(f"--ray-address {self.address}: {str(error).splitlines()[0]}") from None
            self._started_here = True
        self._ray = ray
        self._check_nodes(ray)
        return ray

    def close(self) -> None:
        if self._ray is not None and self._started_here:
            self._ray.shutdown()
        self._ray, self._started_here = None, False

    def _check_nodes(self, ray, expected: dict | None = None) -> None:
        """Before any work: every node can import pasture, has the driver's versions and can run a task
        of `threads` CPUs (else Ray would wait for such a node forever)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        expected = expected or _matched_versions()
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        if not any(node["Resources"].get("CPU", 0) >= self.threads for node in nodes):
            most = max((node["Resources"].get("CPU", 0) for node in nodes), default=0)
            raise UserError(
                f"--threads-per-run {self.threads}: no Ray node has that many CPUs (the most is "
                f"{most:g}); use at most {int(most)}"
            )
        probe = ray.remote(node_versions)
        refs = {
            node["NodeManagerAddress"]: probe.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote()
            for node in nodes
        }
        for address, ref in refs.items():
            try:
                found = ray.get(ref, timeout=120)
            except Exception as error:  # any failure here means the node cannot run pasture
                raise UserError(
                    f"Ray node {address} cannot run pasture ({_gist(error)}); install the same "
                    f"pasture {expected['pasture']} and torch {expected['torch']} there"
                ) from None
            different = [
                f"{name} {found[name]} (driver: {expected[name]})" for name in MATCHED if found[name] != expected[name]
            ]
            if different:
                raise UserError(
                    f"Ray node {address} ({found['host']}) has {', '.join(different)}; install the "
                    "driver's versions on every node"
                )

    def run(self, todo: list[RunTask], finished: Finished) -> None:
        ray = self.start()
        expected = _matched_versions()
        run_task = ray.remote(remote_run).options(num_cpus=self.threads)
        gan_task = ray.remote(remote_gan).options(num_cpus=self.threads, num_returns=2)
        shipped: dict = {}  # input key -> object ref: each input is put once, whatever uses it

        def inputs_of(task: RunTask) -> tuple[list, list]:
            inputs = LOCAL.of_task(task)
            for key, value in inputs.items():
                if key not in shipped:
                    shipped[key] = ray.put(value)
            return list(inputs), [shipped[key] for key in inputs]

        pending: dict = {}  # ref -> ("gan", task, its GAN's location) or ("run", task)
        gans: dict[str, object] = {}  # GAN store folder name -> ref of its units
        # Where each GAN task's GAN lives (hashing its training images), once per task.
        locations = {task.key: gan_location(task, LOCAL) for task in todo if task.condition.gan_preset}
        for task in todo:
            location = locations.get(task.key)
            if location is None or location.folder.name in gans:
                continue
            if location.stored:
                gans[location.folder.name] = ray.put(load_checkpoint(location.folder / "checkpoint.pt")["units"])
            else:
                keys, refs = inputs_of(task)
                units, payload = gan_task.remote(task, expected, keys, *refs)
                gans[location.folder.name] = units
                pending[payload] = ("gan", task, location)
        for task in todo:
            keys, refs = inputs_of(task)
            names = [locations[task.key].folder.name] if task.key in locations else []
            pending[run_task.remote(task, expected, keys, names, *refs, *[gans[name] for name in names])] = (
                "run",
                task,
            )
        del gans  # the runs hold the GAN refs now; Ray frees each GAN once its runs are done
        remaining = {task.key: task for task in todo}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    kind, task, *where = pending.pop(ref)
                    value = self._get(ray, ref)
                    if kind == "gan":
                        summary, files = value
                        store_gan(task, where[0], summary, files)
                        continue
                    stored, seconds, files = value
                    if stored.get("gan_dir"):  # the worker's own GAN store path; the driver's is where it is
                        stored["gan_dir"] = str(locations[task.key].folder)
                    store_run(task, stored, seconds, files)
                    remaining.pop(task.key, None)
                    finished(stored, list(remaining.values()))
        except BaseException:
            for ref in pending:  # Ctrl-C or a failed run: nothing more starts; finished runs are stored
                ray.cancel(ref, force=True)
            raise

    @staticmethod
    def _get(ray, ref):
        """ray.get, with a worker's error turned into what it means for the user."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, UserError):
                raise cause from None
            if isinstance(cause, VersionMismatch):
                raise UserError(f"a Ray worker: {cause}; install the driver's versions on every node") from None
            if "No module named" in str(error):
                raise UserError(
                    f"a Ray worker cannot import what pasture needs ({_gist(cause or error)}); "
                    f"install pasture[ray] and torch there, the driver's versions"
                ) from None
            raise


def _gist(error: BaseException) -> str:
    """The last non-empty line of an error's text (a remote traceback ends with the error itself)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
