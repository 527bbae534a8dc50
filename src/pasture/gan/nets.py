"""DCGAN generator and discriminator for any power-of-two image size, optionally class-conditional.

As the report and the DCGAN paper (Radford et al. 2015) describe: G maps a latent vector through
strided ConvTranspose2d + BatchNorm2d + ReLU blocks to a Tanh RGB image; D is strided Conv2d +
BatchNorm2d + LeakyReLU(0.2) blocks to one logit (the sigmoid lives in the BCE-with-logits loss).
The number of blocks follows from the image size (4 -> 8 -> ... -> size): nothing is hard-coded.

Conditional (num_classes > 0): G concatenates a learned class embedding to z; D adds a projection
term <embed(y), pooled features> to its logit (Miyato & Koyama 2018), so every class shares one
network and small classes borrow what they have in common.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def upsampling_blocks(image_size: int) -> int:
    """Stride-2 blocks between the 4x4 seed and the output; image_size must be a power of two >= 16."""
    if image_size < 16 or image_size & (image_size - 1):
        raise ValueError(f"GAN image size must be a power of two >= 16 (16, 32, 64, 128, ...), got {image_size}")
    return int(math.log2(image_size)) - 2


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights ~ N(0, 0.02); BatchNorm scale ~ N(1, 0.02), shift 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, 0.02)


def generator_input(embed: nn.Embedding | None, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """A generator's N x C x 1 x 1 input: z, with the class code beside it when conditional."""
    if embed is not None:
        if labels is None:
            raise ValueError("a conditional generator needs labels")
        z = torch.cat([z, embed(labels)], dim=1)
    return z.view(z.shape[0], -1, 1, 1)


class Generator(nn.Module):
    def __init__(self, nz: int = 100, image_size: int = 64, ngf: int = 64, num_classes: int = 0):
        super().__init__()
        self.nz, self.image_size, self.num_classes = nz, image_size, num_classes
        blocks = upsampling_blocks(image_size)
        width = ngf * 2 ** (blocks - 1)  # 64 px: ngf*8 at 4x4, halving at every doubling of size
        self.embed = nn.Embedding(num_classes, nz) if num_classes else None
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz * (2 if num_classes else 1), width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(blocks - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z: N x nz -> images N x 3 x S x S in [-1, 1]."""
        return self.main(generator_input(self.embed, z, labels))


class Discriminator(nn.Module):
    def __init__(self, image_size: int = 64, ndf: int = 64, num_classes: int = 0):
        super().__init__()
        self.image_size, self.num_classes = image_size, num_classes
        blocks = upsampling_blocks(image_size)
        layers: list[nn.Module] = [nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        width = ndf
        for _ in range(blocks - 1):
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            width *= 2
        self.features = nn.Sequential(*layers)  # -> width x 4 x 4
        self.final = nn.Conv2d(width, 1, 4, 1, 0, bias=False)
        self.embed = nn.Embedding(num_classes, width) if num_classes else None
        self.feature_width = width
        self.apply(dcgan_init)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """images N x 3 x S x S in [-1, 1] -> logits N (real > 0)."""
        hidden = self.features(images)
        logits = self.final(hidden).view(-1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("a conditional discriminator needs labels")
            logits = logits + (self.embed(labels) * hidden.mean(dim=(2, 3))).sum(dim=1)
        return logits
