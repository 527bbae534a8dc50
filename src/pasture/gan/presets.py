"""GAN presets held as data: the report's DCGAN and the data-efficient default. Torch-free (the CLI
builds `pasture gan train`'s flags from the fields)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pasture.classify.recipe_fields import PRECISIONS
from pasture.core.defaults import MAX_IMAGE_SIZE, setting
from pasture.core.errors import UserError

LOSSES = ("bce", "hinge")
ARCHITECTURES = ("dcgan", "projected")


@dataclass(frozen=True)
class GanPreset:
    name: str
    image_size: int = setting(
        64, "generated image side in px: a power of two >= 16", minimum=16, maximum=MAX_IMAGE_SIZE, unit="px"
    )
    architecture: str = setting(
        "dcgan",
        "dcgan (the report's G and D, from scratch) or projected (light G; D on frozen EfficientNet-Lite0 features)",
        ARCHITECTURES,
    )
    feature_size: int = setting(
        128, "projected: px at which the frozen network reads D's input (a multiple of 32)", minimum=32
    )
    nz: int = setting(100, "latent length (the report: 10)", minimum=1)
    ngf: int = setting(64, "generator width", minimum=1)
    ndf: int = setting(64, "discriminator width", minimum=1)
    conditional: bool = setting(False, "one class-conditional GAN for all classes (else one GAN per class)")
    loss: str = setting("bce", "bce (minimax, non-saturating G) or hinge", LOSSES)
    iterations: int = setting(1000, "D+G steps per GAN unit", minimum=1)
    batch_size: int = setting(32, "images per D+G step", minimum=2, hint="a GAN batch needs two images or more")
    lr_g: float = setting(2e-4, "generator learning rate (Adam)", positive=True)
    lr_d: float = setting(2e-4, "discriminator learning rate (Adam)", positive=True)
    beta1: float = setting(0.5, "Adam's beta1 for both", minimum=0, below=1)
    diffaugment: str = setting(
        "none", "DiffAugment policy on every D input: color,translation,cutout (any subset) or none"
    )
    ada: bool = setting(False, "adapt the augmentation probability to D's overfitting (ADA-style)")
    ada_target: float = setting(0.6, "ADA's target for E[sign D(x)]")
    ema_decay: float = setting(0.0, "moving average of G's weights, used for sampling; 0 = off", minimum=0, below=1)
    sample_every: int = setting(100, "iterations between sample grids, diversity checks and checkpoints", minimum=1)
    precision: str = setting(
        "fp32", "bf16 autocasts forward passes (faster on CPUs with bf16 support; opt-in)", PRECISIONS
    )
    channels_last: bool = setting(False, "NHWC memory layout for G and D (same numbers, often faster convs on CPU)")
    description: str = ""

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.architecture == "dcgan":  # DCGAN configs and GAN-store keys stay as they were before it
            del data["architecture"], data["feature_size"]
        return data


GAN_PRESETS: dict[str, GanPreset] = {
    preset.name: preset
    for preset in (
        # The report: DCGAN (DCGAN tutorial's Adam 2e-4, beta1 0.5), latent length 10, one GAN per class,
        # the minimax loss, no augmentation. "Images after 200 iterations" is its Figure 8.
        GanPreset(
            name="paper",
            image_size=64,
            nz=10,
            ngf=64,
            ndf=64,
            conditional=False,
            loss="bce",
            iterations=300,
            batch_size=32,
            diffaugment="none",
            ema_decay=0.0,
            sample_every=50,
            description="the report's DCGAN: nz=10, one GAN per class, minimax loss, no augmentation",
        ),
        # Data-efficient: one conditional GAN, DiffAugment on every D input, hinge loss, G EMA.
        # Narrower than DCGAN's 64 channels so it trains in minutes on a laptop CPU.
        GanPreset(
            name="default",
            image_size=64,
            nz=64,
            ngf=32,
            ndf=32,
            conditional=True,
            loss="hinge",
            iterations=1500,
            batch_size=32,
            lr_g=2e-4,
            lr_d=2e-4,
            diffaugment="color,translation,cutout",
            ema_decay=0.999,
            sample_every=250,
            description="conditional DCGAN with DiffAugment (color,translation,cutout), hinge loss, G EMA",
        ),
        # Projected GAN (issue 30): the discriminator reads frozen EfficientNet-Lite0 features at 128 px
        # (2x the image: at 64 px Lite0's last stage is 2x2), a FastGAN-style generator, DiffAugment, hinge.
        # One GAN per class, as Projected GAN and FastGAN are run on their few-shot sets. One conditional
        # GAN for both was tried first (benchmarks/gan.py, 1000 iterations, cowhorse-dev): G ignored the
        # class (a probe called 61% of "cow" and 50% of "horse" samples by their class); with the class
        # code drawn N(0, 1) instead of DCGAN's N(0, 0.02), each class collapsed to one image by iteration
        # 200-300. One per class: the probe calls 96% of cow and 58% of horse samples by their class.
        GanPreset(
            name="projected",
            architecture="projected",
            feature_size=128,
            image_size=64,
            nz=64,
            ngf=16,
            ndf=32,
            conditional=False,
            loss="hinge",
            iterations=500,
            batch_size=16,
            lr_g=2e-4,
            lr_d=2e-4,
            diffaugment="color,translation,cutout",
            ema_decay=0.999,
            sample_every=100,
            channels_last=True,  # 0.73 s per iteration against 1.06 s (2-core AVX2 EPYC, 20 iterations)
            description="projected GAN, one per class: light G, D on frozen EfficientNet-Lite0 features, DiffAugment, hinge",
        ),
    )
}


def get_gan_preset(name: str) -> GanPreset:
    if name not in GAN_PRESETS:
        raise UserError(f"--preset {name}: unknown GAN preset; choose one of {', '.join(GAN_PRESETS)}")
    return GAN_PRESETS[name]
