"""Recipe: the fields a training recipe holds (model, input size, augmentation, optimiser, schedule, ...),
each with its CLI help and its bounds (core.defaults.setting), so `pasture train` offers each as a flag,
experiments take each as a condition key, and one checker holds every bound. Torch-free at import.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pasture.core.defaults import MAX_IMAGE_SIZE, setting

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine")
PRETRAINED_MODES = ("none", "probe", "finetune")
PRECISIONS = ("fp32", "bf16")
# What a probe reads of its recipe (classify.probe, features, logistic, backbones): the rest trains weights.
PROBE_FIELDS = (
    "name",
    "description",
    "model",
    "image_size",
    "pretrained",
    "weights",
    "head_c",
    "tta",
    "ensemble",
    "balance_classes",
)


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str = setting(
        "paper-cnn",
        "model name: paper-cnn, resnet-small (from scratch); effnet-lite0, effnet-lite1, effnet-lite2 (pretrained)",
    )
    image_size: int = setting(
        64,
        "square input side in px",
        minimum=1,
        maximum=MAX_IMAGE_SIZE,
        unit="px",
        hint="pasture's models read 64-384 px; a larger side costs memory as its square",
    )
    augment: str = setting("none", "augmentation preset: none, paper, strong")
    optimizer: str = setting("sgd", "optimiser", OPTIMIZERS)
    lr: float = setting(0.01, "learning rate (of the head, when fine-tuning)", positive=True)
    momentum: float = setting(0.9, "SGD momentum")
    nesterov: bool = setting(False, "Nesterov momentum (SGD)")
    weight_decay: float = setting(0.0, "weight decay (decoupled for AdamW)", minimum=0)
    batch_size: int = setting(32, "images per optimiser step", minimum=1)
    epochs: int = setting(20, "passes over the training split", minimum=1)
    schedule: str = setting("constant", "learning-rate schedule after warm-up, per step", SCHEDULES)
    warmup_epochs: int = setting(0, "epochs of linear learning-rate warm-up", minimum=0)
    label_smoothing: float = setting(0.0, "label smoothing of the cross-entropy, in [0, 1)", minimum=0, below=1)
    mixup_alpha: float = setting(0.0, "MixUp Beta(alpha, alpha); 0 = off", minimum=0)
    cutmix_alpha: float = setting(0.0, "CutMix Beta(alpha, alpha); 0 = off (with both on, one per batch)", minimum=0)
    ema_decay: float = setting(
        0.0, "moving average of the weights, used as the final model; 0 = off", minimum=0, below=1
    )
    tta: bool = setting(False, "test-time augmentation (flips and shifts) at evaluation and prediction")
    ensemble: int = setting(
        1, "train N members (seeds seed, seed+1000, ...) and average their probabilities", minimum=1
    )
    pretrained: str = setting(
        "none",
        "pretrained backbone (effnet-lite0/1/2): probe = frozen features + linear head, "
        "finetune = whole network; picks the recipe of that name",
        PRETRAINED_MODES,
    )
    weights: str | None = setting(
        None, "your own backbone weights (a state dict file) for --pretrained; default: the model's ImageNet weights"
    )
    backbone_lr_scale: float = setting(0.1, "finetune: backbone learning rate = lr x this")
    head_c: float = setting(
        0.0,
        "probe (and LP-FT's start): inverse L2 strength C of the logistic head, as "
        "scikit-learn's; 0 = chosen by cross-validation on the training photos (leave one "
        "source out with --groups, else stratified folds)",
        minimum=0,
        hint="0 = chosen by cross-validation",
    )
    wise_alpha: float = setting(
        1.0,
        "finetune: WiSE-FT, the final weights = (1 - a) x the start (backbone + "
        "probe head) + a x the fine-tuned ones; 1 = off",
        minimum=0,
        maximum=1,
        hint="1 = off",
    )
    freeze_bn: bool = setting(False, "keep BatchNorm statistics fixed while training (fine-tuning on tiny batches)")
    precision: str = setting(
        "fp32",
        "bf16 autocasts training forward passes (faster on CPUs with bf16 support; changes float rounding, so opt-in)",
        PRECISIONS,
    )
    selfsup_epochs: int = setting(
        0,
        "SimCLR pretraining on the training images for N epochs before training (from-scratch models; 0 = off)",
        minimum=0,
    )
    # n / (classes x n_class) per class, so each class counts equally however many images it has; with
    # equal class counts the weights are all 1 and nothing changes.
    balance_classes: bool = setting(False, "weight the loss so each class counts equally whatever its image count")
    # Distillation (pasture train --teacher RUN): used only when a teacher is given.
    distill_views: int = setting(
        32,
        "with --teacher: augmented views per training image scored once by the teacher "
        "(cached; extra images share as many views again)",
        minimum=1,
    )
    distill_temperature: float = setting(
        2.0, "with --teacher: softmax temperature of the teacher-matching loss", positive=True
    )
    distill_weight: float = setting(
        0.9,
        "with --teacher: weight of matching the teacher; the rest goes to the true labels (1 = the teacher only)",
        minimum=0,
        maximum=1,
    )
    teacher_precision: str = setting(
        "fp32",
        "with --teacher: the teacher scores its views in bf16 (about 2.7x faster "
        "on CPUs with native bf16; rounds the teacher's outputs) or fp32",
        PRECISIONS,
    )
    description: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def recorded(self) -> dict:
        """The fields this recipe's run uses, as its folder records them (config.json, its identity): a
        probe's backbone, input, C, class weighting, members and TTA, not an optimiser, schedule or
        augmentation it never runs (issue 44); every field for a network it trains. Recipe(**recorded())
        reads back as the same run (the fields left out keep their defaults, and nothing reads them)."""
        every = self.to_dict()
        if self.pretrained != "probe":
            return every
        return {key: every[key] for key in PROBE_FIELDS}
