"""benchmarks/sources.py: the held-out-source layouts never train on the source they test, and the
figures come from the runs' own per-group scores."""

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import sources
from conftest import SHARED_DEV

from pasture import api
from pasture.data import load_dataset

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


def sources_in(root: Path, split: str) -> list[str]:
    data = load_dataset(root, 16, warn=lambda message: None, groups=str(root / "groups.csv"))
    images = data.train if split == "train" else data.test
    return sorted(f"{images.classes[y]}/{g}" for y, g in zip(images.labels.tolist(), images.groups))


def test_held_out_source_layouts_keep_the_source_out_of_training(tmp_path):
    data = make_data(tmp_path / "data")
    layouts = sources.plans(data, sources.read_manifest(data), tmp_path / "scratch")
    assert set(layouts) == {"standard", "held-out stable", "held-out web"}
    assert sources_in(layouts["standard"], "test") == ["cow/cattle"] * 2 + ["horse/stable"] + ["horse/web"] * 2
    web = layouts["held-out web"]
    assert sources_in(web, "train") == ["cow/cattle"] * 3 + ["horse/stable"] * 2  # no web horse trains
    assert sources_in(web, "test") == ["cow/cattle"] * 2 + ["horse/web"] * 3  # every web horse, both folders
    stable = layouts["held-out stable"]
    assert sources_in(stable, "train") == ["cow/cattle"] * 3 + ["horse/web"]
    assert sources_in(stable, "test") == ["cow/cattle"] * 2 + ["horse/stable"] * 3
    # The links point at the photos themselves.
    linked = web / "test" / "horse" / "train__horse__horse_train_2.png"
    assert linked.resolve() == (data / "train/horse/horse_train_2.png").resolve()


def test_group_counts_come_from_the_runs_own_per_group_scores(tmp_path):
    data = make_data(tmp_path / "data")
    web = sources.plans(data, sources.read_manifest(data), tmp_path / "scratch")["held-out web"]
    metrics = api.train(
        web,
        tmp_path / "run",
        recipe="scratch",
        epochs=1,
        groups=str(web / "groups.csv"),
        quiet=True,
        warn=lambda message: None,
    )
    counts = sources.group_counts(metrics)
    assert set(counts) == {"cow/cattle", "horse/web"} and counts["horse/web"][1] == 3 and counts["cow/cattle"][1] == 2
    assert metrics["unseen"]["groups"] == ["web"] and metrics["unseen"]["n"] == 3


@pytest.mark.skipif(not SHARED_DEV.is_dir(), reason=f"{SHARED_DEV} not found: needs real photos")
def test_imagenet_zero_shot_reference_tells_real_cows_from_horses():
    test = load_dataset(SHARED_DEV, 224, warn=lambda message: None).test
    pick = torch.cat([torch.nonzero(test.labels == c).flatten()[:8] for c in (0, 1)])
    predicted = sources.imagenet_zero_shot(test.images[pick], test.classes)
    assert predicted.shape == (16,)
    assert (predicted == test.labels[pick]).float().mean() >= 0.75  # untrained: 86-93% per group on all 100
