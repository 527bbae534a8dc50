"""The GAN store: GANs that studies train, one per (preset, seed, training images, device), shared by
every study on this machine (cache_root()/gans) as decoded images are. A GAN condition trains its GAN
on the replicate's training part only; every classifier seed of that part samples from it.

GanLocation says where a task's GAN lives; its folder is named by content (the training images,
labels and class names, not paths), so two studies of the same photos share it. gan_key is the cheap
form of the same identity that engines schedule by (without hashing the images, which are the same
for every run of one study).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pasture.core.defaults import cache_enabled, cache_root
from pasture.core.runs import atomic_write_bytes, atomic_write_json, load_checkpoint
from pasture.core.store import build_once
from pasture.data import ImageSet
from pasture.gan.presets import GanPreset
from pasture.gan.sampling import build_samplers, generate
from pasture.gan.synth import write_class_grids
from pasture.gan.trainer import resize_uint8, train_gan
from pasture.study.design import Replicate, RunTask, content_hash
from pasture.study.inputs import RunInputs, gan_preset_of, task_device
from pasture.study.timings import remember, timing_key

GAN_STORE_FORMAT = 1  # bump when GAN training changes, so stored GANs are not reused


def gan_seed(replicate: Replicate) -> int:
    """GANs are trained once per training split, with the repeat number as seed: on a fixed train/test
    split every classifier seed shares one GAN (as the report had one); each fold has its own."""
    return int(replicate.repeat)


def gan_store_root(out: str) -> Path:
    """Where experiments keep their GANs: the shared cache (cache_root()/gans), so a GAN trained on the
    same images with the same preset, seed and device is trained once for every study on this machine;
    DIR/gans when caching is off (PASTURE_NO_CACHE=1)."""
    return cache_root() / "gans" if cache_enabled() else Path(out) / "gans"


@dataclass(frozen=True)
class GanLocation:
    """A task's GAN: its preset, what it trains on (the replicate's dataset at the preset's size), its
    seed, and its store folder."""

    preset: GanPreset
    dataset: object
    seed: int
    folder: Path

    @property
    def stored(self) -> bool:
        return (self.folder / "summary.json").is_file() and (self.folder / "checkpoint.pt").is_file()


def training_content(dataset) -> str:
    """What a model trained on `dataset` learns from, by content: its training images, labels and class
    names (not paths), so two studies of the same photos share what they train on them."""
    content = hashlib.sha256(dataset.train.images.contiguous().numpy().tobytes())
    content.update(dataset.train.labels.numpy().tobytes() + json.dumps(dataset.classes).encode())
    return content.hexdigest()


def gan_location(task: RunTask, inputs: RunInputs) -> GanLocation:
    """Where the GAN of a GAN task lives (reading the replicate's data at the preset's size)."""
    preset = gan_preset_of(task)
    dataset = inputs.replicate_dataset(task, preset.image_size)
    seed = gan_seed(task.replicate)
    key = content_hash(
        {
            "format": GAN_STORE_FORMAT,
            "preset": preset.to_dict(),
            "seed": seed,
            "train_images": training_content(dataset),
            "device": task_device(task).type,
            "torch": torch.__version__,
        }
    )
    return GanLocation(preset, dataset, seed, gan_store_root(task.out) / key)


def gan_key(task: RunTask) -> str | None:
    """Which GAN a run needs (None: none): runs with the same key share one GAN. Made of what
    gan_location keys by (the resolved preset's content, the seed, the training part), without hashing
    the images: two spellings of one GAN's overrides (ngf=4,iterations=5 and iterations=5,ngf=4) are
    one GAN, with one leader."""
    if not task.condition.gan_preset:
        return None
    replicate = task.replicate
    return content_hash(
        {
            "preset": gan_preset_of(task).to_dict(),
            "seed": gan_seed(replicate),
            "fold": replicate.fold,
            "folds": replicate.folds,
            "group": replicate.group,
        }
    )


def trained_gan(task: RunTask, location: GanLocation, inputs: RunInputs) -> list:
    """The GAN's units, trained now unless stored (or shipped); while another process trains the same
    GAN (another study, or a second --jobs worker), wait for it instead of training it twice."""
    folder = location.folder
    if folder.name in inputs.gans:
        return inputs.gans[folder.name]

    def read() -> list | None:
        return load_checkpoint(folder / "checkpoint.pt")["units"] if location.stored else None

    def train() -> list:
        resume = (folder / "checkpoint.pt").is_file()
        units, summary = train_task_gan(task, location, folder, resume)
        store_gan(task, location, summary, remember_time=not resume)  # a resumed GAN's time is only part of one
        return units

    return build_once(folder, read, train, "GAN")


def train_task_gan(task: RunTask, location: GanLocation, folder: Path, resume: bool = False) -> tuple[list, dict]:
    """Train the GAN of a GAN task into `folder` (checkpoint, log, sample grids); (units, summary)."""
    started = time.perf_counter()
    # The replicate's training part only: the fold's test images never reach the GAN.
    train_part = location.dataset.train  # type: ignore[attr-defined]
    result = train_gan(
        train_part, location.preset, location.seed, out=folder, resume=resume, quiet=True, device=task_device(task)
    )
    write_class_grids(folder, location.preset, train_part.classes, result["units"], location.seed)
    summary = {
        "preset": location.preset.to_dict(),
        "seed": location.seed,
        "diversity_vs_real": result["diversity"],
        "seconds": time.perf_counter() - started,
        "n_train": len(train_part),
    }
    return result["units"], summary


def store_gan(
    task: RunTask,
    location: GanLocation,
    summary: dict,
    files: dict[str, bytes] | None = None,
    remember_time: bool = True,
) -> None:
    """Finish a GAN's store folder: its files (when trained elsewhere), then summary.json, which marks
    it as stored; the time is remembered for study plans."""
    location.folder.mkdir(parents=True, exist_ok=True)
    for name, data in (files or {}).items():
        atomic_write_bytes(location.folder / name, data)
    atomic_write_json(location.folder / "summary.json", summary)
    if remember_time:
        remember("gan", gan_timing_key(task, location), summary["seconds"])


def gan_timing_key(task: RunTask, location: GanLocation) -> str:
    n_train = len(location.dataset.train)  # type: ignore[attr-defined]
    return timing_key({"preset": location.preset.to_dict(), "n_train": n_train}, task_device(task))


def gan_samples(task: RunTask, inputs: RunInputs, image_size: int) -> tuple[ImageSet, str]:
    """Train (or reuse) the replicate's GAN and return (its samples at `image_size`, its store folder):
    the condition's synthetic_per_class per class, drawn with the classifier's seed."""
    location = gan_location(task, inputs)
    units = trained_gan(task, location, inputs)
    classes = location.dataset.classes  # type: ignore[attr-defined]
    samplers = build_samplers(location.preset, len(classes), units, task_device(task))
    generator = torch.Generator().manual_seed(task.replicate.seed)
    images, labels = [], []
    for class_index in range(len(classes)):
        made = generate(location.preset, samplers, class_index, task.condition.synthetic_per_class, generator)
        images.append(resize_uint8(made, image_size))
        labels.append(torch.full((len(made),), class_index, dtype=torch.long))
    synthetic = ImageSet(torch.cat(images), torch.cat(labels), [], classes, split="synthetic")
    return synthetic, str(location.folder)
