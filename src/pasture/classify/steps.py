"""What one training step needs besides the model and the batch: the optimiser a recipe names (two
parameter groups when fine-tuning), train mode with BatchNorm frozen when asked, synthetic images
mixed into a batch's slots, and the loss's class weights."""

from __future__ import annotations

import torch
from torch import nn

from pasture.classify.recipes import Recipe
from pasture.data import ImageSet
from pasture.models import timm_net


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The classifier layer's parameters (timm's get_classifier(), else the last Linear layer)."""
    net = getattr(model, "net", model)
    if hasattr(net, "get_classifier"):
        return list(timm_net(model).get_classifier().parameters())
    linears = [module for module in net.modules() if isinstance(module, nn.Linear)]
    return list(linears[-1].parameters()) if linears else []


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """One parameter group, or two when fine-tuning: backbone at lr x backbone_lr_scale, head at lr.
    Each group carries its "lr_scale"; the schedule multiplies it in at every step."""
    head = head_parameters(model) if recipe.pretrained == "finetune" else []
    head_ids = {id(parameter) for parameter in head}
    groups = [
        {
            "params": [p for p in model.parameters() if id(p) not in head_ids],
            "lr_scale": recipe.backbone_lr_scale if head else 1.0,
        }
    ]
    if head:
        groups.append({"params": head, "lr_scale": 1.0})
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=recipe.lr,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov and recipe.momentum > 0,
            weight_decay=recipe.weight_decay,
        )
    # fused: one kernel per step instead of a Python loop over parameters (same update rule); the
    # single-tensor default spent a fifth of paper-cnn's training time in the optimiser.
    return torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=True)


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:  # BN statistics of 16 images are noise; keep the pretrained ones
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def mix_in_synthetic(
    images_uint8: torch.Tensor,
    labels: torch.Tensor,
    synthetic: ImageSet | None,
    ratio: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace each batch slot by a random synthetic image with probability `ratio`.

    Returns (images, labels, mask of synthetic slots). The expected synthetic share of a batch is
    `ratio`; real images left out of one batch come back in the next epoch's order.
    """
    mask = torch.zeros(labels.shape[0], dtype=torch.bool)
    if synthetic is None or ratio <= 0 or len(synthetic) == 0:
        return images_uint8, labels, mask
    mask = torch.rand(labels.shape[0], generator=generator) < ratio
    count = int(mask.sum())
    if count:
        pick = torch.randint(len(synthetic), (count,), generator=generator)
        images_uint8, labels = images_uint8.clone(), labels.clone()
        slots = (
            mask.nonzero().flatten().to(images_uint8.device)
        )  # drawn on the CPU (seeded), applied where the batch is
        images_uint8[slots] = synthetic.images[pick].to(images_uint8.device)
        labels[slots] = synthetic.labels[pick].to(labels.device)
    return images_uint8, labels, mask


def class_weights(labels, num_classes: int, recipe: Recipe | None = None, *, balance_classes: bool | None = None):
    """Loss weights per class (a float tensor), or None when balancing is off (`recipe.balance_classes`,
    or `balance_classes` when given).

    Weight n / (num_classes x n_c): the weighted loss is what it would be with equal class counts.
    A class without training images gets weight 1 (it never appears in the loss)."""
    if balance_classes is None:
        if recipe is None:
            raise TypeError("class_weights: give a recipe or balance_classes")
        balance_classes = recipe.balance_classes
    if not balance_classes:
        return None
    counts = torch.bincount(labels, minlength=num_classes).float()
    return torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.ones_like(counts))
