import math

import pytest
import torch
from torch import nn

from pasture.classify.fit import train_classifier
from pasture.classify.recipes import get_recipe, with_overrides
from pasture.classify.selfsup import encoder_of, images_per_batch, nt_xent, pretrain
from pasture.cli import main
from pasture.core.errors import UserError
from pasture.data import load_dataset
from pasture.models import create_model


def test_nt_xent_matches_a_hand_computed_value():
    # Two images, views identical: z = [e1, e2, e1, e2]. Row 0 sees similarities (self excluded)
    # [0, 1, 0] / T with its positive at index 2, so each row's loss is -log(e^(1/T) / (2 + e^(1/T))).
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    for temperature in (1.0, 0.2):
        expected = -math.log(math.exp(1 / temperature) / (2 + math.exp(1 / temperature)))
        assert nt_xent(z, temperature).item() == pytest.approx(expected, rel=1e-5)
    # Swapping which view is whose positive (a wrong pairing) must cost more.
    wrong = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    assert nt_xent(wrong, 0.2) > nt_xent(z, 0.2)


def test_encoder_swaps_the_last_linear_layer_and_puts_it_back():
    model = create_model("resnet-small", 2, 32)
    last = model.net.head[-1]
    with encoder_of(model) as (encoder, width):
        assert width == last.in_features == 128
        assert encoder(torch.rand(3, 3, 32, 32)).shape == (3, 128)
    assert model.net.head[-1] is last
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 2)
    with pytest.raises(ValueError), encoder_of(nn.Sequential(nn.Conv2d(3, 4, 3))):
        pass


def test_batches_shrink_with_image_size():
    assert images_per_batch(64) == 128
    assert images_per_batch(128) == 32
    assert images_per_batch(1024) == 8


def test_pretraining_lowers_the_loss_changes_the_encoder_not_the_head_and_repeats_exactly():
    # Twelve images, each its own colour under some texture: telling their views apart is learnable.
    generator = torch.Generator().manual_seed(0)
    colours = torch.randint(0, 256, (12, 3, 1, 1), generator=generator)
    images = (colours + torch.randint(-30, 31, (12, 3, 24, 24), generator=generator)).clamp(0, 255).to(torch.uint8)

    def run():
        torch.manual_seed(0)
        model = create_model("resnet-small", 2, 24)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        losses = pretrain(model, images, 20, torch.Generator().manual_seed(0))
        return model, before, losses

    model, before, losses = run()
    assert len(losses) == 20 and sum(losses[-5:]) < 0.9 * sum(losses[:5])
    after = model.state_dict()
    assert not torch.equal(after["net.stem.0.weight"], before["net.stem.0.weight"])
    assert torch.equal(after["net.head.3.weight"], before["net.head.3.weight"])  # the classifier layer is untouched
    again, _, losses_again = run()
    assert losses_again == losses
    assert all(torch.equal(again.state_dict()[key], after[key]) for key in after)


def test_recipe_with_selfsup_trains_and_differs_from_no_selfsup(split_data):
    dataset = load_dataset(split_data, 16)
    base = with_overrides(get_recipe("small-data"), image_size=16, epochs=1, tta=False)
    plain = train_classifier(dataset, base, seed=0).model.state_dict()
    pretrained = train_classifier(dataset, with_overrides(base, selfsup_epochs=2), seed=0).model.state_dict()
    assert not torch.equal(plain["net.stem.0.weight"], pretrained["net.stem.0.weight"])


def test_selfsup_recipe_errors():
    with pytest.raises(UserError, match="--selfsup-epochs -1: must not be negative"):
        with_overrides(get_recipe("small-data"), selfsup_epochs=-1)
    with pytest.raises(UserError, match="self-supervised pretraining is for from-scratch models"):
        with_overrides(get_recipe("probe"), selfsup_epochs=5)


def test_cli_rejects_a_negative_selfsup_epochs(split_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", str(split_data), "--out", str(tmp_path / "r"), "--selfsup-epochs", "-3"])
    assert exited.value.code == 2
    assert "--selfsup-epochs" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
