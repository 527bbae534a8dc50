"""The projected GAN (issue 30): shapes, a frozen feature network that stays frozen and unchanged,
resume bit-identical, conditional sampling per class, per-class grids, and KID's estimator."""

import json

import pytest
import torch
from conftest import gan_trained_whole_and_resumed

from pasture import api
from pasture.core.runs import load_checkpoint
from pasture.gan.kid import kernel_distance
from pasture.gan.presets import get_gan_preset
from pasture.gan.projected import FrozenFeatures, LiteGenerator, ProjectedDiscriminator
from pasture.gan.sampling import generate
from pasture.gan.trainer import GanUnit

# The projected preset, small: 16 px images, read by the frozen network at 64 px.
TINY = dict(image_size=16, nz=8, ngf=4, ndf=4, batch_size=4, feature_size=64, quiet=True)


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("classes", [0, 2])
def test_lite_generator_and_projected_discriminator_shapes(size, classes):
    generator = LiteGenerator(nz=8, image_size=size, ngf=4, num_classes=classes)
    labels = torch.tensor([0, 1]) if classes else None
    images = generator(torch.randn(2, 8), labels)
    assert images.shape == (2, 3, size, size) and images.abs().max() <= 1
    assert not torch.equal(images[0], images[1])
    # skip-layer excitation exists once the image reaches 32 px (4 -> 32) and 64 px (8 -> 64)
    assert len(generator.excite) == {16: 0, 32: 1, 64: 2}[size]
    discriminator = ProjectedDiscriminator(size, ndf=4, num_classes=classes, feature_size=64)
    logits = discriminator(images, labels)
    # patch logits of the four stages: 64 px -> maps of 16, 8, 4, 2 -> 8x8, 8x8, 4x4, 2x2 patches
    assert logits.shape == (2, 64 + 64 + 16 + 4)


def test_conditional_discriminator_depends_on_the_label():
    torch.manual_seed(0)
    discriminator = ProjectedDiscriminator(16, ndf=4, num_classes=2, feature_size=64)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    as_cows, as_horses = discriminator(images, torch.tensor([0, 0])), discriminator(images, torch.tensor([1, 1]))
    assert not torch.allclose(as_cows, as_horses)
    with pytest.raises(ValueError, match="needs labels"):
        discriminator(images)


def test_the_feature_network_is_frozen_unsaved_and_never_trained(split_data, tmp_path):
    fresh = FrozenFeatures().net.state_dict()
    preset = get_gan_preset("projected")
    unit = GanUnit(
        preset.__class__(**{**preset.to_dict(), **{k: v for k, v in TINY.items() if k != "quiet"}}),
        2,
        [0, 1],
        torch.device("cpu"),
    )
    discriminator = unit.discriminator
    discriminator.train()
    assert not discriminator.features.net.training  # train() cannot switch its BatchNorm to batch statistics
    assert not any(key.startswith("features.") for key in discriminator.state_dict())
    trainable = {id(weight) for group in unit.optimizer_d.param_groups for weight in group["params"]}
    # the random CCM/CSM projections are fixed: no optimiser sees them, nor the feature network
    assert not any(id(weight) in trainable for weight in discriminator.ccm.parameters())
    assert not any(id(weight) in trainable for weight in discriminator.csm.parameters())
    ccm_before = [weight.clone() for weight in discriminator.ccm.parameters()]
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    for _ in range(3):  # D steps as the trainer takes them
        loss = torch.relu(1 - discriminator(images, torch.tensor([0, 1, 0, 1]))).mean()
        unit.optimizer_d.zero_grad()
        loss.backward()
        unit.optimizer_d.step()
    after = discriminator.features.net.state_dict()
    assert all(torch.equal(fresh[key], after[key]) for key in fresh)  # weights and BatchNorm statistics
    assert all(torch.equal(a, b) for a, b in zip(ccm_before, discriminator.ccm.parameters()))
    assert not any(weight.requires_grad for weight in discriminator.features.net.parameters())


def test_projected_gan_trains_writes_class_grids_and_samples_each_class(split_data, tmp_path):
    api.gan_train(split_data, tmp_path / "gan", preset="projected", iterations=4, sample_every=2, seed=0, **TINY)
    names = {path.name for path in (tmp_path / "gan").iterdir()}
    assert {"grid_cow.png", "grid_horse.png", "samples_u0_00004.png", "samples_u1_00004.png"} <= names
    config = json.loads((tmp_path / "gan" / "config.json").read_text())
    assert config["preset"]["architecture"] == "projected" and config["preset"]["feature_size"] == 64
    # one GAN per class; each checkpointed discriminator is its trainable part only (no 14 MB of
    # frozen ImageNet weights)
    units = load_checkpoint(tmp_path / "gan" / "checkpoint.pt")["units"]
    assert [unit["class_ids"] for unit in units] == [[0], [1]]
    assert not any(key.startswith("features.") for unit in units for key in unit["discriminator"])
    from pasture.gan.synth import load_gan

    preset, classes, samplers, _ = load_gan(tmp_path / "gan")
    assert all(isinstance(network, LiteGenerator) for _, network in samplers)
    generator = torch.Generator().manual_seed(0)
    cows, horses = (generate(preset, samplers, index, 5, generator) for index in (0, 1))
    assert cows.shape == horses.shape == (5, 3, 16, 16) and cows.dtype == torch.uint8


def test_a_conditional_projected_gan_samples_each_class_from_one_generator(split_data, tmp_path):
    api.gan_train(
        split_data, tmp_path / "gan", preset="projected", conditional=True, iterations=2, sample_every=2, **TINY
    )
    from pasture.gan.synth import load_gan

    preset, _, samplers, _ = load_gan(tmp_path / "gan")
    assert len(samplers) == 1 and samplers[0][0] == [0, 1]
    network = samplers[0][1]
    z = torch.randn(3, preset.nz)  # the same noise with another label gives another image
    assert not torch.equal(network(z, torch.tensor([0, 0, 0])), network(z, torch.tensor([1, 1, 1])))


def test_projected_gan_resume_equals_uninterrupted(split_data, tmp_path, monkeypatch):
    settings = dict(preset="projected", iterations=6, sample_every=2, seed=3, **TINY)
    # the 5th grid: unit 1 (horse), after its first sample point was checkpointed
    whole, cut = gan_trained_whole_and_resumed(split_data, tmp_path, monkeypatch, settings, 5)
    for a, b in zip(whole, cut, strict=True):
        for part in ("generator", "discriminator"):
            assert a[part].keys() == b[part].keys()
            assert all(torch.equal(a[part][key], b[part][key]) for key in a[part]), part


def test_dcgan_configs_keep_their_keys():
    # GAN folders and GAN-store keys written before the projected GAN stay valid: no new keys for DCGANs.
    assert "architecture" not in get_gan_preset("default").to_dict()
    assert get_gan_preset("projected").to_dict()["architecture"] == "projected"


def test_kid_is_near_zero_for_one_distribution_and_clearly_above_for_two():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(200, 32, generator=generator)
    same = torch.randn(200, 32, generator=generator)
    shifted = torch.randn(200, 32, generator=generator) * 1.5 + 0.5
    identical, _ = kernel_distance(a, a)
    # the unbiased estimate of one set against itself is slightly below 0 (its self-pairs are left
    # out on one side only): O(1/n), small beside a real difference
    assert -0.1 * kernel_distance(a, shifted)[0] < identical <= 0
    value, se = kernel_distance(a, same)
    assert abs(value) < 3 * se and se > 0  # unbiased: two draws of one distribution give about 0
    far, far_se = kernel_distance(a, shifted)
    assert far > 10 * far_se and far > 20 * abs(value)
    with pytest.raises(ValueError, match="at least 3"):
        kernel_distance(a[:2], same)


def test_kid_standard_error_matches_the_spread_over_repeated_draws():
    # the jackknife SE should be about the standard deviation of KID over independent draws
    generator = torch.Generator().manual_seed(1)
    values, ses = [], []
    for _ in range(30):
        x = torch.randn(60, 16, generator=generator)
        y = torch.randn(60, 16, generator=generator) + 0.3
        value, se = kernel_distance(x, y)
        values.append(value)
        ses.append(se)
    spread = torch.tensor(values).std().item()
    mean_se = sum(ses) / len(ses)
    assert 0.6 < mean_se / spread < 1.6


def test_moving_the_discriminator_moves_the_frozen_network_with_it():
    # .to(device) and channels_last reach the feature network although it is not a registered child
    discriminator = ProjectedDiscriminator(16, ndf=4, num_classes=2, feature_size=64)
    discriminator.to("meta")
    assert all(weight.device.type == "meta" for weight in discriminator.features.net.parameters())
    discriminator = ProjectedDiscriminator(16, ndf=4, num_classes=2, feature_size=64)
    discriminator.to(memory_format=torch.channels_last)
    stem = discriminator.features.net.conv_stem.weight
    assert stem.is_contiguous(memory_format=torch.channels_last)


def test_projected_preset_options_are_checked(split_data, tmp_path, capsys):
    from pasture.cli import main

    code = main(
        [
            "gan",
            "train",
            str(split_data),
            "--out",
            str(tmp_path / "g"),
            "--preset",
            "projected",
            "--feature-size",
            "100",
            "--quiet",
        ]
    )
    assert code == 2 and "--feature-size 100" in capsys.readouterr().err and not (tmp_path / "g").exists()


@pytest.mark.slow
def test_an_experiment_trains_the_projected_gan_and_its_report_shows_each_class(split_data, tmp_path, monkeypatch):
    monkeypatch.setenv("PASTURE_CACHE_DIR", str(tmp_path / "cache"))
    quick = "recipe=scratch,epochs=1,image_size=16,batch_size=8"
    gan = "gan=projected,image_size_gan=16,iterations=2,ngf=4,ndf=4,feature_size=64,gan_batch_size=4,per_class=4"
    results = api.experiment(
        split_data, tmp_path / "study", conditions=[f"base:{quick}", f"proj:{quick},{gan}"], seeds=1, quiet=True, jobs=1
    )
    assert [row["condition"] for row in results["conditions"]] == ["base", "proj"]
    grids = list((tmp_path / "cache").rglob("grid_*.png"))
    assert sorted(path.name for path in grids) == ["grid_cow.png", "grid_horse.png"]
    report = (tmp_path / "study" / "report.md").read_text()
    assert "samples of class cow" in report and "samples of class horse" in report
