"""effnet-lite0: offline ImageNet weights loaded by position, probe with a feature cache, finetune."""

import sys

import pytest
import torch
from conftest import SHARED_DEV

from pasture import api
from pasture.cli import main
from pasture.core.errors import UserError
from pasture.data import load_dataset
from pasture.models import create_model

timm = pytest.importorskip("timm", reason="the [pretrained] extra is not installed")


def test_imagenet_weights_load_by_position_with_identical_shapes():
    from pasture.models.pretrained import imagenet_weights_path

    source = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    model = create_model("effnet-lite0", 2, 64, weights="imagenet")
    target = model.net.state_dict()
    assert len(source) == len(target) == 296
    first_source, first_target = next(iter(source.values())), next(iter(target.values()))
    assert torch.equal(first_source, first_target)  # the stem conv really came from the package
    assert model.net.get_classifier().out_features == 2
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 2)


@pytest.mark.skipif(not SHARED_DEV.is_dir(), reason=f"{SHARED_DEV} not found")
def test_imagenet_weights_recognise_real_cows_and_horses():
    from pasture.models.pretrained import IMAGENET_OX, IMAGENET_SORREL, imagenet_classifier

    model = imagenet_classifier()
    images = load_dataset(SHARED_DEV, 224).test
    cows = images.images[images.labels == 0][:12].float() / 255
    horses = images.images[images.labels == 1][:12].float() / 255
    with torch.no_grad():
        cow_top = model((cows - 0.5) / 0.5).argmax(1)
        horse_top = model((horses - 0.5) / 0.5).argmax(1)
    assert (cow_top == IMAGENET_OX).float().mean() >= 0.5
    assert (horse_top == IMAGENET_SORREL).float().mean() >= 0.5


def test_user_weights_file_with_wrong_tensors_is_a_clear_error(tmp_path):
    bad = tmp_path / "resnet.pt"
    torch.save({"conv.weight": torch.zeros(8, 3, 3, 3)}, bad)
    with pytest.raises(UserError, match="holds 1 tensors"):
        create_model("effnet-lite0", 2, 64, weights=str(bad))
    from pasture.models.pretrained import imagenet_weights_path

    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    first = next(iter(state))
    state[first] = torch.zeros(16, 3, 3, 3)  # right count, wrong shape
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(UserError, match="tensor #0 has shape"):
        create_model("effnet-lite0", 2, 64, weights=str(tmp_path / "shape.pt"))


def test_user_weights_file_is_loaded(tmp_path):
    from pasture.models.pretrained import imagenet_weights_path

    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    state = {key: value * 0.5 if value.is_floating_point() else value for key, value in state.items()}
    torch.save({"state_dict": state}, tmp_path / "mine.pt")
    model = create_model("effnet-lite0", 2, 64, weights=str(tmp_path / "mine.pt"))
    assert torch.equal(next(iter(model.net.state_dict().values())), next(iter(state.values())))


def test_missing_extra_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(UserError, match=r"pip install -e \.$"):
        create_model("effnet-lite0", 2, 64)


@pytest.mark.slow
def test_probe_trains_fast_and_reuses_its_cache(split_data, tmp_path):
    common = dict(model="effnet-lite0", pretrained="probe", image_size=32, quiet=True)
    first = api.train(split_data, tmp_path / "p1", seed=0, **common)
    assert first["notes"]["features_computed"] == 16 + 12 and first["notes"]["features_reused"] == 0
    second = api.train(split_data, tmp_path / "p2", seed=1, **common)
    assert second["notes"]["features_computed"] == 0 and second["notes"]["features_reused"] == 28
    # change one training image: only it is recomputed
    from conftest import make_image

    make_image("horse", 999).save(next((split_data / "train" / "cow").iterdir()))
    third = api.train(split_data, tmp_path / "p3", seed=1, **common)
    assert third["notes"]["features_computed"] == 1 and third["notes"]["features_reused"] == 27
    rows = api.predict(tmp_path / "p3", [split_data / "test" / "cow"])
    assert len(rows) == 6


def test_finetune_short_run_and_predict(split_data, tmp_path):
    metrics = api.train(
        split_data,
        tmp_path / "ft",
        model="effnet-lite0",
        pretrained="finetune",
        image_size=32,
        epochs=1,
        batch_size=8,
        quiet=True,
    )
    assert metrics["n_test"] == 12 and metrics["tta"] is True
    report = api.evaluate(tmp_path / "ft", split_data)
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"])


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--model", "effnet-lite0", "--recipe", "scratch"], "--pretrained probe"),
        (["--epochs", "5"], "--epochs: does not apply to a probe"),
        (["--pretrained", "probe", "--model", "paper-cnn"], "has no pretrained weights"),
        (["--recipe", "paper", "--weights", "x.pt"], "--weights"),
        (["--pretrained", "probe", "--weights", "/nonexistent.pt"], "no such file"),
    ],
)
def test_pretrained_option_errors(split_data, tmp_path, capsys, args, fragment):
    assert main(["train", str(split_data), "--out", str(tmp_path / "r"), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1
