from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image, write_class_folders
from PIL import Image

from pasture.core.errors import UserError
from pasture.data import decode_image_and_size, load_dataset, load_labelled_folder, stratified_split, validation_split


def collect(messages):
    return lambda message: messages.append(message)


def test_train_test_layout_loads_uint8_tensors(split_data):
    dataset = load_dataset(split_data, 20)
    assert dataset.layout == "train/test"
    assert dataset.classes == ["cow", "horse"]
    assert dataset.train.images.shape == (16, 3, 20, 20) and dataset.train.images.dtype == torch.uint8
    assert dataset.test.images.shape == (12, 3, 20, 20)
    assert dataset.train.counts() == {"cow": 8, "horse": 8}
    assert dataset.summary()["test_counts"] == {"cow": 6, "horse": 6}


def test_class_folder_layout_is_split_stratified_and_seeded(flat_data):
    first = load_dataset(flat_data, 16, test_fraction=0.3, split_seed=5)
    again = load_dataset(flat_data, 16, test_fraction=0.3, split_seed=5)
    other = load_dataset(flat_data, 16, test_fraction=0.3, split_seed=6)
    assert first.layout == "class-folders"
    assert first.test.counts() == {"cow": 3, "horse": 3}
    assert first.train.counts() == {"cow": 7, "horse": 7}
    assert first.test.files == again.test.files
    assert first.test.files != other.test.files
    assert not set(first.train.files) & set(first.test.files)


def test_default_split_is_half(flat_data):
    dataset = load_dataset(flat_data, 16)
    assert len(dataset.train) == len(dataset.test) == 10


def test_stratified_split_keeps_one_of_each_class_per_side():
    labels = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1])
    train_idx, test_idx = stratified_split(labels, 0.9, seed=0)
    assert sorted(labels[test_idx].tolist()).count(0) == 1  # class 0 keeps one training image
    assert 0 in labels[train_idx].tolist() and 1 in labels[train_idx].tolist()


def test_validation_split_never_touches_test(split_data):
    dataset = load_dataset(split_data, 16)
    folds = validation_split(dataset, 0.25, seed=0)
    assert set(folds.train.files) | set(folds.test.files) == set(dataset.train.files)
    assert not set(folds.test.files) & set(dataset.test.files)


def test_classes_option_fixes_order(split_data):
    dataset = load_dataset(split_data, 16, classes=["horse", "cow"])
    assert dataset.classes == ["horse", "cow"]
    assert dataset.train.labels[:8].tolist() == [0] * 8  # horse images come first, labelled 0
    assert all("/horse/" in name for name in dataset.train.files[:8])


def test_classes_option_must_name_each_folder(split_data):
    with pytest.raises(UserError, match="--classes"):
        load_dataset(split_data, 16, classes=["horse", "sheep"])


def test_corrupt_and_non_image_files_are_skipped_with_a_warning(split_data):
    (split_data / "train" / "cow" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (split_data / "train" / "horse" / "notes.txt").write_text("hello")
    messages = []
    dataset = load_dataset(split_data, 16, warn=collect(messages))
    assert len(dataset.train) == 16
    assert len(messages) == 2
    assert any("broken.jpg" in message for message in messages)
    assert {Path(entry["file"]).name for entry in dataset.skipped} == {"broken.jpg", "notes.txt"}


def test_truncated_image_is_unusable(split_data, tmp_path):
    path = split_data / "train" / "cow" / "cut.jpg"
    buffer = tmp_path / "full.jpg"
    make_image("cow", 1, 64).save(buffer, quality=95)
    path.write_bytes(buffer.read_bytes()[:300])
    with pytest.raises(UserError, match="cut.jpg"):
        load_dataset(split_data, 16, strict=True)


def test_strict_makes_a_bad_file_an_error(split_data):
    (split_data / "train" / "cow" / "broken.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"broken\.png.*--strict"):
        load_dataset(split_data, 16, strict=True)


def test_empty_class_folder_is_an_error(split_data):
    (split_data / "train" / "sheep").mkdir()
    (split_data / "test" / "sheep").mkdir()
    with pytest.raises(UserError, match="sheep.*no usable images"):
        load_dataset(split_data, 16)


def test_class_folder_of_only_bad_files_is_an_error(split_data):
    for path in (split_data / "test" / "horse").iterdir():
        path.write_bytes(b"not an image")
    with pytest.raises(UserError, match="horse.*no usable images"):
        load_dataset(split_data, 16, warn=lambda message: None)


def test_single_class_is_an_error(tmp_path):
    write_class_folders(tmp_path / "one", {"cow": 4})
    with pytest.raises(UserError, match="at least two"):
        load_dataset(tmp_path / "one", 16)


def test_train_test_class_mismatch_is_an_error(split_data):
    write_class_folders(split_data / "test", {"sheep": 2})
    with pytest.raises(UserError, match="train has classes cow,horse but test has cow,horse,sheep"):
        load_dataset(split_data, 16)


def test_train_without_test_is_an_error(tmp_path):
    write_class_folders(tmp_path / "d" / "train", {"cow": 2, "horse": 2})
    with pytest.raises(UserError, match="no test/"):
        load_dataset(tmp_path / "d", 16)


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        load_dataset(tmp_path / "absent", 16)


def test_too_few_images_to_split(tmp_path):
    write_class_folders(tmp_path / "d", {"cow": 1, "horse": 4})
    with pytest.raises(UserError, match="at least 2 images"):
        load_dataset(tmp_path / "d", 16)


def test_images_below_the_minimum_size_are_skipped_or_fatal(split_data):
    make_image("cow", 7, 10).save(split_data / "train" / "cow" / "tiny.png")
    messages = []
    dataset = load_dataset(split_data, 16, min_image_size=16, warn=collect(messages))
    assert len(dataset.train) == 16 and "tiny.png" in messages[0] and "10x10" in messages[0]
    with pytest.raises(UserError, match="tiny.png.*smaller than the minimum"):
        load_dataset(split_data, 16, min_image_size=16, strict=True)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    make_image("cow", 0, 64).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64*64 > 2 * 1000: Pillow raises
    from pasture.data import BadImage

    with pytest.raises(BadImage, match="decompression-bomb"):
        decode_image_and_size(path, 16)[0]


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1"])
def test_every_pillow_mode_becomes_rgb(tmp_path, mode):
    base = make_image("horse", 3, 20)
    image = (
        base.convert(mode) if mode != "I;16" else Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    )
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    image.save(path)
    tensor = decode_image_and_size(path, 12)[0]
    assert tensor.shape == (3, 12, 12) and tensor.dtype == torch.uint8
    if mode == "I;16":  # 16-bit values are scaled to 8 bits, not clipped to white
        assert 0 < int(tensor.float().mean()) < 250


def test_transparent_pixels_become_white(tmp_path):
    image = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    image.save(tmp_path / "clear.png")
    assert decode_image_and_size(tmp_path / "clear.png", 8)[0].min() == 255


def test_exif_orientation_is_applied(tmp_path):
    wide = Image.new("RGB", (40, 20), (0, 0, 0))
    wide.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    wide.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    tensor = decode_image_and_size(tmp_path / "rotated.jpg", 20)[0].float()
    # Displayed upright the image is 20 wide x 40 tall with the white half on top; the centre crop
    # keeps rows 10-30, so the top half of the crop is white and the bottom black.
    assert tensor[:, :8].mean() > 200 and tensor[:, -8:].mean() < 50


def test_evaluation_folder_uses_the_test_split_of_a_train_test_layout(split_data):
    images, skipped = load_labelled_folder(split_data, 16)
    assert len(images) == 12 and all("/test/" in name for name in images.files) and skipped == []


def test_hidden_files_are_ignored(split_data):
    (split_data / "train" / "cow" / ".DS_Store").write_bytes(b"\x00\x01")
    messages = []
    load_dataset(split_data, 16, warn=collect(messages))
    assert messages == []


def test_decoded_images_are_cached_and_a_changed_file_is_decoded_again(split_data, monkeypatch):
    import pasture.data.decode as data_module

    calls = []
    real = data_module.decode_image_and_size

    def counting(path, *args, **kwargs):
        calls.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(data_module, "decode_image_and_size", counting)
    first = load_dataset(split_data, 16)
    assert len(calls) == 28
    calls.clear()
    again = load_dataset(split_data, 16)
    assert calls == [] and torch.equal(first.train.images, again.train.images)
    changed = split_data / "train" / "cow" / "cow_000.png"
    make_image("horse", 77).save(changed)
    third = load_dataset(split_data, 16)
    assert calls == ["cow_000.png"] and not torch.equal(third.train.images[0], first.train.images[0])
    calls.clear()
    load_dataset(split_data, 12)  # another size is another entry
    assert len(calls) == 28
    # a cached image still obeys --min-image-size (24 px originals)
    with pytest.raises(UserError, match="smaller than the minimum"):
        load_dataset(split_data, 16, min_image_size=30, strict=True)


def test_a_photo_edited_to_the_same_size_changes_the_fingerprint(split_data, tmp_path):
    from pasture import api

    before = load_dataset(split_data, 16).fingerprint
    photo = sorted((split_data / "train" / "cow").iterdir())[0]
    data = bytearray(photo.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes (a crop or an edit saved over the file)
    photo.write_bytes(bytes(data))
    assert load_dataset(split_data, 16, strict=False).fingerprint != before
    # so a stored run of the old photos is not reused for the new ones
    study = tmp_path / "study"
    api.experiment(
        split_data, study, conditions=["a:recipe=default,epochs=1,image_size=16"], seeds=1, quiet=True, jobs=1
    )
    photo.write_bytes(bytes(data[:-1]) + bytes([data[-1] ^ 0x01]))
    again = api.experiment(
        split_data, study, conditions=["a:recipe=default,epochs=1,image_size=16"], seeds=1, quiet=True, jobs=1
    )
    assert again["runs_computed"] == 1


def test_data_options_survive_the_round_trip_through_a_runs_identity():
    """export reads a run's data again from its identity: the same options, with no literals of its own."""
    from types import SimpleNamespace

    from pasture.core.defaults import DataOptions

    options = DataOptions(
        classes=("horse", "cow"),
        test_fraction=0.3,
        split_seed=5,
        min_image_size=20,
        groups="subfolders",
        group_column="source",
        split_by_group=True,
    )
    split_here = SimpleNamespace(layout="class-folders", fingerprint="f", classes=["horse", "cow"])
    assert DataOptions.from_identity(options.identity("/data", split_here)) == options
    fixed_split = SimpleNamespace(layout="train/test", fingerprint="f", classes=["cow", "horse"])
    assert DataOptions.from_identity(DataOptions(split_seed=9).identity("/data", fixed_split)) == DataOptions(
        classes=("cow", "horse")
    )


def test_load_dataset_takes_its_options_as_one_object_or_as_keywords(flat_data):
    """Issue 44: load_dataset(root, size, DataOptions(...)) instead of its fields spread by hand in four
    places; the keywords of before still work, and a keyword overrides the object's field."""
    from pasture.core.defaults import DataOptions
    from pasture.data import load_dataset

    options = DataOptions(classes=("horse", "cow"), test_fraction=0.3, split_seed=2)
    one = load_dataset(flat_data, 16, options, warn=lambda message: None)
    two = load_dataset(flat_data, 16, classes=["horse", "cow"], test_fraction=0.3, split_seed=2, warn=lambda m: None)
    assert one.classes == two.classes == ["horse", "cow"]
    assert one.train.files == two.train.files and one.test.files == two.test.files
    other = load_dataset(flat_data, 16, options, warn=lambda message: None, split_seed=5)
    assert other.test.files != one.test.files and len(other.test) == len(one.test)


def test_decoded_photos_are_stacked_in_place_of_their_list():
    """stacked copies each decoded photo into one tensor and drops it from the list as it goes (the list
    and torch.stack of it held every photo twice: 1 GB more for 5,000 photos at 260 px)."""
    import torch

    from pasture.data.layouts import stacked

    images = [torch.full((3, 4, 4), value, dtype=torch.uint8) for value in range(5)]
    decoded = [(image, None) for image in images]
    decoded[2] = (None, None)  # an unusable file: not among the rows
    out = stacked(decoded, [0, 1, 3, 4])
    assert torch.equal(out, torch.stack([images[0], images[1], images[3], images[4]]))
    assert all(image is None for image, _ in decoded)


def _backing_file(tensor: torch.Tensor) -> str | None:
    """The file behind a tensor's memory (/proc/self/maps), or None for anonymous memory."""
    address = tensor.untyped_storage().data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        low, high = (int(part, 16) for part in fields[0].split("-"))
        if low <= address < high:
            return fields[5] if len(fields) > 5 and fields[5].startswith("/") else None
    return None


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads Linux's /proc/self/maps")
def test_large_splits_are_file_backed_and_train_the_same(flat_data, tmp_path, monkeypatch):
    """Above MAPPED_BYTES a split's photos live in a file-backed map under the cache folder (the kernel can
    page them out: a large training set need not fit in RAM); what is trained from them is the same."""
    from pasture import api
    from pasture.data import images

    in_memory = load_dataset(flat_data, 24)
    assert _backing_file(in_memory.train.images) is None
    monkeypatch.setattr(images, "MAPPED_BYTES", 0)
    mapped = load_dataset(flat_data, 24)  # class folders: stacked, then split by copying
    for split, memory in ((mapped.train, in_memory.train), (mapped.test, in_memory.test)):
        assert "/mapped/" in (_backing_file(split.images) or "")
        assert torch.equal(split.images, memory.images) and split.files == memory.files
    settings = dict(recipe="probe", image_size=48, quiet=True)
    from_map = api.train(flat_data, tmp_path / "mapped", **settings)
    monkeypatch.setattr(images, "MAPPED_BYTES", 2**62)
    from_memory = api.train(flat_data, tmp_path / "memory", **settings)
    assert (
        from_map["test_accuracy"] == from_memory["test_accuracy"] and from_map["confusion"] == from_memory["confusion"]
    )


def test_a_full_disk_keeps_the_photos_in_memory(flat_data, monkeypatch):
    """The map's blocks are reserved before any is written: no room means memory, not a SIGBUS later."""
    import errno
    import os

    from pasture.data import images

    def no_room(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images, "MAPPED_BYTES", 0)
    monkeypatch.setattr(os, "posix_fallocate", no_room, raising=False)
    loaded = load_dataset(flat_data, 24)
    assert loaded.train.images.shape == (10, 3, 24, 24) and int(loaded.train.images.sum()) > 0
