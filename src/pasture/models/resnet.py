"""Small residual networks with BatchNorm for 40 images per class at 32-128 px, trained from scratch.

`resnet-small`: stem conv 3x3 (32) + BN + ReLU + maxpool 2, then three stages of one basic block each
(32, 64, 128 channels; stages 2 and 3 halve the resolution), global average pooling, dropout, linear.
About 0.3 M parameters; any input size >= 16 works (the pooling is global, nothing is hard-coded).
"""

from __future__ import annotations

from torch import nn

from pasture.models.registry import Dropout, ModelSpec, register_model


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        # Zero-init the last BN's scale: each block starts as the identity, which trains more stably
        # from very few images (Goyal et al. 2017).
        nn.init.zeros_(self.bn2.weight)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    def __init__(self, num_classes: int, widths=(32, 64, 128), dropout: float = 0.2):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        stages, channels = [], widths[0]
        for index, width in enumerate(widths):
            stages.append(BasicBlock(channels, width, stride=1 if index == 0 else 2))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            Dropout(dropout),
            nn.Linear(channels, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images):
        return self.head(self.stages(self.stem(images)))


register_model(
    ModelSpec(
        name="resnet-small",
        build=lambda num_classes, image_size, weights: SmallResNet(num_classes),
        min_image_size=16,
        channels_last=True,
        description="small residual net with BatchNorm (~0.3 M parameters), from scratch",
    )
)
