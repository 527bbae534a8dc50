"""Folder layouts and their validation: which files are images of which class, in which split.

Two layouts are understood:

    DATA/train/<class>/*  +  DATA/test/<class>/*     a fixed split
    DATA/<class>/*                                    split here: stratified, seeded, --test-fraction

Each split is decoded once (pasture.data.decode) into one uint8 tensor of shape N x 3 x S x S.
Training never touches files again: augmentation works on batches. Bad input is found here, before
any training starts, and reported one line per file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from pasture.core.defaults import DEFAULT_MIN_IMAGE_SIZE, DataOptions, Warn, warn_to_stderr
from pasture.core.errors import UserError
from pasture.core.imagefile import BadImage
from pasture.core.paths import display_name, pasture_made, path_part_problem, printable_name
from pasture.data.decode import decode_many
from pasture.data.groups import SUBFOLDERS, groups_of
from pasture.data.images import Dataset, ImageSet, class_index_map, image_storage, subset_images
from pasture.data.splits import group_split, stratified_split

SPLIT_NAMES = ("train", "test")


# ----------------------------------------------------------------------------------------------
# Folders


def _visible_entries(folder: Path) -> list[Path]:
    # Hidden files (.DS_Store, ._foo.jpg from macOS) are never images a user meant to include.
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def find_class_folders(folder: Path, nested: bool = False) -> dict[str, list[Path]]:
    """{class name: sorted files} for every sub-folder; plain files beside them are ignored. With
    `nested`, the files of each class's own sub-folders (DATA/<class>/<group>/) count too."""
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder; give a folder of class folders or a train/test layout")
    classes = {}
    for entry in _visible_entries(folder):
        if entry.is_dir():
            problem = path_part_problem(entry.name)  # class names are printed, plotted and name output folders
            if problem is not None:
                raise UserError(f"{printable_name(entry)}: class folder name {problem}; rename it")
            made = pasture_made(entry)
            if made is not None:
                raise UserError(
                    f"{printable_name(entry)}: {made}, not a class of photos; move it out of "
                    f"{printable_name(folder)} (pasture writes its outputs outside the data)"
                )
            inside = _visible_entries(entry)
            classes[entry.name] = [p for p in inside if p.is_file()]
            if nested:
                classes[entry.name] += [
                    p for sub in inside if sub.is_dir() for p in _visible_entries(sub) if p.is_file()
                ]
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


def stacked(decoded: list[tuple[torch.Tensor | None, BadImage | None]], rows: list[int]) -> torch.Tensor:
    """The decoded images at `rows` as one tensor (file-backed when large: data.images.image_storage), each
    dropped from `decoded` once copied: the photos are held once while they are stacked, not twice as
    torch.stack of their list held them (5,000 photos at 260 px are 1 GB)."""
    first = decoded[rows[0]][0]
    assert first is not None
    out = image_storage((len(rows), *first.shape))
    for index, row in enumerate(rows):
        image = decoded[row][0]
        assert image is not None  # rows name decoded images only
        out[index] = image
        decoded[row] = (None, None)
    return out


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
    decoded = decode_many(all_paths, image_size, min_image_size)
    rows, labels, files = [], [], []
    cursor = 0
    for label, name in enumerate(classes):
        usable = 0
        for path in files_by_class[name]:
            tensor, error = decoded[cursor]
            cursor += 1
            if tensor is None:
                reason = str(error)
                if strict:
                    raise UserError(f"{printable_name(path)}: {reason}; remove or fix it (or drop --strict to skip it)")
                warn(f"skipping {printable_name(path)}: {reason}")
                skipped.append({"file": display_name(path), "reason": reason})
                continue
            rows.append(cursor - 1)
            labels.append(label)
            files.append(str(path))
            usable += 1
        if usable == 0:
            raise UserError(f"{where / name}: class folder has no usable images; add images or remove the folder")
    return ImageSet(
        images=stacked(decoded, rows),
        labels=torch.tensor(labels, dtype=torch.int64),
        files=files,
        classes=list(classes),
        split=split,
    )


def files_fingerprint(root: Path, paths: Iterable[Path]) -> str:
    """What the data is, by content: every file's relative path and the sha256 of its bytes. It gates the
    reuse of stored runs and resumes, so a photo edited to the same size (a crop, a relabel by swapping
    files) must change it; names and sizes alone did not notice."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        try:
            with open(path, "rb") as handle:
                content = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError:  # unreadable: it is skipped when decoded, and counted as what it is here
            content = "unreadable"
        digest.update(os.fsencode(path.relative_to(root)) + f"\0{content}\n".encode())
    return digest.hexdigest()


def _require_two_classes(classes: list[str], where: Path) -> None:
    if len(classes) < 2:
        found = ", ".join(classes) if classes else "none"
        raise UserError(
            f"{where}: found {len(classes)} class folder(s) ({found}); a classifier needs at least two "
            "class folders such as DATA/cow/ and DATA/horse/"
        )


def load_pool(
    root: str | os.PathLike,
    image_size: int,
    classes: list[str] | None = None,
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE,
    strict: bool = False,
    warn: Warn = warn_to_stderr,
    groups: str | None = None,
    group_column: str = "group",
) -> Dataset:
    """Every image of a DATA/<class>/ layout, unsplit (in `.train`, split "all"), for k-fold and
    leave-one-group-out designs; with `groups` (pasture.data.groups), each image's group is known."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; give the folder that holds your class folders")
    if detect_layout(root) != "class-folders":
        raise UserError(f"{root}: has a fixed train/test split; --folds needs DATA/<class>/ folders")
    files = find_class_folders(root, nested=groups == SUBFOLDERS)
    _require_two_classes(sorted(files), root)
    order = _order_classes(files, classes, str(root))
    skipped: list[dict] = []
    everything = _load_split(files, order, image_size, min_image_size, strict, warn, root, skipped, "all")
    if groups is not None:
        everything.groups = groups_of(everything.files, root, groups, group_column)
    return Dataset(
        root=str(root),
        layout="pool",
        classes=order,
        image_size=image_size,
        train=everything,
        test=None,
        skipped=skipped,
        fingerprint=files_fingerprint(root, [p for group in files.values() for p in group]),
    )


def load_dataset(
    root: str | os.PathLike,
    image_size: int,
    options: DataOptions | None = None,
    warn: Warn = warn_to_stderr,
    **fields,
) -> Dataset:
    """Load a train/test layout, or a folder of class folders split stratified by the options'
    test_fraction. `options` (DataOptions) say how: class order, the split, what is unusable, the photo
    sources; its fields may be given as keywords instead (classes=..., test_fraction=...), as before.

    With `groups` (a CSV or "subfolders", pasture.data.groups) every image's group (photo source) is
    known; `split_by_group` then holds out whole groups for the test split (class folders only), so the
    test accuracy is accuracy on sources the model never saw. Raises UserError (one line, naming the
    file or option) for everything a user can fix.
    """
    options = dataclasses.replace(options or DataOptions(), **fields)
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root}: no such folder; give the folder that holds your class folders")
    if image_size < 1:
        raise UserError(f"--image-size {image_size}: must be a positive number of pixels")
    if not 0.0 < options.test_fraction < 1.0:
        raise UserError(f"--test-fraction {options.test_fraction}: must be between 0 and 1 (exclusive)")
    if options.split_by_group and options.groups is None:
        raise UserError(
            "--split-by-group: say which photos come from which source with --groups FILE.csv or subfolders"
        )
    layout = detect_layout(root) if root.is_dir() else "class-folders"
    skipped: list[dict] = []
    load = _load_train_test if layout == "train/test" else _load_class_folders
    order, train, test, every_file = load(root, image_size, options, warn, skipped)
    return Dataset(
        root=str(root),
        layout=layout,
        classes=order,
        image_size=image_size,
        train=train,
        test=test,
        skipped=skipped,
        fingerprint=files_fingerprint(root, every_file),
    )


def _load_train_test(root: Path, image_size: int, options: DataOptions, warn: Warn, skipped: list):
    """DATA/train/<class>/ and DATA/test/<class>/: (class order, train, test, every file)."""
    if options.split_by_group:
        raise UserError(f"--split-by-group: {root} has a fixed train/test split; give DATA/<class>/ folders")
    nested = options.groups == SUBFOLDERS
    train_files = find_class_folders(root / "train", nested)
    test_files = find_class_folders(root / "test", nested)
    if sorted(train_files) != sorted(test_files):
        raise UserError(
            f"{root}: train has classes {','.join(sorted(train_files)) or '(none)'} but test has "
            f"{','.join(sorted(test_files)) or '(none)'}; both splits need the same class folders"
        )
    _require_two_classes(sorted(train_files), root / "train")
    order = _order_classes(train_files, _classes(options), str(root / "train"))
    size, strict = options.min_image_size, options.strict
    train = _load_split(train_files, order, image_size, size, strict, warn, root / "train", skipped, "train")
    test = _load_split(test_files, order, image_size, size, strict, warn, root / "test", skipped, "test")
    every_file = [p for files in (*train_files.values(), *test_files.values()) for p in files]
    if options.groups is not None:
        train.groups = groups_of(train.files, root / "train" if nested else root, options.groups, options.group_column)
        test.groups = groups_of(test.files, root / "test" if nested else root, options.groups, options.group_column)
        shared = sorted(set(train.groups) & set(test.groups))
        if shared:
            warn(
                f"--groups: {len(shared)} group(s) have photos in both train and test ({', '.join(shared[:3])}"
                f"{', ...' if len(shared) > 3 else ''}); their test photos do not show how the model does on "
                "sources it never saw"
            )
    return order, train, test, every_file


def _load_class_folders(root: Path, image_size: int, options: DataOptions, warn: Warn, skipped: list):
    """DATA/<class>/, split here (stratified, or by group): (class order, train, test, every file)."""
    files = find_class_folders(root, options.groups == SUBFOLDERS)
    _require_two_classes(sorted(files), root)
    order = _order_classes(files, _classes(options), str(root))
    for name in order:
        if len(files[name]) < 2:
            raise UserError(
                f"{root / name}: has {len(files[name])} file(s); splitting into train and test needs "
                "at least 2 images per class"
            )
    everything = _load_split(
        files, order, image_size, options.min_image_size, options.strict, warn, root, skipped, "all"
    )
    for label, name in enumerate(order):
        if int((everything.labels == label).sum()) < 2:
            raise UserError(f"{root / name}: fewer than 2 usable images; a split needs 2 or more per class")
    if options.groups is not None:
        everything.groups = groups_of(everything.files, root, options.groups, options.group_column)
    if options.split_by_group:
        assert everything.groups is not None  # split_by_group is only set with groups
        train_idx, test_idx = group_split(
            everything.labels, everything.groups, options.test_fraction, options.split_seed
        )
    else:
        train_idx, test_idx = stratified_split(everything.labels, options.test_fraction, options.split_seed)
    train, test = subset_images(everything, train_idx, "train"), subset_images(everything, test_idx, "test")
    return order, train, test, [p for group in files.values() for p in group]


def _classes(options: DataOptions) -> list[str] | None:
    return list(options.classes) if options.classes is not None else None


def load_labelled_folder(
    root: str | os.PathLike,
    image_size: int,
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE,
    strict: bool = False,
    warn: Warn = warn_to_stderr,
    groups: str | None = None,
    group_column: str = "group",
) -> tuple[ImageSet, list[dict]]:
    """Images to evaluate on: the test split of a train/test layout, else every image of DATA/<class>/.

    Classes are in alphabetical order here; the caller maps them onto a model's classes by name.
    A single class is allowed (evaluating a model on one class's photos is a fair question). With
    `groups` (a CSV or "subfolders", see pasture.data.groups), each image's group is in `.groups`.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; give a folder of class folders or a train/test layout")
    folder = root / "test" if detect_layout(root) == "train/test" else root
    files = find_class_folders(folder, nested=groups == SUBFOLDERS)
    if not files:
        raise UserError(f"{folder}: holds no class folders; put images in {folder}/<class>/")
    skipped: list[dict] = []
    images = _load_split(files, sorted(files), image_size, min_image_size, strict, warn, folder, skipped, "eval")
    if groups is not None:
        images.groups = groups_of(images.files, folder if groups == SUBFOLDERS else root, groups, group_column)
    return images, skipped


def load_synthetic(
    folder: str | os.PathLike,
    classes: list[str],
    image_size: int,
    warn: Warn = warn_to_stderr,
) -> tuple[ImageSet, str]:
    """Synthetic images in the class-folder layout (`pasture gan sample`'s output), labelled with the
    index of each class name in `classes`. Returns (images, fingerprint)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--synthetic {folder}: no such folder; give the --out of `pasture gan sample`")
    files = find_class_folders(folder)
    if not files:
        raise UserError(f"--synthetic {folder}: holds no class folders; give the --out of `pasture gan sample`")
    names = sorted(files)
    to_training_index = class_index_map(names, classes, f"--synthetic {folder}: class folders")
    images = _load_split(files, names, image_size, 0, False, warn, folder, [], "synthetic")
    images.labels = to_training_index[images.labels]
    images.classes = list(classes)
    return images, files_fingerprint(folder, [p for group in files.values() for p in group])


def decode_files(paths: list[Path], image_size: int) -> torch.Tensor:
    """Decode given files for prediction -> uint8 N x 3 x S x S; any bad file is a UserError."""
    decoded = decode_many(paths, image_size, 0)
    for path, (_, error) in zip(paths, decoded):
        if error is not None:
            raise UserError(error.line(path))
    return stacked(decoded, list(range(len(decoded))))
