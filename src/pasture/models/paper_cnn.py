"""The report's CNN ("Improving a CNN based Image Classifier", section III.B.3), layer for layer.

    conv 3x3, 16 -> ReLU -> maxpool 2
    conv 2x2, 32 -> ReLU -> dropout 0.5 -> maxpool 2
    conv 2x2, 8  -> ReLU -> flatten
    FC 800 -> ReLU -> dropout 0.15 -> FC 200 -> dropout 0.5 -> FC num_classes   (logits)

Softmax is applied only at inference (`torch.softmax(logits)`); the training loss is cross-entropy
on the logits, since a softmax before nn.CrossEntropyLoss would apply it twice.
"""

from __future__ import annotations

from torch import nn

from pasture.models.registry import Dropout, ModelSpec, register_model


def paper_cnn_flatten_size(image_size: int) -> int:
    """Length of the flattened feature vector for a square input of `image_size` pixels.

    Each step follows n_out = floor((n_in + 2p - k) / s) + 1 (the report's Equation 1), with p=0:
    conv3 (-2), pool (//2), conv2 (-1), pool (//2), conv2 (-1), times 8 channels.

    The report is inconsistent here: it states a 62x62 first-conv output, which means a 64x64 input,
    and then a flatten length of 1352 = 13*13*8. With 64x64 input the layers give 62 -> 31 -> 30 ->
    15 -> 14, so 14*14*8 = 1568; 1352 corresponds to a 62 or 63 px input. pasture computes the size
    from the input instead of hard-coding either number.
    """
    side = image_size - 2  # conv 3x3
    side //= 2  # maxpool 2
    side -= 1  # conv 2x2
    side //= 2  # maxpool 2
    side -= 1  # conv 2x2
    if side < 1:
        raise ValueError(f"paper-cnn needs image_size >= {PAPER_CNN_MIN_SIZE}, got {image_size}")
    return side * side * 8


PAPER_CNN_MIN_SIZE = 12  # smallest input whose last conv output is still 1x1


class PaperCNN(nn.Module):
    """The report's classifier. Note: it has no activation after FC 200 (the text names none), so
    FC 200 and the output layer compose linearly; kept as written so the experiment can be re-run."""

    def __init__(self, num_classes: int, image_size: int = 64):
        super().__init__()
        # The report's order is conv -> ReLU [-> dropout] -> maxpool. ReLU commutes exactly with max
        # pooling (both are monotone) and with dropout (which scales by a positive number), so each
        # ReLU is applied after the pooling instead: the same outputs and gradients, with the ReLU
        # working on a quarter of the elements. Parameter indices (features.0/3/7) are unchanged.
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=3),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, kernel_size=2),
            Dropout(0.5),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 8, kernel_size=2),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(paper_cnn_flatten_size(image_size), 800),
            nn.ReLU(inplace=True),
            Dropout(0.15),
            nn.Linear(800, 200),
            Dropout(0.5),
            nn.Linear(200, num_classes),
        )

    def forward(self, images):
        return self.classifier(self.features(images))


register_model(
    ModelSpec(
        name="paper-cnn",
        build=lambda num_classes, image_size, weights: PaperCNN(num_classes, image_size),
        min_image_size=PAPER_CNN_MIN_SIZE,
        channels_last=True,
        description="the report's CNN, exactly (3 convs, FC 800-200-classes, dropout)",
    )
)
