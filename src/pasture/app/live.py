"""The Test page's camera: a frame every few hundred milliseconds, labelled by a run that stays loaded.

Loading a run (its backbones and head) takes about a second; scoring one frame with the default probe
takes about 40 ms on one core (benchmarks/export.py). So the last run the camera used is kept, and
loaded again only when another run is asked for or the run was trained again (metrics.json changed).
One lock: frames arrive on worker threads, and a model switches between train and eval mode inside
predict_probabilities."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from pasture import api
from pasture.core.errors import UserError
from pasture.core.imagefile import BadImage, decode_array


class LiveModel:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Path, int] | None = None
        self._model: api.Classifier | None = None
        self.loads = 0  # how many times a run was loaded (the tests check frames do not reload it)

    def label(self, run: Path, frame: Path) -> dict:
        """The label and probabilities of one frame, by the finished run `run`."""
        key = (run, (run / "metrics.json").stat().st_mtime_ns)
        with self._lock:
            if key != self._key or self._model is None:
                self._model, self._key = None, None  # the old model goes before the new one loads
                self._model, self._key = api.load(run, device="auto"), key
                self.loads += 1
            try:
                image, _ = decode_array(frame, self._model.image_size)
            except BadImage as error:
                raise UserError(f"the camera frame: {error}; try again") from None
            [row] = self._model.label(torch.from_numpy(image)[None], ["frame"])
        return {field: row[field] for field in ("label", "probability", "probabilities")}

    def forget(self, run: Path) -> None:
        """Drop `run`'s model (deleted: its memory goes with it)."""
        with self._lock:
            if self._key is not None and self._key[0] == run:
                self._model, self._key = None, None
