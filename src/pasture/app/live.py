"""The Test page's camera: a frame every few hundred milliseconds, labelled by a run that stays loaded.

Loading a run (its backbones and head) takes about a second; scoring one frame with the default probe
takes about 40 ms on one core (benchmarks/export.py). So the last run the camera used is kept, and
loaded again only when another run is asked for or the run was trained again (metrics.json changed).
One lock: frames arrive on worker threads, and a model switches between train and eval mode inside
predict_probabilities. The Test page's photos go through the same kept model (label_photos)."""

from __future__ import annotations

import importlib.util
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pasture import api
from pasture.classify.explain import explain_images, occlusion_png
from pasture.core.errors import UserError
from pasture.core.imagefile import BadImage, decode_array

NEAREST = 3  # training photos shown beside each Test photo
KEEP_EXPLANATIONS = 64  # Test batches of heatmaps kept (one a photo: the page sends them one by one)


class LiveModel:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Path, int] | None = None
        self._model: api.LoadedRun | None = None
        self.loads = 0  # how many times a run was loaded (the tests check frames do not reload it)

    def _loaded(self, run: Path) -> api.LoadedRun:
        """`run`'s model, loaded again only when another run is asked for or it was trained again (hold
        the lock)."""
        key = (run, (run / "metrics.json").stat().st_mtime_ns)
        if key != self._key or self._model is None:
            self._model, self._key = None, None  # the old model goes before the new one loads
            self._model, self._key = api.load(run, device="auto"), key
            self.loads += 1
        return self._model

    def label(self, run: Path, frame: Path) -> dict:
        """The label and probabilities of one frame, by the finished run `run`."""
        with self._lock:
            model = self._loaded(run)
            try:
                image, _ = decode_array(frame, model.image_size)
            except BadImage as error:
                raise UserError(f"the camera frame: {error}; try again") from None
            [row] = model.label(torch.from_numpy(image)[None], ["frame"])
        return {field: row[field] for field in ("label", "probability", "probabilities")}

    def label_photos(
        self, run: Path, photos: list[Path], folder: Path | None, then=None, explain: bool = True
    ) -> list[dict]:
        """A row per photo of a Test: its label and probabilities, or why it is not usable. With `folder`
        (a new folder): for a run that keeps its training photos' features, each photo's NEAREST training
        photos as thumbnails there (named in `nearest`), and with `explain`, Grad-CAM written there and
        named in `heatmap` (occlusion only when asked for: occlude, from the decoded photo kept there).
        Each photo is decoded once, at the run's size (a Test decoded it three times: check, predict,
        heatmap), by the kept model; one Test or frame at a time
        holds the model, so decoding memory is one request's (issue 40). `then` (no arguments) runs last,
        still holding the model: the Test page prunes older folders there, so no batch being written is
        ever removed."""
        with self._lock:
            model = self._loaded(run)
            rows: list[dict] = []
            images, usable = [], []
            for photo in photos:
                try:
                    image, _ = decode_array(photo, model.image_size)
                except BadImage as error:
                    rows.append({"file": photo.name, "error": str(error)})
                    continue
                rows.append({"file": photo.name})
                images.append(image)
                usable.append(photo)
            if not usable:
                return rows
            batch = torch.from_numpy(np.stack(images))
            good = [row for row in rows if "error" not in row]
            nearest = NEAREST if folder is not None else 0
            for row, labelled in zip(good, model.label(batch, [photo.name for photo in usable], nearest=nearest)):
                row.update({**labelled, "file": row["file"]})
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                near: list[list[dict]] = [
                    list(row.get("nearest", [])) for row in good
                ]  # training photos' files: never sent to the page
                for index, row in enumerate(good):
                    row["nearest"] = []
                    for number, item in enumerate(near[index]):
                        (folder / f"near_{index}_{number}.jpg").write_bytes(item["thumbnail"])
                        row["nearest"].append(
                            {
                                "class": item["class"],
                                "distance": item["distance"],
                                "thumbnail": f"near_{index}_{number}.jpg",
                            }
                        )
                # Grad-CAM now; occlusion (64 passes a photo) only when asked for (occlude). The figure without
                # the nearest training photos: the page's card shows them already, as thumbnails.
                if explain:
                    explained = explain_images(model.model, model.config, usable, batch, folder, occlusion_maps=False)
                    for index, (row, done) in enumerate(zip(good, explained)):
                        row["heatmap"], row["photo_index"] = done["heatmap"], index
                        Image.fromarray(images[index].transpose(1, 2, 0)).save(folder / f"photo_{index}.png")
            if then is not None:
                then()
        return rows

    def occlude(self, run: Path, folder: Path, index: int) -> str:
        """The occlusion map of photo `index` of a Test whose files are in `folder`, written there by the kept
        model; its file name. A Test whose photos were pruned since is a UserError."""
        photo = folder / f"photo_{index}.png"
        if not photo.is_file():
            raise UserError("that Test's photos were cleared (newer Tests replace older ones); test the photo again")
        with self._lock:
            model = self._loaded(run)
            with Image.open(photo) as opened:
                image = torch.from_numpy(np.asarray(opened.convert("RGB")).transpose(2, 0, 1).copy())
            name = f"occlusion_{index}.png"
            (folder / name).write_bytes(
                occlusion_png(model.model, image, "occlusion: where covering the photo lowers its class")
            )
        return name

    def forget(self, run: Path) -> None:
        """Drop `run`'s model (deleted: its memory goes with it)."""
        with self._lock:
            if self._key is not None and self._key[0] == run:
                self._model, self._key = None, None


def label_photos(live: LiveModel, run: Path, photos: list[Path], explanations: Path) -> list[dict]:
    """A row per photo (LiveModel.label_photos): the nearest training photos' thumbnail URLs and, with the
    explain extra, a heatmap URL too. The newest KEEP_EXPLANATIONS batches stay; older ones are removed
    right after this one is written, while this request still holds the model, so no batch being written
    is ever removed (45 Tests at once answered 26 errors when one request's pruning removed another's
    batch mid-write: issue 40)."""
    explain = importlib.util.find_spec("captum") is not None  # without the explain extra: no heatmaps
    batch = uuid.uuid4().hex[:12]

    def prune() -> None:
        older = [path for path in explanations.iterdir() if path.name != batch]
        for old in sorted(older, key=lambda path: path.stat().st_mtime)[: max(0, len(older) + 1 - KEEP_EXPLANATIONS)]:
            shutil.rmtree(old, ignore_errors=True)

    rows = live.label_photos(run, photos, explanations / batch, then=prune, explain=explain)
    for row in rows:
        if "heatmap" in row:
            row["heatmap"] = f"/api/explanations/{batch}/{row['heatmap']}"
            row["occlusion"] = f"/api/runs/{run.name}/explanations/{batch}/{row.pop('photo_index')}/occlusion"
        for item in row.get("nearest", []):
            item["thumbnail"] = f"/api/explanations/{batch}/{item['thumbnail']}"
    return rows
