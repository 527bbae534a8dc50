"""The classifier training loop: recipe + model + data + augmentation -> trained model and history.

The whole training split is one uint8 tensor; each step indexes a batch, converts it to float,
augments it on the batch and takes one optimiser step. A checkpoint is written atomically after every
epoch with the model, optimiser and every random-number state, so a resumed run continues exactly
where the interrupted one stopped (same numbers as an uninterrupted run).
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pasture.augment import augment_batch, get_augment
from pasture.data import Dataset
from pasture.evaluate import evaluate_model, to_float
from pasture.models import create_model
from pasture.recipes import Recipe
from pasture.runs import atomic_torch_save, load_checkpoint, write_jsonl

CHECKPOINT_FORMAT = 1


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    nonfinite_loss: bool = False


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch's global RNG (dropout, init); return the generator for data order
    and augmentation, kept separate so its state can be saved and restored on its own."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
            nesterov=recipe.nesterov and recipe.momentum > 0, weight_decay=recipe.weight_decay,
        )
    return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def lr_factor(step: int, steps_per_epoch: int, recipe: Recipe) -> float:
    """Multiplier of the base learning rate at optimiser step `step` (0-based): linear warm-up, then
    constant or cosine decay to zero at the last step. Warm-up never outlasts the run (--epochs 1
    with a recipe that warms up for 3 is allowed)."""
    total = steps_per_epoch * recipe.epochs
    warmup = steps_per_epoch * min(recipe.warmup_epochs, recipe.epochs)
    if step < warmup:
        return (step + 1) / warmup
    if recipe.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def _progress_bar(recipe: Recipe, start_epoch: int, quiet: bool):
    from tqdm import tqdm

    return tqdm(
        total=recipe.epochs, initial=start_epoch, desc="train", unit="epoch",
        disable=quiet, file=sys.stderr, dynamic_ncols=True, leave=False,
    )


def train_classifier(
    dataset: Dataset,
    recipe: Recipe,
    seed: int,
    run_dir: str | Path | None = None,
    resume: bool = False,
    quiet: bool = True,
) -> TrainResult:
    """Train `recipe.model` on `dataset.train`; evaluate on `dataset.test` after every epoch (recorded
    only; nothing is selected on it). With `run_dir`, writes checkpoint.pt and history.jsonl every
    epoch; with `resume`, continues from run_dir/checkpoint.pt."""
    generator = seed_everything(seed)
    model = create_model(recipe.model, len(dataset.classes), recipe.image_size)
    optimizer = make_optimizer(model, recipe)
    preset = get_augment(recipe.augment)
    train_images, train_labels = dataset.train.images, dataset.train.labels
    n_train = train_labels.shape[0]
    steps_per_epoch = math.ceil(n_train / recipe.batch_size)
    history: list[dict] = []
    start_epoch = 0
    if resume and run_dir is not None:
        state = load_checkpoint(Path(run_dir) / "checkpoint.pt")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["rng_data"])
        torch.set_rng_state(state["rng_torch"])
        history = list(state["history"])
        start_epoch = int(state["epoch"])

    nonfinite = False
    started = time.perf_counter()
    bar = _progress_bar(recipe, start_epoch, quiet)
    try:
        for epoch in range(start_epoch, recipe.epochs):
            epoch_started = time.perf_counter()
            model.train()
            order = torch.randperm(n_train, generator=generator)
            loss_sum, correct = 0.0, 0
            for batch_index in range(steps_per_epoch):
                indices = order[batch_index * recipe.batch_size:(batch_index + 1) * recipe.batch_size]
                images = augment_batch(to_float(train_images[indices]), preset, generator)
                labels = train_labels[indices]
                for group in optimizer.param_groups:
                    group["lr"] = recipe.lr * lr_factor(epoch * steps_per_epoch + batch_index, steps_per_epoch, recipe)
                logits = model(images)
                # Cross-entropy on logits: the softmax is inside the loss, never applied before it.
                loss = F.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * labels.shape[0]
                correct += int((logits.argmax(1) == labels).sum())
            record = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / n_train,
                "train_accuracy": correct / n_train,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - epoch_started,
            }
            if not math.isfinite(record["train_loss"]):
                nonfinite = True
            if dataset.test is not None:
                test = evaluate_model(model, dataset.test.images, dataset.test.labels, dataset.classes)
                record["test_accuracy"] = test["accuracy"]
            history.append(record)
            if run_dir is not None:
                atomic_torch_save({
                    "format": CHECKPOINT_FORMAT,
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng_data": generator.get_state(),
                    "rng_torch": torch.get_rng_state(),
                    "history": history,
                }, Path(run_dir) / "checkpoint.pt")
                write_jsonl(Path(run_dir) / "history.jsonl", history)
            postfix = {"loss": f"{record['train_loss']:.3f}", "acc": f"{record['train_accuracy']:.2f}"}
            if "test_accuracy" in record:
                postfix["test"] = f"{record['test_accuracy']:.2f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
    finally:
        bar.close()
    return TrainResult(model=model, history=history, seconds=time.perf_counter() - started,
                       nonfinite_loss=nonfinite)
