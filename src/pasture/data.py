"""Folder layouts, validation of bad input, decoding once into uint8 tensors, stratified splits.

Two layouts are understood:

    DATA/train/<class>/*  +  DATA/test/<class>/*     a fixed split
    DATA/<class>/*                                    split here: stratified, seeded, --test-fraction

Every image is decoded once with Pillow (EXIF orientation applied, converted to RGB, resized so its
shorter side is `image_size`, then centre-cropped to a square) and held in memory as one uint8 tensor
of shape N x 3 x S x S per split. Training never touches files again: augmentation works on batches.

Bad input is found here, before any training starts, and reported one line per file.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from pasture.defaults import DEFAULT_MIN_IMAGE_SIZE, DEFAULT_TEST_FRACTION, Warn, warn_to_stderr
from pasture.errors import UserError

# Only used to pick images out of a folder given to `predict`; class folders try every file.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SPLIT_NAMES = ("train", "test")


class BadImage(Exception):
    """A file that cannot be used as an image; the message says why."""


@dataclass
class ImageSet:
    """Decoded images of one split. `images` is uint8 N x 3 x S x S, `labels` int64 N."""

    images: torch.Tensor
    labels: torch.Tensor
    files: list[str]
    classes: list[str]
    split: str = "train"  # "train", "test", "validation" or "eval": GANs accept only "train"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def counts(self) -> dict[str, int]:
        per_class = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, per_class))


@dataclass
class Dataset:
    """A train split and (usually) a test split, with what was skipped on the way."""

    root: str
    layout: str  # "train/test" or "class-folders"
    classes: list[str]
    image_size: int
    train: ImageSet
    test: ImageSet | None
    skipped: list[dict] = field(default_factory=list)  # {"file":..., "reason":...}
    fingerprint: str = ""  # sha256 over (relative path, byte size) of every file read

    def summary(self) -> dict:
        return {
            "root": self.root,
            "layout": self.layout,
            "classes": self.classes,
            "image_size": self.image_size,
            "train_counts": self.train.counts(),
            "test_counts": self.test.counts() if self.test is not None else None,
            "n_train": len(self.train),
            "n_test": len(self.test) if self.test is not None else 0,
            "skipped": self.skipped,
            "fingerprint": self.fingerprint,
        }


# ----------------------------------------------------------------------------------------------
# Decoding


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Transparent pixels are composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: rescale to 8 bits from the range the values actually use.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
        image = Image.fromarray(scaled.astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _too_small(width: int, height: int, min_image_size: int) -> BadImage:
    return BadImage(f"is {width}x{height} px, smaller than the minimum of {min_image_size} px (--min-image-size)")


def decode_image_and_size(
    path: str | os.PathLike, image_size: int, min_image_size: int = 0,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Read one image file -> (uint8 tensor 3 x image_size x image_size, original (width, height)).

    Raises BadImage."""
    try:
        with Image.open(path) as opened:
            opened.load()
            width, height = opened.size
            if min(width, height) < min_image_size:
                raise _too_small(width, height, min_image_size)
            image = _to_rgb(ImageOps.exif_transpose(opened))
    except BadImage:
        raise
    except Image.DecompressionBombError as error:
        raise BadImage(f"exceeds Pillow's decompression-bomb pixel limit ({error})") from None
    except UnidentifiedImageError:
        raise BadImage("is not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt data
        raise BadImage(f"could not be decoded ({error})") from None
    square = ImageOps.fit(image, (image_size, image_size), method=Image.Resampling.BICUBIC)
    array = np.asarray(square, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous(), (width, height)


def decode_image(path: str | os.PathLike, image_size: int, min_image_size: int = 0) -> torch.Tensor:
    """Read one image file -> uint8 tensor 3 x image_size x image_size. Raises BadImage."""
    return decode_image_and_size(path, image_size, min_image_size)[0]


DECODE_CACHE_FORMAT = "v1"  # bump when decoding changes, so old cache entries are not reused


def _cached_decode(path: Path, image_size: int, min_image_size: int) -> torch.Tensor:
    """decode_image through a disk cache keyed by the file's bytes and the output size.

    Experiments decode the same photos in every run and process; a cache hit costs one file hash and
    one small read. A changed file has another hash, so stale entries are never used; a damaged entry
    is decoded again. Bad images are not cached (their error is recomputed, cheaply)."""
    import hashlib

    from pasture.defaults import cache_enabled, cache_root

    if not cache_enabled():
        return decode_image_and_size(path, image_size, min_image_size)[0]
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as error:
        raise BadImage(f"could not be read ({error.strerror})") from None
    entry = cache_root() / "decoded" / digest[:2] / f"{digest}_{image_size}_{DECODE_CACHE_FORMAT}.pt"
    if entry.is_file():
        try:
            cached = torch.load(entry, map_location="cpu", weights_only=True)
            if min(cached["width"], cached["height"]) < min_image_size:
                raise _too_small(cached["width"], cached["height"], min_image_size)
            return cached["image"]
        except BadImage:
            raise
        except Exception:
            pass  # damaged entry: decode again below
    image, (width, height) = decode_image_and_size(path, image_size, min_image_size)
    try:
        from pasture.runs import atomic_torch_save

        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"image": image, "width": width, "height": height}, entry)
    except OSError:
        pass  # an unwritable cache only costs time
    return image


def _decode_many(paths: list[Path], image_size: int, min_image_size: int):
    """Decode in a small thread pool (Pillow releases the GIL). Returns [(tensor|None, reason)]."""

    def one(path: Path):
        try:
            return _cached_decode(path, image_size, min_image_size), ""
        except BadImage as error:
            return None, str(error)

    workers = max(1, min(4, os.cpu_count() or 1))
    if len(paths) < 8:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, paths))


# ----------------------------------------------------------------------------------------------
# Folders


def _visible_entries(folder: Path) -> list[Path]:
    # Hidden files (.DS_Store, ._foo.jpg from macOS) are never images a user meant to include.
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def find_class_folders(folder: Path) -> dict[str, list[Path]]:
    """{class name: sorted files} for every sub-folder; plain files beside them are ignored."""
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder; give a folder of class folders or a train/test layout")
    classes = {}
    for entry in _visible_entries(folder):
        if entry.is_dir():
            classes[entry.name] = [p for p in _visible_entries(entry) if p.is_file()]
    return classes


def detect_layout(root: Path) -> str:
    """'train/test' when DATA holds train/ and test/ folders, else 'class-folders'."""
    has = {name: (root / name).is_dir() for name in SPLIT_NAMES}
    if all(has.values()):
        return "train/test"
    if has["train"] and not has["test"]:
        # A lone train/ is almost always a half-copied layout, not a class called "train".
        raise UserError(f"{root}: has train/ but no test/; add test/<class>/ folders or use DATA/<class>/")
    return "class-folders"


def _order_classes(found: Iterable[str], requested: list[str] | None, where: str) -> list[str]:
    found = sorted(found)
    if requested is None:
        return found
    if len(set(requested)) != len(requested):
        raise UserError(f"--classes: a class is named twice in {','.join(requested)}")
    if sorted(requested) != found:
        raise UserError(
            f"--classes: names {','.join(requested)} but {where} has class folders "
            f"{','.join(found) or '(none)'}; name each class folder exactly once"
        )
    return list(requested)


def _load_split(
    files_by_class: dict[str, list[Path]],
    classes: list[str],
    image_size: int,
    min_image_size: int,
    strict: bool,
    warn: Warn,
    where: Path,
    skipped: list[dict],
    split: str,
) -> ImageSet:
    """Decode every file of each class; bad files are skipped with a warning, or fatal if strict."""
    all_paths = [path for name in classes for path in files_by_class[name]]
    decoded = _decode_many(all_paths, image_size, min_image_size)
    images, labels, files = [], [], []
    cursor = 0
    for label, name in enumerate(classes):
        usable = 0
        for path in files_by_class[name]:
            tensor, reason = decoded[cursor]
            cursor += 1
            if tensor is None:
                if strict:
                    raise UserError(f"{path}: {reason}; remove or fix it (or drop --strict to skip it)")
                warn(f"skipping {path}: {reason}")
                skipped.append({"file": str(path), "reason": reason})
                continue
            images.append(tensor)
            labels.append(label)
            files.append(str(path))
            usable += 1
        if usable == 0:
            raise UserError(
                f"{where / name}: class folder has no usable images; add images or remove the folder"
            )
    return ImageSet(
        images=torch.stack(images),
        labels=torch.tensor(labels, dtype=torch.int64),
        files=files,
        classes=list(classes),
        split=split,
    )


def _fingerprint(root: Path, paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(f"{path.relative_to(root)}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def _require_two_classes(classes: list[str], where: Path) -> None:
    if len(classes) < 2:
        found = ", ".join(classes) if classes else "none"
        raise UserError(
            f"{where}: found {len(classes)} class folder(s) ({found}); a classifier needs at least two "
            "class folders such as DATA/cow/ and DATA/horse/"
        )


def stratified_split(labels: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, test) with each class split in the same proportion, seeded.

    Every class keeps at least one image on each side, so it needs two or more images.
    """
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels.numpy() == label)
        members = members[rng.permutation(len(members))]
        n_test = int(round(len(members) * test_fraction))
        n_test = min(max(n_test, 1), len(members) - 1)
        test_idx.extend(members[:n_test].tolist())
        train_idx.extend(members[n_test:].tolist())
    return torch.tensor(sorted(train_idx)), torch.tensor(sorted(test_idx))


def stratified_folds(labels: torch.Tensor, folds: int, seed: int) -> list[torch.Tensor]:
    """Test indices of `folds` disjoint, stratified folds covering every image (seeded).

    Each class is shuffled and dealt round-robin, so fold sizes per class differ by at most one.
    """
    if folds < 2:
        raise UserError(f"--folds {folds}: needs at least 2 folds")
    rng = np.random.default_rng(seed)
    members_of_fold: list[list[int]] = [[] for _ in range(folds)]
    offset = 0
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels.numpy() == label)
        if len(members) < folds:
            raise UserError(f"--folds {folds}: a class has only {len(members)} images; use at most that many folds")
        for position, index in enumerate(members[rng.permutation(len(members))]):
            members_of_fold[(position + offset) % folds].append(int(index))
        offset += len(members)  # start the next class where this one stopped, to balance fold sizes
    return [torch.tensor(sorted(fold)) for fold in members_of_fold]


def fold_dataset(pool: "Dataset", test_indices: torch.Tensor) -> "Dataset":
    """A Dataset whose test split is `test_indices` of the pool and whose train split is the rest."""
    everything = pool.train
    is_test = torch.zeros(len(everything), dtype=torch.bool)
    is_test[test_indices] = True
    return Dataset(
        root=pool.root, layout="fold", classes=pool.classes, image_size=pool.image_size,
        train=subset_images(everything, torch.nonzero(~is_test).flatten(), "train"),
        test=subset_images(everything, torch.nonzero(is_test).flatten(), "test"),
        skipped=pool.skipped, fingerprint=pool.fingerprint,
    )


def load_pool(
    root: str | os.PathLike, image_size: int, classes: list[str] | None = None,
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE, strict: bool = False, warn: Warn = warn_to_stderr,
) -> "Dataset":
    """Every image of a DATA/<class>/ layout, unsplit (in `.train`, split "all"), for k-fold designs."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; give the folder that holds your class folders")
    if detect_layout(root) != "class-folders":
        raise UserError(f"{root}: has a fixed train/test split; --folds needs DATA/<class>/ folders")
    files = find_class_folders(root)
    _require_two_classes(sorted(files), root)
    order = _order_classes(files, classes, str(root))
    skipped: list[dict] = []
    everything = _load_split(files, order, image_size, min_image_size, strict, warn, root, skipped, "all")
    return Dataset(root=str(root), layout="pool", classes=order, image_size=image_size, train=everything,
                   test=None, skipped=skipped,
                   fingerprint=_fingerprint(root, [p for group in files.values() for p in group]))


def subset_images(images: ImageSet, indices: torch.Tensor, split: str) -> ImageSet:
    """The images (with labels and files) at `indices`, as a split named `split`."""
    return ImageSet(
        images=images.images[indices],
        labels=images.labels[indices],
        files=[images.files[i] for i in indices.tolist()],
        classes=images.classes,
        split=split,
    )


def validation_split(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """A Dataset whose train/test are a stratified split of `dataset.train` alone.

    For choosing recipes and settings: the real test split is never looked at.
    """
    train_idx, val_idx = stratified_split(dataset.train.labels, fraction, seed)
    return Dataset(
        root=dataset.root,
        layout="validation",
        classes=dataset.classes,
        image_size=dataset.image_size,
        train=subset_images(dataset.train, train_idx, "train"),
        test=subset_images(dataset.train, val_idx, "validation"),
        skipped=dataset.skipped,
        fingerprint=dataset.fingerprint,
    )


def load_dataset(
    root: str | os.PathLike,
    image_size: int,
    classes: list[str] | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    split_seed: int = 0,
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE,
    strict: bool = False,
    warn: Warn = warn_to_stderr,
) -> Dataset:
    """Load a train/test layout, or a folder of class folders split stratified by `test_fraction`.

    Raises UserError (one line, naming the file or option) for everything a user can fix.
    """
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root}: no such folder; give the folder that holds your class folders")
    if image_size < 1:
        raise UserError(f"--image-size {image_size}: must be a positive number of pixels")
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"--test-fraction {test_fraction}: must be between 0 and 1 (exclusive)")
    layout = detect_layout(root) if root.is_dir() else "class-folders"
    skipped: list[dict] = []
    if layout == "train/test":
        train_files = find_class_folders(root / "train")
        test_files = find_class_folders(root / "test")
        if sorted(train_files) != sorted(test_files):
            raise UserError(
                f"{root}: train has classes {','.join(sorted(train_files)) or '(none)'} but test has "
                f"{','.join(sorted(test_files)) or '(none)'}; both splits need the same class folders"
            )
        _require_two_classes(sorted(train_files), root / "train")
        order = _order_classes(train_files, classes, str(root / "train"))
        train = _load_split(train_files, order, image_size, min_image_size, strict, warn, root / "train", skipped,
                            "train")
        test = _load_split(test_files, order, image_size, min_image_size, strict, warn, root / "test", skipped,
                           "test")
        every_file = [p for files in (*train_files.values(), *test_files.values()) for p in files]
    else:
        files = find_class_folders(root)
        _require_two_classes(sorted(files), root)
        order = _order_classes(files, classes, str(root))
        for name in order:
            if len(files[name]) < 2:
                raise UserError(
                    f"{root / name}: has {len(files[name])} file(s); splitting into train and test needs "
                    "at least 2 images per class"
                )
        everything = _load_split(files, order, image_size, min_image_size, strict, warn, root, skipped, "all")
        for label, name in enumerate(order):
            if int((everything.labels == label).sum()) < 2:
                raise UserError(f"{root / name}: fewer than 2 usable images; a split needs 2 or more per class")
        train_idx, test_idx = stratified_split(everything.labels, test_fraction, split_seed)
        train, test = subset_images(everything, train_idx, "train"), subset_images(everything, test_idx, "test")
        every_file = [p for group in files.values() for p in group]
    return Dataset(
        root=str(root),
        layout=layout,
        classes=order,
        image_size=image_size,
        train=train,
        test=test,
        skipped=skipped,
        fingerprint=_fingerprint(root, every_file),
    )


def load_labelled_folder(
    root: str | os.PathLike,
    image_size: int,
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE,
    strict: bool = False,
    warn: Warn = warn_to_stderr,
) -> tuple[ImageSet, list[dict]]:
    """Images to evaluate on: the test split of a train/test layout, else every image of DATA/<class>/.

    Classes are in alphabetical order here; the caller maps them onto a model's classes by name.
    A single class is allowed (evaluating a model on one class's photos is a fair question).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; give a folder of class folders or a train/test layout")
    folder = root / "test" if detect_layout(root) == "train/test" else root
    files = find_class_folders(folder)
    if not files:
        raise UserError(f"{folder}: holds no class folders; put images in {folder}/<class>/")
    skipped: list[dict] = []
    images = _load_split(files, sorted(files), image_size, min_image_size, strict, warn, folder, skipped, "eval")
    return images, skipped


def load_synthetic(
    folder: str | os.PathLike, classes: list[str], image_size: int, warn: Warn = warn_to_stderr,
) -> tuple[ImageSet, str]:
    """Synthetic images in the class-folder layout (`pasture gan sample`'s output), labelled with the
    index of each class name in `classes`. Returns (images, fingerprint)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--synthetic {folder}: no such folder; give the --out of `pasture gan sample`")
    files = find_class_folders(folder)
    if not files:
        raise UserError(f"--synthetic {folder}: holds no class folders; give the --out of `pasture gan sample`")
    unknown = sorted(name for name in files if name not in classes)
    if unknown:
        raise UserError(f"--synthetic {folder}: class folder(s) {', '.join(unknown)} are not training classes "
                        f"({', '.join(classes)})")
    skipped: list[dict] = []
    names = sorted(files)
    images = _load_split(files, names, image_size, 0, False, warn, folder, skipped, "synthetic")
    to_training_index = torch.tensor([classes.index(name) for name in names])
    images.labels = to_training_index[images.labels]
    images.classes = list(classes)
    return images, _fingerprint(folder, [p for group in files.values() for p in group])


def image_files_in(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (recursively, by image suffix) into a sorted list of image files."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            inside = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
            if not inside:
                raise UserError(f"{path}: folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    return found


def decode_files(paths: list[Path], image_size: int) -> torch.Tensor:
    """Decode given files for prediction -> uint8 N x 3 x S x S; any bad file is a UserError."""
    decoded = _decode_many(paths, image_size, 0)
    for path, (tensor, reason) in zip(paths, decoded):
        if tensor is None:
            raise UserError(f"{path}: {reason}; give image files only")
    return torch.stack([tensor for tensor, _ in decoded])
