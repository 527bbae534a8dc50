"""The `projected` GAN: a light FastGAN-style generator and a Projected GAN discriminator that judges
images in the feature space of a frozen, ImageNet-pretrained EfficientNet-Lite0 (the backbone pasture
already ships offline). Written from the papers:

- Projected GAN (Sauer, Chitta, Mueller, Geiger, NeurIPS 2021). D's input (DiffAugmented by the
  trainer) is resized to `feature_size` px and read by Lite0's stages at 1/4, 1/8, 1/16 and 1/32 of
  that size (24, 40, 112, 320 channels). Each stage is mixed across channels by a random 1x1
  convolution (CCM) and across scales by adding the upsampled deeper mix through a random 3x3
  convolution (CSM). The paper keeps both random and untrained: a trainable projection lets D
  learn to look at a few easy features and nothing else. One small spectrally normalised patch
  discriminator per stage; all their patch logits go to the hinge loss.
- FastGAN (Liu, Zhu, Song, Elgammal, ICLR 2021): a 4x4 seed, then per doubling of size a nearest
  upsample, a 3x3 convolution, BatchNorm and a GLU; skip-layer excitation (SLE) lets the 4x4 and
  8x8 maps gate the channels of the maps 8x larger, a cheap long-range path.

Conditional (num_classes > 0): G concatenates a class embedding to z (as gan/nets.py);
each patch discriminator adds <embed(y), patch features> to every patch logit (the projection of
Miyato & Koyama 2018, as the DCGAN discriminator does for its one logit).

Why frozen features on 100 photos: D cannot memorise 100 photos through a fixed network as easily
as with its own, and what it compares (ImageNet features) already separates "cow-like" from "blurry
blob". The feature network is held outside the module's parameters and state dict: nothing trains it,
no checkpoint carries its 14 MB, and it always runs in eval mode (its BatchNorm statistics stay).
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from pasture.gan.nets import dcgan_init, generator_input, upsampling_blocks
from pasture.models.pretrained import BACKBONES, build_backbone, timm_module

FEATURE_BACKBONE = "effnet-lite0"
FEATURE_STAGES = (1, 2, 3, 4)  # timm's out_indices: strides 4, 8, 16, 32
MIN_HEAD_SIZE = 8  # each patch D halves its stage's map down to at most 8x8 patches


def generator_widths(image_size: int, ngf: int) -> list[int]:
    """Channels at 4, 8, 16, ... px: FastGAN's taper (16, 8, 4, 2, 1 x ngf), at least ngf."""
    return [ngf * max(1, 16 >> step) for step in range(upsampling_blocks(image_size) + 1)]


def _up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(in_channels, 2 * out_channels, 3, 1, 1, bias=False),
        nn.BatchNorm2d(2 * out_channels),
        nn.GLU(dim=1),
    )


class SkipExcitation(nn.Module):
    """SLE: a small map's pooled summary -> per-channel gates (0..1) for a map 8x larger."""

    def __init__(self, small_channels: int, large_channels: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            nn.Conv2d(small_channels, large_channels, 4, 1, 0, bias=False),
            nn.SiLU(),
            nn.Conv2d(large_channels, large_channels, 1, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, small: torch.Tensor, large: torch.Tensor) -> torch.Tensor:
        return large * self.main(small)


class LiteGenerator(nn.Module):
    """FastGAN-style generator for any power-of-two size >= 16 (same call as gan/nets.py's Generator)."""

    def __init__(self, nz: int = 64, image_size: int = 64, ngf: int = 32, num_classes: int = 0):
        super().__init__()
        self.nz, self.image_size, self.num_classes = nz, image_size, num_classes
        widths = generator_widths(image_size, ngf)
        self.embed = nn.Embedding(num_classes, nz) if num_classes else None
        self.seed = nn.Sequential(
            nn.ConvTranspose2d(nz * (2 if num_classes else 1), 2 * widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(2 * widths[0]),
            nn.GLU(dim=1),
        )
        self.ups = nn.ModuleList(_up_block(widths[i], widths[i + 1]) for i in range(len(widths) - 1))
        # SLE from the maps at 4 and 8 px (indices 0, 1) onto those at 32 and 64 px (3 steps up).
        self.excite = nn.ModuleDict(
            {
                str(small + 3): SkipExcitation(widths[small], widths[small + 3])
                for small in (0, 1)
                if small + 3 < len(widths)
            }
        )
        self.to_rgb = nn.Sequential(nn.Conv2d(widths[-1], 3, 3, 1, 1, bias=False), nn.Tanh())
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z: N x nz -> images N x 3 x S x S in [-1, 1]."""
        maps = [self.seed(generator_input(self.embed, z, labels))]
        for index, up in enumerate(self.ups, start=1):
            large = up(maps[-1])
            if str(index) in self.excite:
                large = self.excite[str(index)](maps[index - 3], large)
            maps.append(large)
        return self.to_rgb(maps[-1])


class FrozenFeatures(nn.Module):
    """EfficientNet-Lite0's stages with its ImageNet weights, frozen. The network is deliberately not a
    registered child: it has no parameters to train, nothing of it goes into a state dict, and train()
    cannot switch its BatchNorm to batch statistics. _apply (which .to() uses) still moves it."""

    def __init__(self):
        super().__init__()
        full = build_backbone(FEATURE_BACKBONE, 2, BACKBONES[FEATURE_BACKBONE].native_image_size, "imagenet")
        net = timm_module().create_model(
            BACKBONES[FEATURE_BACKBONE].timm_name, features_only=True, out_indices=FEATURE_STAGES
        )
        missing, _ = net.load_state_dict(full.state_dict(), strict=False)  # the head is dropped
        if missing:
            raise RuntimeError(f"the feature network lacks ImageNet weights for {missing[:3]}")
        self.net: nn.Module  # set past nn.Module's registration (see the class docstring)
        object.__setattr__(self, "net", net.eval().requires_grad_(False))
        info = cast(Any, net.feature_info)  # timm's FeatureInfo, reached through nn.Module's attribute lookup
        self.channels: list[int] = list(info.channels())
        self.reductions: list[int] = list(info.reduction())

    def _apply(self, fn, recurse=True):
        self.net._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return cast(list[torch.Tensor], self.net(images))


class PatchHead(nn.Module):
    """One stage's patch discriminator: strided 4x4 convolutions down to at most 8x8, a 3x3
    convolution, then one logit per patch (+ the class projection)."""

    def __init__(self, channels: int, size: int, width: int, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        while size > MIN_HEAD_SIZE:
            layers += [spectral_norm(nn.Conv2d(channels, width, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            channels, size = width, size // 2
        layers += [spectral_norm(nn.Conv2d(channels, width, 3, 1, 1)), nn.LeakyReLU(0.2, inplace=True)]
        self.main = nn.Sequential(*layers)
        self.final = spectral_norm(nn.Conv2d(width, 1, 1))
        self.embed = nn.Embedding(num_classes, width) if num_classes else None
        self.scale = width**-0.5  # the projection's sum over `width` channels, kept near unit size

    def forward(self, mixed: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        # Miyato & Koyama's projection: a class-blind logit plus <embed(y), features>.
        hidden = self.main(mixed)
        logits = self.final(hidden)[:, 0]
        if self.embed is not None:
            if labels is None:
                raise ValueError("a conditional discriminator needs labels")
            logits = logits + (self.embed(labels)[:, :, None, None] * hidden).sum(dim=1) * self.scale
        return logits.flatten(1)


class ProjectedDiscriminator(nn.Module):
    """D on frozen Lite0 features mixed by fixed random CCM/CSM; logits N x (patches of all stages)."""

    def __init__(self, image_size: int = 64, ndf: int = 32, num_classes: int = 0, feature_size: int = 128):
        super().__init__()
        self.image_size, self.num_classes, self.feature_size = image_size, num_classes, feature_size
        self.features = FrozenFeatures()
        widths = [ndf * 2**stage for stage in range(len(FEATURE_STAGES))]  # 1, 2, 4, 8 x ndf
        sizes = [feature_size // reduction for reduction in self.features.reductions]
        self.ccm = nn.ModuleList(
            nn.Conv2d(channels, width, 1) for channels, width in zip(self.features.channels, widths)
        )
        self.csm = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 3, 1, 1) for i in range(len(widths) - 1))
        for projection in (*self.ccm, *self.csm):
            nn.init.kaiming_normal_(projection.weight)  # random, scaled to keep the features' variance
            nn.init.zeros_(projection.bias)
            projection.requires_grad_(False)  # fixed at initialisation (the paper's random projections)
        self.heads = nn.ModuleList(PatchHead(width, size, width, num_classes) for width, size in zip(widths, sizes))

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """images N x 3 x S x S in [-1, 1] (Lite0's own normalisation) -> patch logits N x P (real > 0)."""
        if images.shape[-1] != self.feature_size:
            images = F.interpolate(images, size=(self.feature_size,) * 2, mode="bilinear", align_corners=False)
        # D's own steps need no gradient into the image: skip the frozen network's backward graph then.
        with torch.set_grad_enabled(torch.is_grad_enabled() and images.requires_grad):
            stages = self.features(images)
        mixed = [projection(stage) for projection, stage in zip(self.ccm, stages)]
        for index in reversed(range(len(mixed) - 1)):
            deeper = F.interpolate(mixed[index + 1], size=mixed[index].shape[-2:], mode="bilinear", align_corners=False)
            mixed[index] = mixed[index] + self.csm[index](deeper)
        return torch.cat([head(stage, labels) for head, stage in zip(self.heads, mixed)], dim=1)
