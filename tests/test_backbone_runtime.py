"""A frozen backbone's features by ONNX Runtime (issue 42): the same numbers as torch, a graph built once
and reused from the cache, and torch as the fallback when the runtime is missing, told not to, or its
graph fails the check."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch

from pasture.classify import backbones, probe_file
from pasture.classify.backbones import backbone_features, backbone_key, generated_images
from pasture.classify.recipes import get_recipe, with_overrides
from pasture.models import create_model

pytest.importorskip("onnxruntime")
SIZE = 48


@pytest.fixture
def probe():
    """The default probe's backbones at 48 px, and a clean slate of sessions."""
    backbones._sessions.clear()
    recipe = with_overrides(get_recipe("probe"), image_size=SIZE)
    model = create_model(recipe.model, 2, SIZE, weights="imagenet").eval()
    yield model, backbone_key(recipe)
    backbones._sessions.clear()


def torch_only(model, images):
    with torch.no_grad():
        return backbones._torch_features(model, images)


def test_onnxruntime_gives_torchs_features(probe):
    model, key = probe
    images = generated_images(SIZE, 6)
    features = backbone_features(model, images, batch_size=4, key=key)
    assert backbones._sessions  # the runtime served them
    assert features.shape == (6, backbones.timm_net(model).num_features)
    assert torch.allclose(features, torch_only(model, images), atol=backbones.PARITY_LIMIT)


def test_the_graph_is_built_once_and_read_back_from_the_cache(probe, monkeypatch):
    model, key = probe
    images = generated_images(SIZE, 2)
    first = backbone_features(model, images, key=key)
    backbones._sessions.clear()  # a new process: the graph comes from the cache folder, not the exporter

    def no_export(*args):
        raise AssertionError("exported again")

    monkeypatch.setattr(backbones, "_graph_bytes", no_export)
    assert torch.equal(backbone_features(model, images, key=key), first)


@pytest.mark.parametrize("how", ["told", "missing", "unfaithful"])
def test_torch_serves_when_the_runtime_cannot(probe, monkeypatch, how):
    model, key = probe
    if how == "told":
        monkeypatch.setenv(probe_file.RUNTIME_VARIABLE, "torch")
    elif how == "missing":
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    else:
        monkeypatch.setattr(backbones, "PARITY_LIMIT", 0.0)  # no graph can pass
    images = generated_images(SIZE, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        features = backbone_features(model, images, key=key)
    assert torch.equal(features, torch_only(model, images))
    assert list(backbones._sessions.values()) == [None]
    assert any("differ from torch" in str(w.message) for w in caught) == (how == "unfaithful")


def test_a_backbone_that_trains_has_no_key():
    assert backbone_key(get_recipe("probe")) is not None
    assert backbone_key(with_overrides(get_recipe("probe"), pretrained="finetune")) is None


def test_a_probe_run_predicts_from_the_cached_graph_without_building_its_backbones(split_data, tmp_path):
    from pasture import api

    backbones._sessions.clear()
    api.train(split_data, tmp_path / "run", recipe="probe", image_size=SIZE, quiet=True)  # builds the graph
    backbones._sessions.clear()  # a new process: the graph is in the cache folder
    loaded = api.load(tmp_path / "run", device="cpu")
    images = generated_images(SIZE, 5)
    fast, found = loaded.scores(images)
    assert loaded._model is None and found is not None  # no torch backbone was built
    with torch.no_grad():
        from pasture.classify.evaluate import predict_probabilities

        assert torch.allclose(fast, predict_probabilities(loaded.model, images), atol=1e-4)  # the model's own
