"""Knowledge distillation: a small student learns to match a teacher run's outputs.

Following "Knowledge distillation: a good teacher is patient and consistent" (Beyer et al., CVPR 2022),
teacher and student see the same view of an image: the recipe's augmentation and MixUp are applied once,
at the teacher's input size; the teacher scores that view with its own normalisation, and the student
gets the same view resized to its own size. The teacher is the costly part (EfficientNet-Lite0: ~11 ms
per image on 2 CPU cores), so its outputs are computed once for a fixed bank of views per image
(`distill_views`) and cached on disk by content: every student and seed on the same images and teacher
reuses the bank. Training then costs what a from-scratch run costs.

Transfer images without labels (an `--unlabeled` folder, GAN samples) join the bank: the teacher labels
them, and the true-label term of the loss skips them.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pasture.classify.augment import augment_batch, beta_shares, get_augment
from pasture.classify.evaluate import to_float
from pasture.classify.recipes import Recipe
from pasture.core.cache import ContentCache
from pasture.core.device import autocast, effective_precision, model_device
from pasture.core.runtime import progress_bar

BANK_FORMAT = 1  # bump when bank construction changes, so cached banks are not reused
BANK_BATCH = 32


@dataclass
class TeacherBank:
    """Views (uint8 M x 3 x S x S at the student's size), the teacher's log-probabilities on them
    (M x C), the true-label mixture of each view (M x C; a zero row where a mixed image had no label)."""

    views: torch.Tensor
    teacher_log_probs: torch.Tensor
    label_targets: torch.Tensor
    seconds: float = 0.0  # teacher time to build it (0 when read from the cache)
    reused: bool = False

    @property
    def labelled(self) -> torch.Tensor:
        return self.label_targets.sum(1) > 0

    def __len__(self) -> int:
        return int(self.views.shape[0])


def extra_views(views_per_image: int, n_labelled: int, n_extra: int) -> int:
    """Views per unlabelled/synthetic image: together they make about as many views as the labelled
    photos do (a thousand GAN samples must not drown a hundred photos, nor cost ten times the teacher)."""
    if n_extra == 0:
        return 0
    return max(1, math.ceil(views_per_image * n_labelled / n_extra))


def bank_key(
    teacher_id: str, images_uint8: torch.Tensor, labels: torch.Tensor, recipe: Recipe, n_labelled: int, seed: int
) -> str:
    digest = hashlib.sha256(images_uint8.contiguous().numpy().tobytes())
    digest.update(labels.numpy().tobytes())
    settings = {
        "format": BANK_FORMAT,
        "teacher": teacher_id,
        "images": digest.hexdigest(),
        "n_labelled": n_labelled,
        "views": recipe.distill_views,
        "augment": recipe.augment,
        "mixup": recipe.mixup_alpha,
        "size": recipe.image_size,
        "seed": seed,
        "precision": recipe.teacher_precision,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]


def _mix(images: torch.Tensor, targets: torch.Tensor, alpha: float, generator: torch.Generator):
    """MixUp with one Beta(alpha, alpha) share per image (not per batch: a bank of views wants variety)."""
    if not alpha or images.shape[0] < 2:
        return images, targets
    # Drawn on the CPU (seeded); the images may be on a GPU, the targets stay on the CPU.
    keep = beta_shares(alpha, images.shape[0], generator)
    partner = torch.randperm(images.shape[0], generator=generator)
    on_device = keep.to(images.device).view(-1, 1, 1, 1)
    mixed = on_device * images + (1 - on_device) * images[partner.to(images.device)]
    # A view keeps a label target only when both its images have one.
    both = (targets.sum(1) > 0) & (targets[partner].sum(1) > 0)
    mixed_targets = keep.view(-1, 1) * targets + (1 - keep.view(-1, 1)) * targets[partner]
    return mixed, torch.where(both.view(-1, 1), mixed_targets, torch.zeros_like(mixed_targets))


@torch.no_grad()
def build_bank(
    teacher: nn.Module,
    teacher_size: int,
    images_uint8: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    recipe: Recipe,
    seed: int = 0,
    quiet: bool = True,
    class_order: torch.Tensor | None = None,
) -> TeacherBank:
    """Views of `images_uint8` (at the teacher's size; label -1 = no label) and the teacher's outputs.
    `class_order[c]` is the teacher's index of class c (when the teacher lists the classes differently).

    Each round draws one view of every image (augmented at the teacher's size, then mixed with another
    image of the round), so MixUp also crosses labelled photos with unlabelled ones."""
    started = time.perf_counter()
    teacher.eval()
    device = model_device(teacher)
    precision = effective_precision(recipe.teacher_precision, device)  # bf16 only where it is native
    preset = get_augment(recipe.augment)
    generator = torch.Generator().manual_seed(seed)
    labelled = labels >= 0
    n_labelled = int(labelled.sum())
    per_image = torch.where(
        labelled, recipe.distill_views, extra_views(recipe.distill_views, n_labelled, int((~labelled).sum()))
    )
    one_hot = torch.where(
        labelled.view(-1, 1), F.one_hot(labels.clamp_min(0), num_classes).float(), torch.zeros(len(labels), num_classes)
    )
    rounds = int(per_image.max()) if len(per_image) else 0
    views, log_probs, targets = [], [], []
    bar = progress_bar(int(per_image.sum()), 0, quiet, desc="teacher", unit="view")
    for round_index in range(rounds):
        chosen = torch.nonzero(per_image > round_index).flatten()
        chosen = chosen[torch.randperm(len(chosen), generator=generator)]
        for start in range(0, len(chosen), BANK_BATCH):
            batch = chosen[start : start + BANK_BATCH]
            images = augment_batch(to_float(images_uint8[batch].to(device)), preset, generator)
            images, mixed_targets = _mix(images, one_hot[batch], recipe.mixup_alpha, generator)
            with autocast(precision, device):
                scores = torch.log_softmax(teacher(images).float(), dim=1).cpu()
            log_probs.append(scores if class_order is None else scores[:, class_order])
            small = (
                F.interpolate(
                    images,
                    size=(recipe.image_size, recipe.image_size),
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )
                if teacher_size != recipe.image_size
                else images
            )
            views.append((small * 255).round().clamp(0, 255).to(torch.uint8).cpu())
            targets.append(mixed_targets)
            bar.update(len(batch))
    bar.close()
    return TeacherBank(
        torch.cat(views), torch.cat(log_probs), torch.cat(targets), seconds=time.perf_counter() - started
    )


def cached_bank(key: str, build) -> TeacherBank:
    """The bank stored under cache_root()/distill/<key>.pt, or `build()` (then stored). Built once: a
    process that reaches a bank another one is building waits for it (core.cache, shared)."""
    return ContentCache("distill", what="distillation-bank").get(
        key,
        build,
        check=lambda stored: {"views", "teacher_log_probs", "label_targets"} <= set(stored),
        to_stored=lambda bank: {
            "views": bank.views,
            "teacher_log_probs": bank.teacher_log_probs,
            "label_targets": bank.label_targets,
        },
        from_stored=lambda stored: TeacherBank(
            stored["views"], stored["teacher_log_probs"], stored["label_targets"], reused=True
        ),
        shared=True,
    )


def distillation_loss(
    logits: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    label_targets: torch.Tensor,
    temperature: float,
    weight: float,
) -> torch.Tensor:
    """weight x T^2 x KL(teacher || student) at temperature T, plus (1 - weight) x the cross-entropy
    with the true labels on the views that have them (Hinton et al. 2015)."""
    student = torch.log_softmax(logits / temperature, dim=1)
    teacher = torch.log_softmax(teacher_log_probs / temperature, dim=1)
    kl = F.kl_div(student, teacher, log_target=True, reduction="none").sum(1)
    loss = weight * temperature**2 * kl.mean()
    has_label = label_targets.sum(1) > 0
    if weight < 1 and bool(has_label.any()):
        hard = -(label_targets[has_label] * torch.log_softmax(logits[has_label], dim=1)).sum(1).mean()
        loss = loss + (1 - weight) * hard
    return loss


def teacher_bank(
    teacher: nn.Module,
    teacher_id: str,
    teacher_size: int,
    labelled: torch.Tensor,
    labels: torch.Tensor,
    unlabelled: list[torch.Tensor],
    recipe: Recipe,
    num_classes: int,
    quiet: bool = True,
    class_order: torch.Tensor | None = None,
) -> TeacherBank:
    """The bank of one student's transfer set, from the cache or built now (one place for `train
    --teacher` and an experiment's distillation condition): the labelled training images (at the
    teacher's size) and their labels, then each of `unlabelled` (unlabelled photos, GAN samples: the
    teacher labels them, label -1), keyed by the teacher's weights (`teacher_id`: model_identity, which the
    caller also records, so the weights are hashed once), the images and the recipe's view settings."""
    pool = torch.cat([labelled, *unlabelled])
    pool_labels = torch.cat([labels, *(torch.full((len(images),), -1, dtype=torch.long) for images in unlabelled)])
    key = bank_key(teacher_id, pool, pool_labels, recipe, len(labelled), seed=0)
    return cached_bank(
        key,
        lambda: build_bank(
            teacher,
            teacher_size,
            pool,
            pool_labels,
            num_classes,
            recipe,
            seed=0,
            quiet=quiet,
            class_order=class_order,
        ),
    )


def model_identity(model: nn.Module) -> str:
    """A teacher by the content of its weights: a run folder's model and a teacher trained inside an
    experiment (which has no folder) are named the same way, and a retrained teacher is another one."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]
