"""EfficientNet-Lite1 and Lite2 beside Lite0, the two read side by side (the default probe's backbone),
and fine-tuning that keeps its start (LP-FT, WiSE-FT)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pasture import api
from pasture.classify.features import feature_cache
from pasture.classify.fit import wise_ft
from pasture.classify.recipes import resolve_recipe
from pasture.data import load_dataset
from pasture.models import create_model, get_spec
from pasture.models.pretrained import BACKBONES, CONCATENATED, imagenet_weights_path, part_sizes

SHARED_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "cowhorse-dev"
INSTALLED = [
    name
    for name, backbone in BACKBONES.items()
    if __import__("importlib").util.find_spec(backbone.weights_module) is not None
]


@pytest.mark.parametrize("name", INSTALLED)
def test_each_backbone_loads_its_package_weights_at_its_native_size(name):
    model = create_model(name, 3, 64, weights="imagenet")
    source = torch.load(imagenet_weights_path(name), map_location="cpu", weights_only=True)
    assert torch.equal(next(iter(source.values())), next(iter(model.net.state_dict().values())))
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 3)
    assert (
        get_spec(name).native_image_size
        == BACKBONES[name].native_image_size
        == {"effnet-lite0": 224, "effnet-lite1": 240, "effnet-lite2": 260}[name]
    )


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DEV.is_dir(), reason=f"{SHARED_DEV} not found")
@pytest.mark.parametrize("name", [name for name in INSTALLED if name != "effnet-lite0"])  # Lite0: test_pretrained
def test_the_larger_backbones_see_cows_and_horses_on_real_photos(name):
    from pasture.models.pretrained import IMAGENET_OX, IMAGENET_SORREL, imagenet_classifier

    model = imagenet_classifier(name)
    images = load_dataset(SHARED_DEV, BACKBONES[name].native_image_size).test
    with torch.no_grad():
        for label, wanted in ((0, IMAGENET_OX), (1, IMAGENET_SORREL)):
            chosen = images.images[images.labels == label][:12].float() / 255
            assert (model((chosen - 0.5) / 0.5).argmax(1) == wanted).float().mean() >= 0.5


def test_the_pair_reads_each_backbone_at_its_own_size_and_concatenates_their_features():
    assert CONCATENATED["effnet-lite0+lite2"] == ("effnet-lite0", "effnet-lite2")
    assert part_sizes("effnet-lite0+lite2", 260) == [224, 260] and part_sizes("effnet-lite0+lite2", 64) == [55, 64]
    parts = [get_spec(name) for name in CONCATENATED["effnet-lite0+lite2"]]
    pair = get_spec("effnet-lite0+lite2")
    assert all(part.mean == pair.mean and part.std == pair.std for part in parts)  # one normalisation serves all
    model = create_model("effnet-lite0+lite2", 2, 64, weights="imagenet").eval()
    lite0 = create_model("effnet-lite0", 2, 55, weights="imagenet").eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        features = model.net.forward_features(model.normalize(images))
        alone = lite0.net.forward_head(
            lite0.net.forward_features(
                torch.nn.functional.interpolate(
                    lite0.normalize(images), size=(55, 55), mode="bilinear", align_corners=False
                )
            ),
            pre_logits=True,
        )
    assert features.shape == (2, 1280 + 1280) and model.net.get_classifier().in_features == 2560
    assert torch.allclose(features[:, :1280], alone, atol=1e-5)  # the first part is Lite0, as it is alone
    with pytest.raises(Exception, match="takes no weights file"):
        create_model("effnet-lite0+lite2", 2, 64, weights=__file__)


def test_feature_caches_are_kept_apart_per_backbone():
    folders = {
        feature_cache(resolve_recipe("probe", model=name)).folder
        for name in ("effnet-lite0", "effnet-lite2", "effnet-lite0+lite2")
    }
    assert len(folders) == 3
    assert (
        feature_cache(resolve_recipe("probe", model="effnet-lite2")).folder
        != feature_cache(resolve_recipe("probe", model="effnet-lite2", image_size=64)).folder
    )


def test_wise_ft_interpolates_every_float_tensor_and_keeps_counters():
    torch.manual_seed(0)
    start, tuned = create_model("resnet-small", 2, 32), create_model("resnet-small", 2, 32)
    mixed = wise_ft(tuned, start, 0.25)
    for key, value in tuned.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(mixed[key], 0.75 * start.state_dict()[key] + 0.25 * value, atol=1e-6)
        else:
            assert torch.equal(mixed[key], value)  # e.g. BatchNorm's num_batches_tracked
    whole = wise_ft(tuned, start, 1.0)
    assert all(torch.allclose(whole[key], value, atol=1e-6) for key, value in tuned.state_dict().items())


@pytest.mark.slow
def test_wise_ft_run_lies_between_its_start_and_the_plain_fine_tuned_run(split_data, tmp_path):
    common = dict(recipe="finetune", image_size=32, epochs=1, batch_size=8, quiet=True, seed=0)
    api.train(split_data, tmp_path / "plain", **common)
    api.train(split_data, tmp_path / "wise", wise_alpha=0.5, **common)
    plain = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)["members"][0]
    wise = torch.load(tmp_path / "wise" / "checkpoint.pt", weights_only=True)["members"][0]
    start = create_model("effnet-lite0", 2, 32, weights="imagenet").state_dict()
    key = "net.conv_stem.weight"  # a backbone weight: the start is the ImageNet one
    assert torch.allclose(wise[key], 0.5 * (start[key] + plain[key]), atol=1e-6)
    assert not torch.allclose(wise[key], plain[key])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["effnet-lite2", "effnet-lite0+lite2"])
def test_the_new_backbones_fine_tune_and_predict(split_data, tmp_path, model):
    metrics = api.train(
        split_data, tmp_path / "ft", recipe="finetune", model=model, image_size=48, epochs=1, batch_size=8, quiet=True
    )
    assert metrics["model"] == model and metrics["n_test"] == 12
    assert api.evaluate(tmp_path / "ft", split_data)["accuracy"] == pytest.approx(metrics["test_accuracy"])
