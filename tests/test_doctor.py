"""pasture doctor: planted problems are found (duplicates across the split, a colour shortcut, label
flips, single-class sources) and a clean set is not flagged."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import write_class_folders
from PIL import Image

from pasture import api
from pasture.cli import main
from pasture.doctor import checks
from pasture.doctor.checks import close_pairs, near_duplicates
from pasture.doctor.imagestats import jpeg_quality

pytest.importorskip("imagehash")
pytest.importorskip("sklearn")
pytest.importorskip("cleanlab")


@pytest.fixture(autouse=True)
def few_permutations(request, monkeypatch):
    """The shortcut probe's permutation test refits its model 200 times x 5 folds: most of a doctor run
    on these tiny sets. Tests that do not read its p-value use 20 shuffles; the two that do (a planted
    shortcut is flagged, a balanced set is not) are marked `all_permutations` and keep the real 200."""
    if not request.node.get_closest_marker("all_permutations"):
        monkeypatch.setattr(checks, "PERMUTATIONS", 20)


def scene(seed: int, size: int = 64, tint: str | None = None) -> Image.Image:
    """A distinct photo-like image: smooth random colour fields plus fine noise; `tint` shifts a channel."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    pixels = np.asarray(coarse).astype(np.int16) + rng.integers(-12, 12, (size, size, 3))
    if tint is not None:
        pixels[..., {"red": 0, "blue": 2}[tint]] += 70
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_scenes(root, per_class: int, tint_of, start: int = 0) -> None:
    for label in ("cow", "horse"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(start, start + per_class):
            seed = index * 2 + (label == "horse")
            scene(seed, tint=tint_of(label, index)).save(root / label / f"{label}_{index:03d}.png")


# ----------------------------------------------------------------------------------------------
# Near-duplicates


def test_close_pairs_counts_hamming_bits():
    hashes = np.array([0b0000, 0b0111, 0b1111, 0xFF << 40], dtype=np.uint64)  # the last 8+ bits from all
    assert close_pairs(hashes, 1) == [(1, 2, 1)]
    assert close_pairs(hashes, 4) == [(1, 2, 1), (0, 1, 3), (0, 2, 4)]


def test_near_duplicate_kinds_and_inflation():
    far = 0xFFFF << 20  # 16 bits from 0
    hashes = np.array([0, 0, 1, far, far + 1, 0xFFFF << 44], dtype=np.uint64)
    report = near_duplicates(
        hashes,
        labels=[0, 0, 1, 1, 1, 0],
        splits=["train", "test", "train", "train", "test", "test"],
        classes=["cow", "horse"],
        max_distance=2,
    )
    kinds = {(pair["a"], pair["b"]): pair["kind"] for pair in report["pairs"]}
    assert kinds == {(0, 1): "train/test", (0, 2): "label conflict", (1, 2): "label conflict", (3, 4): "train/test"}
    # test images 1 and 4 have a same-class copy in train: 2 of the 3 test images
    assert report["inflation"] == {"test_images_with_train_copy": 2, "n_test": 3, "at_most": 2 / 3}


def test_doctor_finds_planted_duplicates_across_the_split(tmp_path):
    root = tmp_path / "data"
    write_scenes(root / "train", 12, lambda label, index: None)
    write_scenes(root / "test", 8, lambda label, index: None, start=50)
    # A re-encoded, resized copy of a training photo in test, and the same photo under the other class.
    original = Image.open(root / "train" / "cow" / "cow_003.png")
    original.resize((56, 56)).save(root / "test" / "cow" / "copy_of_cow_003.jpg", quality=70)
    shutil.copy(root / "train" / "cow" / "cow_005.png", root / "train" / "horse" / "mislabelled.png")
    report = api.doctor(root, label_model="none")
    pairs = {(report["files"][p["a"]], report["files"][p["b"]]): p["kind"] for p in report["duplicates"]["pairs"]}
    assert pairs == {
        ("train/cow/cow_003.png", "test/cow/copy_of_cow_003.jpg"): "train/test",
        ("train/cow/cow_005.png", "train/horse/mislabelled.png"): "label conflict",
    }
    assert report["duplicates"]["inflation"]["test_images_with_train_copy"] == 1
    assert report["duplicates"]["inflation"]["n_test"] == 17
    checks = [line["check"] for line in report["findings"] if line["level"] == "problem"]
    assert checks.count("duplicates") == 2


# ----------------------------------------------------------------------------------------------
# The shortcut probe


@pytest.mark.slow
@pytest.mark.all_permutations
def test_a_planted_colour_shortcut_is_flagged(tmp_path):
    write_scenes(tmp_path / "data", 30, lambda label, index: "red" if label == "cow" else "blue")
    shortcuts = api.doctor(tmp_path / "data", label_model="none")["shortcuts"]
    assert shortcuts["flagged"] and shortcuts["strong"]
    assert shortcuts["all"]["accuracy"] >= 0.9 and shortcuts["all"]["n"] == 60
    assert shortcuts["best_family"] == "colour"
    assert shortcuts["families"]["size"]["accuracy"] < 0.7  # every image is 64x64 PNG: size says nothing


@pytest.mark.slow
@pytest.mark.all_permutations
def test_a_balanced_set_is_not_flagged(tmp_path):
    # The same tints, but half of each class red and half blue: colour says nothing about the class.
    write_scenes(tmp_path / "data", 30, lambda label, index: "red" if index % 2 else "blue")
    report = api.doctor(tmp_path / "data", label_model="none")
    shortcuts = report["shortcuts"]
    assert not shortcuts["flagged"]
    assert shortcuts["all"]["p_value"] > 0.01 and shortcuts["all"]["chance"] == 0.5
    assert any(line["check"] == "shortcuts" and line["level"] == "ok" for line in report["findings"])


def test_single_class_sources_are_named(tmp_path):
    root = tmp_path / "data"
    write_scenes(root, 10, lambda label, index: None)
    rows = ["file,source"] + [
        f"{label}/{label}_{i:03d}.png,{'farm' if label == 'cow' else ('track' if i < 5 else 'web')}"
        for label in ("cow", "horse")
        for i in range(10)
    ]
    (root / "sources.csv").write_text("\n".join(rows) + "\n")
    report = api.doctor(root, label_model="none", groups=str(root / "sources.csv"), group_column="source")
    check = report["groups_check"]
    assert check["single_class_groups"] == {"farm": "cow", "track": "horse", "web": "horse"}
    assert check["table"]["track"] == {"cow": 0, "horse": 5}
    assert any(
        line["check"] == "groups" and "3 of 3 sources hold one class only" in line["text"]
        for line in report["findings"]
    )


def test_jpeg_quality_is_read_from_the_file(tmp_path):
    for quality in (30, 75, 95):
        scene(1).save(tmp_path / f"q{quality}.jpg", quality=quality)
        with Image.open(tmp_path / f"q{quality}.jpg") as image:
            assert abs(jpeg_quality(image) - quality) <= 2
    scene(1).save(tmp_path / "plain.png")
    with Image.open(tmp_path / "plain.png") as image:
        assert jpeg_quality(image) is None


# ----------------------------------------------------------------------------------------------
# Label errors


def flipped_set(root, per_class: int = 20):
    """conftest's cows and horses, with two photos of each class moved into the other class's folder."""
    write_class_folders(root, {"cow": per_class, "horse": per_class}, size=32)
    flipped = []
    for label, other in (("cow", "horse"), ("horse", "cow")):
        for index in (3, 11):
            name = f"{label}_{index:03d}.png"
            (root / label / name).rename(root / other / name)
            flipped.append(f"{other}/{name}")
    return sorted(flipped)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="needs the pretrained extra")
def test_planted_label_flips_rank_at_the_top_with_the_probe(tmp_path):
    flipped = flipped_set(tmp_path / "data")
    report = api.doctor(tmp_path / "data", label_model="probe")
    issues = report["label_issues"]
    ranked = [report["files"][row["index"]] for row in issues["issues"]]
    assert set(ranked[:3]) <= set(flipped) and len(set(ranked[:4]) & set(flipped)) >= 3
    assert all(row["given_probability"] < 0.5 for row in issues["issues"][:3])
    assert issues["model"] == "probe" and issues["n"] == 40


@pytest.mark.slow
def test_planted_label_flips_are_found_by_a_from_scratch_model(tmp_path):
    flipped = flipped_set(tmp_path / "data")
    report = api.doctor(tmp_path / "data", label_model="scratch")
    ranked = [report["files"][row["index"]] for row in report["label_issues"]["issues"]]
    assert len(set(ranked[:6]) & set(flipped)) >= 3


# ----------------------------------------------------------------------------------------------
# The command


@pytest.mark.slow
def test_doctor_command_writes_the_page_and_json(tmp_path, capsys):
    root = tmp_path / "data"
    write_scenes(root / "train", 8, lambda label, index: None)
    write_scenes(root / "test", 4, lambda label, index: None, start=50)
    Image.open(root / "train" / "cow" / "cow_001.png").save(root / "train" / "cow" / "again.png")
    (root / "train" / "horse" / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "checkup"
    assert main(["doctor", str(root), "--out", str(out), "--label-model", "none", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "1 near-identical pair(s) within a class and split" in printed
    assert "within split: train/cow/again.png" not in printed  # harmless pairs are counted, not listed
    page = (out / "doctor.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= 2 and "train/cow/again.png" in page and "horse/broken.jpg" in page
    stored = json.loads((out / "doctor.json").read_text())
    assert stored["skipped"][0]["file"].endswith("broken.jpg")
    # Runs again into its own folder (a report is replaced), but never into someone else's.
    assert main(["doctor", str(root), "--out", str(out), "--label-model", "none", "--quiet"]) == 0
    assert main(["doctor", str(root), "--out", str(root), "--label-model", "none", "--quiet"]) == 2
    assert "inside the data folder" in capsys.readouterr().err  # its own photos would be read as a class
    assert main(["doctor", str(root), "--json", "--label-model", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 25


def test_doctor_is_reproducible(tmp_path):
    write_scenes(tmp_path / "data", 10, lambda label, index: "red" if index % 3 else None)
    first = api.doctor(tmp_path / "data", label_model="none", seed=4)
    assert api.doctor(tmp_path / "data", label_model="none", seed=4) == first


def test_doctor_without_its_extra_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    write_scenes(tmp_path / "data", 4, lambda label, index: None)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cleanlab" else real(name, *a))
    assert main(["doctor", str(tmp_path / "data"), "--out", str(tmp_path / "out")]) == 2
    assert 'pip install -e ".[doctor]"' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# Strangers: training photos unlike the rest of their class


def test_strangers_are_the_planted_far_rows_of_their_class():
    from pasture.classify.familiarity import strangers_in_class

    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(2, 64, generator=generator) * 3
    labels = torch.tensor([0] * 20 + [1] * 20)
    features = centres[labels] + 0.3 * torch.randn(40, 64, generator=generator)
    features[[4, 27]] = torch.randn(2, 64, generator=generator) * 3  # two photos of something else
    found = strangers_in_class(features, labels)
    assert [row["index"] for row in found["photos"]] in ([4, 27], [27, 4])
    assert found["n_judged"] == 40
    few = strangers_in_class(features[:3], labels[:3])  # a class of 3 photos is not judged
    assert few["n_judged"] == 0 and few["photos"] == []


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="needs the pretrained extra")
def test_doctor_names_a_planted_stranger_in_its_class(tmp_path, capsys):
    root = tmp_path / "data"
    write_class_folders(root, {"cow": 12, "horse": 12}, size=32)
    yy, xx = np.mgrid[0:32, 0:32]
    checker = ((xx // 4 + yy // 4) % 2 * 255).astype(np.uint8)
    Image.fromarray(np.stack([checker] * 3, -1)).save(root / "cow" / "checkerboard.png")
    assert main(["doctor", str(root), "--label-model", "probe", "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "unlike the rest of their class" in out and "stranger in cow: cow/checkerboard.png" in out
    report = json.loads((tmp_path / "report" / "doctor.json").read_text())
    assert report["files"][report["strangers"]["photos"][0]["index"]] == "cow/checkerboard.png"
    assert "Unlike the rest of their class" in (tmp_path / "report" / "doctor.html").read_text()
