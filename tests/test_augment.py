import torch

from pasture.classify.augment import AUGMENT_PRESETS, augment_batch, get_augment


def batch(n=8, size=16):
    torch.manual_seed(0)
    return torch.rand(n, 3, size, size)


def test_none_is_identity():
    images = batch()
    assert augment_batch(images, get_augment("none"), torch.Generator().manual_seed(0)) is images


def saturated(images: torch.Tensor) -> float:
    """The share of values at exactly 0 or 1: the clamp at the end hides an augmentation that overshoots,
    so the range alone proves nothing; a broken one saturates most pixels."""
    return float(((images == 0) | (images == 1)).float().mean())


def test_paper_keeps_shape_and_does_not_saturate():
    images = batch()
    out = augment_batch(images, get_augment("paper"), torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, 16, 16)
    assert saturated(out) < 0.2  # rotation/translation pad a rim with 0; the jitter keeps the rest inside
    assert abs(float(out.mean()) - float(images.mean())) < 0.15  # brightness jitter of 0.2 is mild


def test_each_image_gets_its_own_transform():
    one = batch(1).repeat(16, 1, 1, 1)  # 16 copies of the same image
    out = augment_batch(one, get_augment("paper"), torch.Generator().manual_seed(1))
    distinct = {tuple(image.flatten()[:50].round(decimals=4).tolist()) for image in out}
    assert len(distinct) == 16


def test_same_generator_seed_same_output():
    preset = get_augment("paper")
    first = augment_batch(batch(), preset, torch.Generator().manual_seed(3))
    second = augment_batch(batch(), preset, torch.Generator().manual_seed(3))
    third = augment_batch(batch(), preset, torch.Generator().manual_seed(4))
    assert torch.equal(first, second) and not torch.equal(first, third)


def test_flip_only_preset_flips_about_half():
    from dataclasses import replace

    flip_only = replace(AUGMENT_PRESETS["none"], name="flip", flip_p=0.5)
    images = batch(200, 4)
    out = augment_batch(images, flip_only, torch.Generator().manual_seed(0))
    flipped = sum(torch.equal(o, i.flip(-1)) for o, i in zip(out, images))
    unchanged = sum(torch.equal(o, i) for o, i in zip(out, images))
    assert flipped + unchanged == 200 and 70 < flipped < 130


def test_colour_jitter_matches_torchvision_per_image_and_leaves_the_input_alone():
    from dataclasses import replace

    import torchvision.transforms.functional as TF

    from pasture.classify.augment import colour_jitter

    preset = replace(AUGMENT_PRESETS["none"], name="bcs", brightness=0.4, contrast=0.4, saturation=0.4)
    images = batch(6, 12)
    original = images.clone()
    out = colour_jitter(images, preset, torch.Generator().manual_seed(7))
    assert torch.equal(images, original)  # later changes work in place, but never on the caller's tensor
    # The same factors, drawn in the same order (brightness, contrast, saturation; one per image each).
    draws = torch.Generator().manual_seed(7)
    factors = [0.6 + 0.8 * torch.rand(6, generator=draws) for _ in range(3)]
    for i in range(6):
        expected = TF.adjust_brightness(images[i], float(factors[0][i]))
        expected = TF.adjust_contrast(expected, float(factors[1][i]))
        expected = TF.adjust_saturation(expected, float(factors[2][i]))
        assert torch.allclose(out[i], expected, atol=1e-3), i  # torchvision's grey weights differ at 1e-4
