"""From-scratch tools: resnet-small, strong augmentation, MixUp/CutMix, EMA, TTA, ensembles."""

import pytest
import torch
from conftest import interrupt_on_call
from torch import nn

from pasture import api
from pasture.classify.augment import augment_batch, get_augment, mix_batch, trivial_augment
from pasture.classify.evaluate import predict_probabilities, tta_views
from pasture.classify.fit import train_classifier
from pasture.classify.recipes import get_recipe, with_overrides
from pasture.classify.steps import make_optimizer
from pasture.core.runs import load_checkpoint
from pasture.data import load_dataset
from pasture.models import Ensemble, WeightEMA, create_model


@pytest.mark.parametrize("size", [16, 32, 64, 96])
def test_resnet_small_shapes_and_a_training_step(size):
    torch.manual_seed(0)
    model = create_model("resnet-small", 3, size)
    assert 1e5 < sum(p.numel() for p in model.parameters()) < 1e6  # "a few hundred thousand"
    images, labels = torch.rand(4, 3, size, size), torch.tensor([0, 1, 2, 1])
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    assert model(images).shape == (4, 3)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_strong_preset_keeps_shape_and_differs_per_image_without_saturating():
    images = torch.rand(1, 3, 32, 32).repeat(12, 1, 1, 1)
    out = augment_batch(images, get_augment("strong"), torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    assert float(((out == 0) | (out == 1)).float().mean()) < 0.2  # not overshot and hidden by the final clamp
    assert len({tuple(o.flatten()[:40].round(decimals=4).tolist()) for o in out}) == 12


def test_trivial_translation_scales_with_image_size():
    # A translate-only draw moves content by at most 15% of the side at any size (not a fixed 32 px).
    from pasture.classify.augment import TRIVIAL_MAX

    assert TRIVIAL_MAX["translate"] <= 0.15
    image = torch.zeros(1, 3, 64, 64)
    image[..., 28:36, 28:36] = 1.0  # a bright square in the middle
    out = trivial_augment(image.repeat(200, 1, 1, 1), get_augment("strong"), torch.Generator().manual_seed(0))
    centres = [(o[0] > 0.5).nonzero().float().mean(0) for o in out if (o[0] > 0.5).any()]
    assert max(float((c - 31.5).abs().max()) for c in centres) <= 0.15 * 64 + 2


def test_mixup_and_cutmix_soft_labels_sum_to_one_and_match_the_mix():
    generator = torch.Generator().manual_seed(0)
    images = torch.stack([torch.full((3, 8, 8), float(i % 2)) for i in range(16)])  # class 0 black, 1 white
    labels = torch.tensor([i % 2 for i in range(16)])
    for mixup, cutmix in ((0.4, 0.0), (0.0, 1.0)):
        mixed, targets = mix_batch(images, labels, 2, mixup, cutmix, generator)
        assert torch.allclose(targets.sum(1), torch.ones(16))
        # the white share of each mixed image equals the target weight of class 1
        assert torch.allclose(mixed.mean((1, 2, 3)), targets[:, 1], atol=1e-5)
    unmixed, hard = mix_batch(images, labels, 2, 0.0, 0.0, generator)
    assert torch.equal(unmixed, images) and torch.equal(hard.argmax(1), labels)


def test_ema_on_hand_made_weights():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightEMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # decay = min(0.5, 2/11) = 2/11 -> 0 * 2/11 + 1 * 9/11
    assert ema.model.weight.item() == pytest.approx(9 / 11)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)  # decay = min(0.5, 3/12) = 0.25
    assert ema.model.weight.item() == pytest.approx(0.25 * 9 / 11 + 0.75 * 3)


def test_ensemble_averages_member_probabilities():
    class Fixed(nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.register_buffer("logits", torch.tensor(logits))

        def forward(self, images):
            return self.logits.expand(images.shape[0], -1)

    members = [Fixed([0.0, 0.0]), Fixed([0.0, 100.0])]  # probabilities (.5, .5) and (0, 1)
    probabilities = predict_probabilities(Ensemble(members), torch.zeros(3, 3, 4, 4, dtype=torch.uint8))
    assert torch.allclose(probabilities, torch.tensor([[0.25, 0.75]] * 3), atol=1e-6)


def test_tta_views_and_output_shape():
    images = torch.rand(5, 3, 32, 32)
    views = tta_views(images)
    assert len(views) == 6 and all(view.shape == images.shape for view in views)
    assert torch.equal(views[3], images.flip(-1))
    model = create_model("resnet-small", 2, 32)
    probabilities = predict_probabilities(model, (images * 255).to(torch.uint8), tta=True)
    assert probabilities.shape == (5, 2) and torch.allclose(probabilities.sum(1), torch.ones(5))


def test_small_data_recipe_is_complete():
    recipe = get_recipe("small-data")
    assert recipe.model == "resnet-small" and recipe.augment == "strong" and recipe.image_size >= 32
    assert recipe.pretrained == "none"


def test_ensemble_run_stores_members_and_predicts_their_average(split_data, tmp_path):
    run = tmp_path / "ens"
    metrics = api.train(
        split_data, run, recipe="small-data", epochs=2, batch_size=8, image_size=16, ensemble=3, seed=0, quiet=True
    )
    members = load_checkpoint(run / "checkpoint.pt")["members"]
    assert len(members) == 3 and metrics["ensemble"] == 3
    assert not torch.equal(members[0]["net.head.3.weight"], members[1]["net.head.3.weight"])
    model, config = api.load_run(run)
    assert isinstance(model, Ensemble) and len(model.members) == 3
    images = load_dataset(split_data, 16).test.images
    expected = torch.stack([predict_probabilities(m, images, tta=True) for m in model.members]).mean(0)
    assert torch.allclose(predict_probabilities(model, images, tta=True), expected, atol=1e-6)
    assert api.evaluate(run, split_data)["accuracy"] == pytest.approx(metrics["test_accuracy"])


@pytest.mark.slow
def test_ensemble_resume_inside_a_member_equals_uninterrupted(split_data, tmp_path, monkeypatch):
    import pasture.classify.fit as train_module
    from pasture.core.errors import Interrupted

    settings = dict(recipe="small-data", epochs=2, batch_size=8, image_size=16, ensemble=2, seed=4, quiet=True)
    whole = api.train(split_data, tmp_path / "whole", **settings)
    restore = interrupt_on_call(monkeypatch, train_module, "evaluate_model", 4)  # member 2, epoch 2
    with pytest.raises(Interrupted):
        api.train(split_data, tmp_path / "cut", **settings)
    restore()
    resumed = api.train(split_data, tmp_path / "cut", resume=True, **settings)
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["members"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["members"]
    assert all(torch.equal(a[i][k], b[i][k]) for i in range(2) for k in a[i])


def test_ema_model_is_the_final_model(split_data):
    dataset = load_dataset(split_data, 16)
    recipe = with_overrides(get_recipe("small-data"), epochs=2, image_size=16, ema_decay=0.9)
    plain = with_overrides(recipe, ema_decay=0.0)
    with_ema = train_classifier(dataset, recipe, seed=0).model.state_dict()
    without = train_classifier(dataset, plain, seed=0).model.state_dict()
    assert not torch.equal(with_ema["net.head.3.weight"], without["net.head.3.weight"])


def test_finetune_uses_discriminative_learning_rates():
    recipe = with_overrides(get_recipe("small-data"), pretrained="finetune", backbone_lr_scale=0.1)
    model = create_model("resnet-small", 2, 32)
    groups = make_optimizer(model, recipe).param_groups
    assert [group["lr_scale"] for group in groups] == [0.1, 1.0]
    assert sum(p.numel() for p in groups[1]["params"]) == 128 * 2 + 2  # the final Linear layer
