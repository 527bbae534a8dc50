"""benchmarks/sources.py: the held-out-source splits must never train on the source they test."""

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import sources  # noqa: E402  (a benchmark script, importable once benchmarks/ is on the path)

from conftest import SHARED_DEV  # noqa: E402
from pasture.data import load_dataset  # noqa: E402

LAYOUT = {  # (split, class) -> sources of its images, in file order
    ("train", "cow"): ["cattle"] * 3,
    ("train", "horse"): ["stable", "stable", "web"],
    ("test", "cow"): ["cattle"] * 2,
    ("test", "horse"): ["stable", "web", "web"],
}


def make_data(root: Path) -> Path:
    rows = ["file,label,source_repo,source_commit,source_path,license_note"]
    for (split, label), repos in LAYOUT.items():
        (root / split / label).mkdir(parents=True)
        for i, repo in enumerate(repos):
            name = f"{split}/{label}/{label}_{split}_{i}.png"
            Image.new("RGB", (20, 20), (40 * i, 100 if label == "cow" else 200, 30)).save(root / name)
            rows.append(f"{name},{label},{repo},0,{name},none")
    (root / "MANIFEST.csv").write_text("\n".join(rows) + "\n")
    return root


def test_held_out_source_plans_keep_the_source_out_of_training(tmp_path):
    data = make_data(tmp_path / "data")
    source_of = sources.read_sources(data)
    full = load_dataset(data, 16, warn=lambda message: None)
    plans = sources.plans(full, source_of)
    assert set(plans) == {"standard", "held-out stable", "held-out web"}
    assert plans["standard"] is full

    def groups(image_set):
        return sorted(f"{image_set.classes[y]}/{source_of[Path(f).relative_to(data).as_posix()]}"
                      for f, y in zip(image_set.files, image_set.labels.tolist()))

    web = plans["held-out web"]
    assert groups(web.train) == ["cow/cattle"] * 3 + ["horse/stable"] * 2  # no web horse trains
    assert groups(web.test) == ["cow/cattle"] * 2 + ["horse/web"] * 3  # every web horse, both folders
    stable = plans["held-out stable"]
    assert groups(stable.train) == ["cow/cattle"] * 3 + ["horse/web"]
    assert groups(stable.test) == ["cow/cattle"] * 2 + ["horse/stable"] * 3
    # Images travel with their labels and files.
    index = web.test.files.index(str(data / "train/horse/horse_train_2.png"))
    assert torch.equal(web.test.images[index], full.train.images[2 + 3])


def test_group_counts_score_each_class_and_source(tmp_path):
    data = make_data(tmp_path / "data")
    source_of = sources.read_sources(data)
    full = load_dataset(data, 16, warn=lambda message: None)
    predicted = torch.tensor([0, 1, 1, 1, 0])  # test: cow, cow, horse(stable), horse(web), horse(web)
    counts = sources.group_counts(full, predicted, source_of)
    assert counts == {"cow/cattle": [1, 2], "horse/stable": [1, 1], "horse/web": [1, 2]}


@pytest.mark.skipif(not SHARED_DEV.is_dir(), reason=f"{SHARED_DEV} not found: needs real photos")
def test_imagenet_zero_shot_reference_tells_real_cows_from_horses():
    test = load_dataset(SHARED_DEV, 224, warn=lambda message: None).test
    pick = torch.cat([torch.nonzero(test.labels == c).flatten()[:8] for c in (0, 1)])
    predicted = sources.imagenet_zero_shot(test.images[pick], test.classes)
    assert predicted.shape == (16,)
    assert (predicted == test.labels[pick]).float().mean() >= 0.75  # untrained: 86-93% per group on all 100
