"""A warm `pasture train` of a probe (issue 42): with the photos' features, the head's choice of C and the
backbone's weights in the cache, training builds no network (timm, torchvision and Captum are never
imported: 2.5-4 s of a 9 s run) and writes the model a cold run writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import write_split_data

from pasture import api
from pasture.classify import backbones, logistic
from pasture.classify.logistic import fit_linear_head

pytest.importorskip("onnxruntime")
SIZE = 48
NETWORK_LIBRARIES = ("timm", "torchvision", "captum")


def _train_in_fresh_interpreter(data, out, cache) -> list[str]:
    """api.train in a new process (nothing imported yet); returns the network libraries it imported."""
    code = (
        "import sys; from pasture import api;"
        f"api.train(sys.argv[1], sys.argv[2], recipe='probe', image_size={SIZE}, ensemble=2, quiet=True);"
        f"print('imported:' + ','.join(name for name in {NETWORK_LIBRARIES!r} if name in sys.modules))"
    )
    env = {**os.environ, "PASTURE_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", code, str(data), str(out)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return [name for name in done.stdout.strip().splitlines()[-1].removeprefix("imported:").split(",") if name]


def _members(run) -> list[dict]:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["members"]


def test_importing_the_api_imports_no_network_library():
    code = f"import sys, pasture.api; print([name for name in {NETWORK_LIBRARIES!r} if name in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("cached", ["everything", "all but the photos' features"])
def test_a_warm_probe_train_builds_no_network_and_writes_the_cold_runs_model(tmp_path, monkeypatch, cached):
    cache = tmp_path / "cache"
    monkeypatch.setenv("PASTURE_CACHE_DIR", str(cache))
    backbones._sessions.clear()
    data = write_split_data(tmp_path / "data")
    cold = api.train(data, tmp_path / "cold", recipe="probe", image_size=SIZE, ensemble=2, quiet=True)
    if cached != "everything":  # new photos: features by the backbone's cached ONNX graph, still no network
        shutil.rmtree(cache / "features")
    assert _train_in_fresh_interpreter(data, tmp_path / "warm", cache) == []
    warm = json.loads((tmp_path / "warm" / "metrics.json").read_text())
    cold_members, warm_members = _members(tmp_path / "cold"), _members(tmp_path / "warm")
    assert len(cold_members) == len(warm_members) == 2
    for ours, theirs in zip(warm_members, cold_members):
        assert list(ours) == list(theirs)  # the same tensors, in the same order
        assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
    for figure in ("test_accuracy", "train_accuracy", "confusion", "history", "final_train_loss"):
        assert warm[figure] == cold[figure]
    assert warm["notes"]["head"] == cold["notes"]["head"]
    # the run is an ordinary run: predicted by its network (built from the checkpoint) as the cold one
    rows = api.predict(tmp_path / "warm", [data / "test"])
    assert [row["probabilities"] for row in rows] == [
        row["probabilities"] for row in api.predict(tmp_path / "cold", [data / "test"])
    ]


def test_the_choice_of_c_is_read_back_for_the_same_photos(tmp_path, monkeypatch):
    monkeypatch.setenv("PASTURE_CACHE_DIR", str(tmp_path / "cache"))
    searches = []
    search = logistic.choose_head_c
    monkeypatch.setattr(logistic, "choose_head_c", lambda *args: searches.append(1) or search(*args))
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(40, 16, generator=generator)
    labels = torch.arange(40) % 2
    features[labels == 1] += 0.5

    def fit(labels, **options):
        head, _, choice = fit_linear_head(features, labels, 2, 0.0, True, seed=0, **options)
        return head, choice

    head, choice = fit(labels)
    again, choice_again = fit(labels)
    assert len(searches) == 1 and choice_again == choice
    assert torch.equal(again.weight, head.weight)
    fit(labels, groups=["a", "b"] * 20)  # other folds: searched again
    flipped = labels.clone()
    flipped[0] = 1 - flipped[0]
    fit(flipped)  # one label changed: searched again
    assert len(searches) == 3
    monkeypatch.setenv("PASTURE_NO_CACHE", "1")
    fit(labels)
    assert len(searches) == 4
