"""Kernel Inception Distance (Binkowski, Sutherland, Arbel, Gretton, ICLR 2018), with its standard error,
in the feature space of a network the GANs never train against.

KID is the squared maximum mean discrepancy between two sets of features under the cubic polynomial
kernel k(x, y) = (x.y / d + 1)^3, estimated without bias (the U-statistic: no self-pairs). Unlike FID
it is unbiased at small n, which is all pasture has (100 real test photos). Its standard error is
the two-sample jackknife: leave out each real and each synthetic feature in turn, in closed form from
the kernel matrices' row sums, so it costs no more than the estimate.

The features are EfficientNet-Lite2's pooled ImageNet features at 260 px: not Lite0, whose features
the projected GAN's discriminator is trained on (grading a GAN with its own D's network rewards
fooling that network, not looking like the photos). Both sets are first brought to the same size,
the GAN's, so KID compares content, not the real photos' extra sharpness.
"""

from __future__ import annotations

import torch

from pasture.classify.backbones import backbone_features
from pasture.gan.trainer import resize_uint8
from pasture.models.registry import create_model

KID_BACKBONE = "effnet-lite2"
KID_IMAGE_SIZE = 260


def polynomial_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def kernel_distance(real: torch.Tensor, fake: torch.Tensor) -> tuple[float, float]:
    """(unbiased MMD^2 under the cubic kernel, its jackknife standard error) of two feature sets (n x d,
    m x d; n, m >= 3), computed in float64."""
    x, y = real.double(), fake.double()
    n, m = x.shape[0], y.shape[0]
    if n < 3 or m < 3:
        raise ValueError(f"KID needs at least 3 features per set, got {n} and {m}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    rows_xx = kxx.sum(1) - kxx.diagonal()  # each x's kernel with the other x's
    rows_yy = kyy.sum(1) - kyy.diagonal()
    sum_xx, sum_yy, sum_xy = rows_xx.sum(), rows_yy.sum(), kxy.sum()

    def estimate(sxx, syy, sxy, nx, ny):
        return sxx / (nx * (nx - 1)) + syy / (ny * (ny - 1)) - 2 * sxy / (nx * ny)

    value = estimate(sum_xx, sum_yy, sum_xy, n, m)
    without_x = estimate(sum_xx - 2 * rows_xx, sum_yy, sum_xy - kxy.sum(1), n - 1, m)  # leave out x_i
    without_y = estimate(sum_xx, sum_yy - 2 * rows_yy, sum_xy - kxy.sum(0), n, m - 1)  # leave out y_j
    variance = (n - 1) / n * ((without_x - without_x.mean()) ** 2).sum() + (m - 1) / m * (
        (without_y - without_y.mean()) ** 2
    ).sum()
    return float(value), float(variance.sqrt())


class KidFeatures:
    """Lite2's pooled features of uint8 images, resized to `image_size` (the GAN's) and then to 260 px."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.model = create_model(KID_BACKBONE, 2, KID_IMAGE_SIZE, "imagenet").to(device).eval()

    def __call__(self, images_uint8: torch.Tensor, image_size: int) -> torch.Tensor:
        return backbone_features(self.model, resize_uint8(resize_uint8(images_uint8, image_size), KID_IMAGE_SIZE))


def kid_score(synthetic_uint8: torch.Tensor, real_uint8: torch.Tensor, image_size: int, device="cpu") -> dict:
    """KID of samples against real photos at the GAN's `image_size`, with its standard error and n
    (kid and kid_se None when either set has fewer than 3 images; `gan score` says why)."""
    if min(len(real_uint8), len(synthetic_uint8)) < 3:
        value, se = None, None
    else:
        features = KidFeatures(device)
        value, se = kernel_distance(features(real_uint8, image_size), features(synthetic_uint8, image_size))
    return {
        "kid": value,
        "kid_se": se,
        "n_real": len(real_uint8),
        "n_synthetic": len(synthetic_uint8),
        "features": f"{KID_BACKBONE} (ImageNet) at {KID_IMAGE_SIZE} px",
        "image_size": image_size,
    }
