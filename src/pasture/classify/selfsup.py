"""Self-supervised pretraining on the training images themselves (SimCLR, Chen et al. 2020).

Before supervised training, a from-scratch network learns to tell each training image's two random
`strong`-augmented views apart from every other image's views (the NT-Xent loss), through a small
projection MLP that is thrown away afterwards. No labels and no other images are used, so it is
allowed wherever training from scratch is: the network starts from features of its own data instead
of random weights. On cowhorse-dev's validation splits it gave no gain beyond noise (200 epochs 75.6%,
400 epochs 71.1%, none 74.4%; benchmarks/recipes.py --tune), so no recipe turns it on.

The encoder is the classifier minus its last linear layer (the layer is swapped for an identity while
pretraining and put back, untouched, afterwards).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from pasture.classify.augment import augment_batch, get_augment
from pasture.classify.evaluate import to_float
from pasture.classify.recipes import Recipe, apply_schedule
from pasture.core.device import model_device
from pasture.core.loop import Loop
from pasture.core.runtime import stop_point

# -- settings (as in the exploration that measured it; SimCLR's defaults, scaled to tiny datasets) --
AUGMENT = "strong"  # the two views
TEMPERATURE = 0.2
LR = 2e-3  # AdamW, cosine decay over the pretraining steps (recipes.apply_schedule)
WEIGHT_DECAY = 1e-4
PROJECTION = (256, 64)  # hidden and output width of the projection MLP
IMAGES_PER_BATCH_AT_64PX = 128  # two views each (~0.7 GiB for resnet-small); scaled by (64 / size)^2


def images_per_batch(image_size: int) -> int:
    return max(8, int(IMAGES_PER_BATCH_AT_64PX * (64 / image_size) ** 2))


@contextlib.contextmanager
def encoder_of(model: nn.Module):
    """Yield (model with its last nn.Linear replaced by nn.Identity, that layer's input width)."""
    name = next((name for name, module in reversed(list(model.named_modules())) if isinstance(module, nn.Linear)), None)
    if name is None:
        raise ValueError("self-supervised pretraining needs a model that ends in a linear layer")
    parent_name, _, attribute = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    linear = getattr(parent, attribute)
    setattr(parent, attribute, nn.Identity())
    try:
        yield model, linear.in_features
    finally:
        setattr(parent, attribute, linear)


def nt_xent(projections: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over 2N projections where rows i and i+N are the two views of one image."""
    n = projections.shape[0] // 2
    z = F.normalize(projections, dim=1)
    similarity = (z @ z.t()) / temperature
    similarity.fill_diagonal_(float("-inf"))  # a view is not its own positive nor a negative
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(projections.device)
    return F.cross_entropy(similarity, positives)


def pretrain(
    model: nn.Module, images_uint8: torch.Tensor, epochs: int, generator: torch.Generator, on_epoch=None
) -> list[float]:
    """Train `model`'s encoder in place with SimCLR on `images_uint8` (N x 3 x S x S, training images
    only). Returns the mean loss of every epoch. `on_epoch(epoch, loss)` reports progress."""
    preset = get_augment(AUGMENT)
    n, size = images_uint8.shape[0], images_uint8.shape[-1]
    if n < 2:
        raise ValueError("self-supervised pretraining needs at least 2 training images")
    batches = math.ceil(n / images_per_batch(size))
    batch = math.ceil(n / batches)  # equal batches: a last batch of a few images has too few negatives
    with encoder_of(model) as (encoder, width):
        device = model_device(encoder)
        projection = nn.Sequential(
            nn.Linear(width, PROJECTION[0]), nn.ReLU(inplace=True), nn.Linear(PROJECTION[0], PROJECTION[1])
        ).to(device)
        parameters = [*encoder.parameters(), *projection.parameters()]
        optimizer = torch.optim.AdamW(parameters, lr=LR, weight_decay=WEIGHT_DECAY, fused=True)
        encoder.train()
        schedule = Recipe("selfsup", epochs=epochs, schedule="cosine")  # cosine decay to 0, no warm-up

        def step(epoch: int) -> dict:
            order = torch.randperm(n, generator=generator)
            loss_sum = 0.0
            for index in range(batches):
                stop_point()
                chosen = order[index * batch : (index + 1) * batch]
                if chosen.numel() < 2:  # a lone image has no negatives (only when batch is 1)
                    continue
                apply_schedule(optimizer, LR, epoch * batches + index, batches, schedule)
                images = to_float(images_uint8[chosen].to(device))
                views = torch.cat([augment_batch(images, preset, generator), augment_batch(images, preset, generator)])
                loss = nt_xent(projection(encoder(views)), TEMPERATURE)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * chosen.numel()
            return {"epoch": epoch + 1, "loss": loss_sum / n}

        events = [] if on_epoch is None else [lambda done, row: on_epoch(done, row["loss"])]
        rows = Loop(step, events).run(0, epochs)
    return [row["loss"] for row in rows]
