"""GANs: shapes for each size, conditional sampling, DiffAugment gradients, train-split only,
a short training run with its files, resume, sample/score JSON, filtering, synthetic mixing."""

import json
import math
from dataclasses import replace

import pytest
import torch
from conftest import gan_trained_whole_and_resumed

from pasture import api
from pasture.classify.steps import mix_in_synthetic
from pasture.cli import main
from pasture.core.errors import UserError
from pasture.core.runs import load_checkpoint
from pasture.core.stats import wilson_interval
from pasture.data import ImageSet, load_dataset
from pasture.gan.diffaugment import POLICIES, diff_augment
from pasture.gan.nets import Discriminator, Generator
from pasture.gan.presets import GanPreset
from pasture.gan.sampling import generate
from pasture.gan.trainer import train_gan

TINY = dict(image_size=16, nz=8, ngf=4, ndf=4, batch_size=8, quiet=True)


@pytest.mark.parametrize("size", [16, 32, 64, 128])
@pytest.mark.parametrize("classes", [0, 3])
def test_generator_and_discriminator_shapes(size, classes):
    generator = Generator(nz=10, image_size=size, ngf=4, num_classes=classes)
    discriminator = Discriminator(image_size=size, ndf=4, num_classes=classes)
    labels = torch.tensor([0, 2]) if classes else None
    images = generator(torch.randn(2, 10), labels)
    assert images.shape == (2, 3, size, size)
    assert not torch.equal(images[0], images[1]) and float(images.detach().std()) > 0.01  # each noise its own image
    assert discriminator(images, labels).shape == (2,)
    blocks = sum(isinstance(m, torch.nn.ConvTranspose2d) for m in generator.modules())
    assert blocks == {16: 3, 32: 4, 64: 5, 128: 6}[size]  # the number of blocks follows the size


def test_dcgan_init_statistics():
    generator = Generator(nz=10, image_size=64, ngf=16)
    conv = next(m for m in generator.modules() if isinstance(m, torch.nn.ConvTranspose2d))
    assert abs(conv.weight.std().item() - 0.02) < 0.003


def test_image_size_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        Generator(image_size=48)


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_diffaugment_keeps_gradients_flowing_to_the_generator(policy):
    torch.manual_seed(0)
    generator, discriminator = Generator(8, 16, 4), Discriminator(16, 4)
    fake = generator(torch.randn(4, 8))
    loss = -discriminator(diff_augment(fake, policy, generator=torch.Generator().manual_seed(0))).mean()
    loss.backward()
    grads = [p.grad for p in generator.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_diffaugment_ops_change_images_and_p_zero_keeps_them():
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    for name in POLICIES:
        assert not torch.equal(diff_augment(images, name, generator=torch.Generator().manual_seed(1)), images)
    assert torch.equal(diff_augment(images, "color,translation,cutout", p=0.0), images)
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        diff_augment(images, "rotate")


def test_test_split_can_never_reach_a_gan(split_data):
    dataset = load_dataset(split_data, 16)
    preset = GanPreset("t", image_size=16, nz=8, ngf=4, ndf=4, iterations=1, batch_size=4)
    with pytest.raises(ValueError, match="training split only"):
        train_gan(dataset.test, preset, seed=0)
    train_gan(dataset.train, preset, seed=0)  # the training split is fine


def test_finished_units_keep_the_trained_discriminator(split_data):
    # benchmarks/gan_features.py probes D's features; the unit must hold D's trained weights.
    dataset = load_dataset(split_data, 16)
    preset = GanPreset("t", image_size=16, nz=8, ngf=4, ndf=4, iterations=1, batch_size=4, conditional=True)
    after_one = train_gan(dataset.train, preset, seed=0)["units"][0]["discriminator"]
    after_three = train_gan(dataset.train, replace(preset, iterations=3), seed=0)["units"][0]["discriminator"]
    discriminator = Discriminator(16, 4, 2)
    discriminator.load_state_dict(after_three)  # the whole state, conditional projection included
    # same seed, same start: only further training can make the stored weights differ
    assert not torch.equal(after_one["features.0.weight"], after_three["features.0.weight"])


def test_short_run_writes_files_and_losses_settle(split_data, tmp_path):
    summary = api.gan_train(
        split_data, tmp_path / "gan", preset="default", iterations=60, sample_every=20, seed=0, **TINY
    )
    names = {path.name for path in (tmp_path / "gan").iterdir()}
    assert {
        "config.json",
        "checkpoint.pt",
        "gan_log.jsonl",
        "gan_losses.png",
        "summary.json",
        "samples_u0_00020.png",
        "samples_u0_00060.png",
    } <= names
    log = [json.loads(line) for line in (tmp_path / "gan" / "gan_log.jsonl").read_text().splitlines()]
    assert len(log) == 60 and {"loss_d", "loss_g", "d_real", "d_fake", "p_aug"} <= set(log[0])
    first, last = log[:10], log[-20:]

    def mean(rows, key):
        return sum(row[key] for row in rows) / len(rows)

    assert mean(last, "loss_d") < mean(first, "loss_d")  # D learns from its initial loss ...
    # ... and nothing explodes: D's loss stays below where it started, G's is finite and moderate
    assert all(
        row["loss_d"] < mean(first, "loss_d") * 1.5 and math.isfinite(row["loss_g"]) and row["loss_g"] < 20
        for row in last
    )
    assert summary["units"] == 1
    assert set(summary["diversity_vs_real"]) == {"0:20", "0:40", "0:60"}  # one spread ratio per sample point
    assert all(0 < ratio < 10 for ratio in summary["diversity_vs_real"].values())


def test_paper_preset_trains_one_gan_per_class(split_data, tmp_path):
    summary = api.gan_train(split_data, tmp_path / "paper", preset="paper", iterations=4, sample_every=2, **TINY)
    assert summary["units"] == 2
    units = load_checkpoint(tmp_path / "paper" / "checkpoint.pt")["units"]
    assert [unit["class_ids"] for unit in units] == [[0], [1]]


def test_gan_resume_equals_uninterrupted(split_data, tmp_path, monkeypatch):
    settings = dict(preset="paper", iterations=6, sample_every=2, seed=3, **TINY)
    # the 5th grid: unit 1, after its first sample point was checkpointed
    a, b = gan_trained_whole_and_resumed(split_data, tmp_path, monkeypatch, settings, 5)
    assert all(torch.equal(a[u]["generator"][k], b[u]["generator"][k]) for u in range(2) for k in a[u]["generator"])


@pytest.fixture
def trained_gan(split_data, tmp_path):
    api.gan_train(split_data, tmp_path / "gan", preset="default", iterations=10, sample_every=10, **TINY)
    return tmp_path / "gan"


def test_conditional_sampling_yields_the_asked_counts(trained_gan, tmp_path, capsys):
    assert main(["gan", "sample", str(trained_gan), "--per-class", "7", "--out", str(tmp_path / "synth")]) == 0
    assert sorted(p.name for p in (tmp_path / "synth").iterdir()) == ["cow", "horse", "synth.json"]
    assert len(list((tmp_path / "synth" / "cow").glob("*.png"))) == 7
    info = json.loads((tmp_path / "synth" / "synth.json").read_text())
    assert info["counts"] == {"cow": 7, "horse": 7} and info["seed"] == 0 and "gan" in info
    # an existing set is not replaced without --force
    assert main(["gan", "sample", str(trained_gan), "--per-class", "2", "--out", str(tmp_path / "synth")]) == 2
    assert "--force" in capsys.readouterr().err


def test_filtering_keeps_only_confident_samples(trained_gan, split_data, tmp_path):
    api.train(split_data, tmp_path / "run", recipe="scratch", epochs=2, image_size=16, quiet=True)
    strict = api.gan_sample(
        trained_gan,
        tmp_path / "kept",
        per_class=5,
        filter_run=tmp_path / "run",
        min_confidence=1.0,
        warn=lambda message: None,
    )
    assert all(count < 5 for count in strict["counts"].values())  # probability 1.0 is (almost) never reached
    loose = api.gan_sample(trained_gan, tmp_path / "all", per_class=5, filter_run=tmp_path / "run", min_confidence=0.0)
    assert loose["counts"] == {"cow": 5, "horse": 5}


@pytest.mark.slow
def test_score_json_shape(trained_gan, split_data, capsys):
    assert main(["gan", "score", str(trained_gan), str(split_data), "--json", "--per-class", "6"]) == 0
    score = json.loads(capsys.readouterr().out)
    for key in ("gan_test", "gan_train", "real_train_reference"):
        assert set(score[key]) >= {"accuracy", "ci95", "n"}
    assert score["gan_test"]["n"] == 12 and score["gan_train"]["n"] == 12
    memo = score["memorisation"]
    assert memo["n"] == 12
    copies = memo["near_copy_fraction"] * 12  # a count of samples, with its Wilson interval around it
    assert copies == round(copies)
    assert memo["near_copy_ci95"] == pytest.approx(list(wilson_interval(round(copies), 12)))
    assert (trained_gan / "score.json").is_file()
    # issue 30: KID with its standard error, and GAN-test per class (the overall accuracy is their mean here)
    assert score["kid_se"] > 0 and score["kid"] > -3 * score["kid_se"]
    assert score["kid_detail"]["n_real"] == 12 and score["kid_detail"]["n_synthetic"] == 12
    per_class = score["gan_test_per_class"]
    assert set(per_class) == {"cow", "horse"}
    assert sum(per_class.values()) / 2 == pytest.approx(score["gan_test"]["accuracy"])
    assert main(["gan", "score", str(trained_gan), str(split_data), "--per-class", "2"]) == 0
    printed = capsys.readouterr().out
    assert "KID vs real test photos" in printed and "GAN-test per class: cow" in printed


def test_score_without_a_run_trains_the_scoring_cnn_at_its_own_size(trained_gan, split_data, monkeypatch):
    """Since issue 25 the default recipe is the probe at 260 px; gan score without --run read the data at
    that size and trained the report's CNN on 260 px images (100 s in this suite instead of seconds)."""
    import pasture.gan.synth as synth

    seen = []
    real = synth.train_classifier

    def spying(dataset, recipe, seed, **options):
        seen.append((recipe.model, recipe.image_size, dataset.image_size))
        return real(dataset, replace(recipe, epochs=1), seed, **options)

    monkeypatch.setattr(synth, "train_classifier", spying)
    api.gan_score(trained_gan, split_data, per_class=2, write=False)
    assert seen and all(entry == ("paper-cnn", 64, 64) for entry in seen)


def test_synthetic_mixing_ratio_is_respected():
    generator = torch.Generator().manual_seed(0)
    real = torch.zeros(16, 3, 4, 4, dtype=torch.uint8)
    synthetic = ImageSet(
        torch.full((5, 3, 4, 4), 255, dtype=torch.uint8),
        torch.ones(5, dtype=torch.long),
        [],
        ["a", "b"],
        split="synthetic",
    )
    shares = []
    for _ in range(400):
        images, labels, mask = mix_in_synthetic(real, torch.zeros(16, dtype=torch.long), synthetic, 0.3, generator)
        assert torch.equal(labels, mask.long()) and torch.equal(images[:, 0, 0, 0] == 255, mask)
        shares.append(float(mask.float().mean()))
    assert abs(sum(shares) / len(shares) - 0.3) < 0.02


def test_train_with_synthetic_folder(trained_gan, split_data, tmp_path):
    api.gan_sample(trained_gan, tmp_path / "synth", per_class=4)
    metrics = api.train(
        split_data,
        tmp_path / "run",
        recipe="scratch",
        epochs=1,
        image_size=16,
        quiet=True,
        synthetic=tmp_path / "synth",
        synthetic_ratio=0.25,
    )
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["identity"]["synthetic"]["ratio"] == 0.25 and metrics["n_test"] == 12
    with pytest.raises(UserError, match="--synthetic-ratio"):
        api.train(
            split_data, tmp_path / "run2", recipe="scratch", epochs=1, image_size=16, quiet=True, synthetic_ratio=0.5
        )


def test_bad_gan_inputs(split_data, tmp_path, capsys):
    assert main(["gan", "train", str(split_data), "--out", str(tmp_path / "g"), "--image-size", "48"]) == 2
    assert "power of two" in capsys.readouterr().err
    assert main(["gan", "train", str(split_data), "--out", str(tmp_path / "g"), "--diffaugment", "zoom"]) == 2
    assert "--diffaugment" in capsys.readouterr().err
    assert main(["gan", "sample", str(tmp_path), "--out", str(tmp_path / "s")]) == 2
    assert "not a pasture GAN folder" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_generate_with_truncation_stays_in_range(trained_gan):
    from pasture.gan.synth import load_gan

    preset, classes, samplers, _ = load_gan(trained_gan)
    truncated = generate(preset, samplers, 1, 64, torch.Generator().manual_seed(0), truncation=0.5)
    plain = generate(preset, samplers, 1, 64, torch.Generator().manual_seed(0))
    assert truncated.shape == (64, 3, 16, 16) and truncated.dtype == torch.uint8
    # the truncation trick trades variety for typicality: the samples spread less around their mean
    spread = lambda images: float(images.float().std(0).mean())  # noqa: E731
    assert 0 < spread(truncated) < spread(plain)


def test_memorisation_flags_copies_but_not_blurry_averages():
    from pasture.gan.synth import memorisation

    generator = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (20, 3, 32, 32), generator=generator, dtype=torch.uint8)
    real_set = ImageSet(real, torch.zeros(20, dtype=torch.long), [], ["a"])
    noisy_copies = (real[:10].int() + torch.randint(-3, 4, (10, 3, 32, 32), generator=generator)).clamp(0, 255)
    averages = real.float().mean(0, keepdim=True).repeat(10, 1, 1, 1).round()
    copies = memorisation(
        ImageSet(noisy_copies.to(torch.uint8), torch.zeros(10, dtype=torch.long), [], ["a"]), real_set
    )
    blurry = memorisation(ImageSet(averages.to(torch.uint8), torch.zeros(10, dtype=torch.long), [], ["a"]), real_set)
    assert copies["near_copy_fraction"] == 1.0
    assert blurry["near_copy_fraction"] == 0.0 and blurry["closer_than_real_5th_percentile"] == 1.0
