"""The classifier training loop: recipe + model + data + augmentation -> trained model and history.

The whole training split is one uint8 tensor; each step indexes a batch, converts it to float,
augments it on the batch and takes one optimiser step. A checkpoint is written atomically after every
epoch with the model, optimiser and every random-number state, so a resumed run continues exactly
where the interrupted one stopped (same numbers as an uninterrupted run).

An ensemble trains its members one after another (seeds seed, seed+1000, ...); the checkpoint holds
the finished members too, so an interrupted ensemble resumes inside the member it was training.
Recipes with pretrained="probe" are handed to pasture.classify.probe (frozen backbone, cached features).

The step (`_train_epoch`) knows nothing of checkpoints: it runs on pasture.core.loop's Loop, with the
evaluation, the history, the checkpoint and the progress bar as events; `_start_member` builds or
restores a member's state and `_save_checkpoint` writes it, so resume logic lives apart from the
arithmetic.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pasture.classify.augment import AugmentPreset, augment_batch, get_augment, mix_batch
from pasture.classify.distill import TeacherBank, distillation_loss
from pasture.classify.evaluate import evaluate_model, to_float
from pasture.classify.probe import init_head_from_probe, train_probe
from pasture.classify.recipes import Recipe, apply_schedule, lr_factor
from pasture.classify.selfsup import pretrain
from pasture.classify.steps import class_weights, make_optimizer, mix_in_synthetic, set_train_mode
from pasture.classify.trained import MEMBER_SEED_STRIDE, TrainResult, build_members, member_checkpoint
from pasture.core.device import autocast, effective_precision, fits_on_device, grad_scaler
from pasture.core.errors import UserError
from pasture.core.loop import Checkpoint, Loop, progress, restore_rng_states, rng_states
from pasture.core.runtime import keep_freed_memory, progress_bar, seed_everything, stop_point
from pasture.data import Dataset, ImageSet
from pasture.models import WeightEMA, create_model


@dataclass
class _Context:
    """What every member of one training run shares."""

    dataset: Dataset
    recipe: Recipe
    device: torch.device
    precision: str  # effective: fp32, bf16 or fp16 (pasture.core.device.effective_precision)
    train_images: torch.Tensor  # uint8, on the device when it fits there, else pinned on the CPU
    train_labels: torch.Tensor  # on the device
    synthetic: ImageSet | None
    synthetic_ratio: float
    eval_every: int
    checkpoint: Checkpoint  # writes nothing without a run folder
    bar: object
    bank: TeacherBank | None = None  # distillation: train on the teacher's views and outputs instead


def _context(dataset, recipe, device, precision, synthetic, synthetic_ratio, eval_every, checkpoint, bar, bank):
    """The run's shared context: the training photos (or, distilling, the teacher bank's views and its
    top classes as labels) placed where batches are cut from."""
    if bank is None:
        images, labels = _place_images(dataset.train.images, device), dataset.train.labels.to(device)
        return _Context(
            dataset, recipe, device, precision, images, labels, synthetic, synthetic_ratio, eval_every, checkpoint, bar
        )
    on_device = TeacherBank(bank.views, bank.teacher_log_probs.to(device), bank.label_targets.to(device))
    images, labels = _place_images(bank.views, device), bank.teacher_log_probs.argmax(1).to(device)
    return _Context(
        dataset, recipe, device, precision, images, labels, None, 0.0, eval_every, checkpoint, bar, bank=on_device
    )


def _place_images(images_uint8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The training split where batches are cut from: on the device when it fits (uint8 is small: 1,000
    images at 128 px are 49 MB), else pinned CPU memory that copies to the device per batch."""
    if device.type == "cpu":
        return images_uint8
    if fits_on_device(images_uint8.numel(), device):
        return images_uint8.to(device)
    return images_uint8.pin_memory() if device.type == "cuda" else images_uint8


def train_classifier(
    dataset: Dataset,
    recipe: Recipe,
    seed: int,
    run_dir: str | Path | None = None,
    resume: bool = False,
    quiet: bool = True,
    synthetic: ImageSet | None = None,
    synthetic_ratio: float = 0.0,
    eval_every: int = 1,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    bank: TeacherBank | None = None,
) -> TrainResult:
    """Train `recipe.model` (`recipe.ensemble` members) on `dataset.train`; evaluate on `dataset.test`
    after every epoch (recorded only; nothing is selected on it), or with `eval_every` K only after the
    first, every K-th and the last epoch, which saves the evaluation's time on long runs. With
    `run_dir`, writes checkpoint.pt and history.jsonl every epoch; with `resume`, continues from
    run_dir/checkpoint.pt.

    `synthetic` images (e.g. from a GAN) take a `synthetic_ratio` share of each training batch; the
    test split stays real. Training runs on `device`; `precision` is the effective one (default: what
    the recipe asks for, where the device can do it). The returned model is on `device`.

    With a teacher `bank` (pasture.classify.distill), the student trains on the bank's views (already
    augmented and mixed, as the teacher saw them) to match the teacher's outputs, plus the true labels
    where the views have them; an epoch is one pass over the bank."""
    device = torch.device(device)
    precision = precision or effective_precision(recipe.precision, device)
    if recipe.pretrained == "probe":
        return train_probe(
            dataset,
            recipe,
            seed,
            run_dir=run_dir,
            quiet=quiet,
            device=device,
            synthetic=synthetic,
            synthetic_ratio=synthetic_ratio,
        )
    keep_freed_memory()  # see pasture.core.runtime: same numbers, far fewer page faults per step
    checkpoint = member_checkpoint(run_dir)
    resumed = checkpoint.load(resume, "epoch")
    finished, history, in_progress = resumed.finished, resumed.log, resumed.in_progress
    started = time.perf_counter()
    bar = progress_bar(recipe.epochs * recipe.ensemble, resumed.steps_done(recipe.epochs), quiet)
    context = _context(
        dataset, recipe, device, precision, synthetic, synthetic_ratio, eval_every, checkpoint, bar, bank
    )
    nonfinite = False
    try:
        for member in range(len(finished), recipe.ensemble):
            weights, member_nonfinite = _train_member(
                context, seed + MEMBER_SEED_STRIDE * member, member, finished, history, in_progress
            )
            nonfinite |= member_nonfinite
            finished.append(weights)
            in_progress = None
    finally:
        bar.close()
    # The history again from the checkpoint's own copy: a process killed between the last epoch's
    # checkpoint and its history line resumes straight to here, and the line must not be lost.
    checkpoint.save(finished, history)
    return TrainResult(
        built=build_members(recipe, len(dataset.classes), finished, device),
        history=history,
        seconds=time.perf_counter() - started,
        nonfinite_loss=nonfinite,
    )


def pretrain_selfsup(
    model: nn.Module, images_uint8: torch.Tensor, recipe: Recipe, generator: torch.Generator, bar
) -> None:
    """SimCLR on the training images (real ones only), with its own progress bar (epoch, loss, ETA). Runs
    before the first supervised epoch; a run interrupted during it starts it again on resume (there is
    no checkpoint yet)."""
    selfsup_bar = progress_bar(recipe.selfsup_epochs, 0, quiet=bar.disable, desc="selfsup")

    def report(epoch: int, loss: float) -> None:
        selfsup_bar.set_postfix({"loss": f"{loss:.3f}"}, refresh=False)
        selfsup_bar.update(1)

    try:
        pretrain(model, images_uint8, recipe.selfsup_epochs, generator, on_epoch=report)
    finally:
        selfsup_bar.close()


def check_eval_every(eval_every: int) -> None:
    """--eval-every must be a positive number of epochs (a UserError otherwise)."""
    if eval_every < 1:
        raise UserError(f"--eval-every {eval_every}: must be 1 or more (1 = score the test split every epoch)")


def evaluate_after(epoch: int, epochs: int, eval_every: int) -> bool:
    """Whether the test split is scored after `epoch` (1-based): the first, every K-th and the last."""
    return epoch == 1 or epoch == epochs or epoch % eval_every == 0


@dataclass
class _Member:
    """Everything a checkpoint saves and restores for the member being trained."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    ema: WeightEMA | None
    generator: torch.Generator  # data order, augmentation and synthetic mixing (on the CPU, seeded)
    scaler: torch.amp.GradScaler  # fp16 only; passes everything through otherwise
    start_epoch: int = 0

    @property
    def final(self) -> nn.Module:
        """The model that is scored and kept: the weight average when the recipe has one."""
        return self.ema.model if self.ema is not None else self.model


def _start_member(context: _Context, seed: int, state: dict | None) -> _Member:
    """A fresh member (with its self-supervised start and LP-FT head when the recipe asks), or the one
    a checkpoint `state` interrupted, restored exactly (weights, optimiser, EMA and every RNG)."""
    recipe, dataset, device = context.recipe, context.dataset, context.device
    generator = seed_everything(seed)
    model = create_model(
        recipe.model,
        len(dataset.classes),
        recipe.image_size,
        weights=(recipe.weights or "imagenet") if recipe.pretrained != "none" else None,
    ).to(device)
    if recipe.selfsup_epochs and state is None:  # before the EMA copy and the optimiser see the weights
        pretrain_selfsup(model, dataset.train.images, recipe, generator, context.bar)
    member = _Member(
        model,
        make_optimizer(model, recipe),
        WeightEMA(model, recipe.ema_decay) if recipe.ema_decay else None,
        generator,
        grad_scaler(context.precision, device),
    )
    if state is None:
        if recipe.pretrained == "finetune":
            init_head_from_probe(model, dataset, recipe, seed)
        return member
    model.load_state_dict(state["model"])
    member.optimizer.load_state_dict(state["optimizer"])
    restore_rng_states(state, generator, device)
    if member.ema is not None:
        member.ema.load_state_dict(state["ema"])
    if state.get("scaler"):
        member.scaler.load_state_dict(state["scaler"])
    member.start_epoch = int(state["epoch"])
    return member


def _save_checkpoint(
    context: _Context, finished: list[dict], index: int, epoch: int, member: _Member, history: list[dict]
) -> None:
    """The checkpoint after `epoch` epochs of member `index`: what _start_member restores."""
    context.checkpoint.save(
        finished,
        history,
        {
            "member": index,
            "epoch": epoch,
            "model": member.model.state_dict(),
            "optimizer": member.optimizer.state_dict(),
            "ema": member.ema.state_dict() if member.ema is not None else {},
            **rng_states(member.generator, context.device),
            "scaler": member.scaler.state_dict() if member.scaler.is_enabled() else {},
        },
    )


def _train_epoch(
    context: _Context, member: _Member, epoch: int, preset: AugmentPreset, loss_weights: torch.Tensor | None
) -> dict:
    """One pass over the training split; returns the epoch's history row (without test accuracy)."""
    epoch_started = time.perf_counter()
    recipe, device = context.recipe, context.device
    model, optimizer, generator = member.model, member.optimizer, member.generator
    num_classes = len(context.dataset.classes)
    n_train = len(context.train_labels)
    steps_per_epoch = math.ceil(n_train / recipe.batch_size)
    set_train_mode(model, recipe.freeze_bn)
    order = torch.randperm(n_train, generator=generator)
    loss_sum, correct = 0.0, 0
    for batch_index in range(steps_per_epoch):
        stop_point()
        indices = order[batch_index * recipe.batch_size : (batch_index + 1) * recipe.batch_size]
        batch_images = context.train_images[indices.to(context.train_images.device)]
        if context.bank is not None:  # the views are the teacher's: augmented and mixed already
            images, labels = (
                to_float(batch_images.to(device, non_blocking=True)),
                context.train_labels[indices.to(device)],
            )
        else:
            batch_images, labels, _ = mix_in_synthetic(
                batch_images.to(device, non_blocking=True),
                context.train_labels[indices.to(device)],
                context.synthetic,
                context.synthetic_ratio,
                generator,
            )
            images = augment_batch(to_float(batch_images), preset, generator)
            images, targets = mix_batch(images, labels, num_classes, recipe.mixup_alpha, recipe.cutmix_alpha, generator)
        apply_schedule(optimizer, recipe.lr, epoch * steps_per_epoch + batch_index, steps_per_epoch, recipe)
        with autocast(context.precision, device):
            logits = model(images)
        logits = logits.float()
        if context.bank is not None:
            on_device = indices.to(device)
            loss = distillation_loss(
                logits,
                context.bank.teacher_log_probs[on_device],
                context.bank.label_targets[on_device],
                recipe.distill_temperature,
                recipe.distill_weight,
            )
        else:
            # Cross-entropy on logits (soft targets when mixed): the softmax is inside the loss.
            loss = F.cross_entropy(logits, targets, weight=loss_weights, label_smoothing=recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        member.scaler.scale(loss).backward()
        member.scaler.step(optimizer)
        member.scaler.update()
        if member.ema is not None:
            member.ema.update(model)
        loss_sum += float(loss.detach()) * labels.shape[0]
        correct += int((logits.argmax(1) == labels).sum())
    return {
        "epoch": epoch + 1,
        "train_loss": loss_sum / n_train,
        "train_accuracy": correct / n_train,
        "lr": recipe.lr * lr_factor((epoch + 1) * steps_per_epoch - 1, steps_per_epoch, recipe),
        "seconds": time.perf_counter() - epoch_started,
    }


def _train_member(
    context: _Context, seed: int, index: int, finished: list[dict], history: list[dict], state: dict | None
) -> tuple[dict, bool]:
    """Train member `index` (from `state` when resuming); returns (final weights, whether the loss went
    non-finite)."""
    recipe, dataset = context.recipe, context.dataset
    member = _start_member(context, seed, state)
    preset = get_augment(recipe.augment)
    loss_weights = class_weights(dataset.train.labels, len(dataset.classes), recipe)  # None unless balancing
    if loss_weights is not None:
        loss_weights = loss_weights.to(context.device)

    def step(epoch: int) -> dict:
        record = _train_epoch(context, member, epoch, preset, loss_weights)
        if recipe.ensemble > 1:
            record["member"] = index + 1
        return record

    def evaluate(epochs_done: int, record: dict) -> None:  # recorded only: nothing is chosen on it
        if dataset.test is not None and evaluate_after(epochs_done, recipe.epochs, context.eval_every):
            record["test_accuracy"] = evaluate_model(
                member.final, dataset.test.images, dataset.test.labels, dataset.classes
            )["accuracy"]

    def postfix(record: dict) -> dict:
        shown = {"loss": f"{record['train_loss']:.3f}", "acc": f"{record['train_accuracy']:.2f}"}
        if "test_accuracy" in record:
            shown["test"] = f"{record['test_accuracy']:.2f}"
        if recipe.ensemble > 1:
            shown["member"] = f"{index + 1}/{recipe.ensemble}"
        return shown

    def save(epochs_done: int, record: dict) -> None:
        if context.checkpoint.path is not None:
            _save_checkpoint(context, finished, index, epochs_done, member, history)

    events = [evaluate, lambda epochs_done, record: history.append(record), save, progress(context.bar, postfix)]
    rows = Loop(step, events).run(member.start_epoch, recipe.epochs)
    nonfinite = any(not math.isfinite(record["train_loss"]) for record in rows)
    if recipe.pretrained == "finetune" and recipe.wise_alpha < 1:
        return wise_ft(member.final, _linear_probe_start(context, seed), recipe.wise_alpha), nonfinite
    return member.final.state_dict(), nonfinite


def _linear_probe_start(context: _Context, seed: int) -> nn.Module:
    """Where LP-FT starts: the pretrained backbone with the probe's head. Rebuilt rather than kept
    (it is deterministic: same weights, same cached features, a convex head), so a resumed run
    needs nothing more in its checkpoint."""
    recipe, dataset = context.recipe, context.dataset
    start = create_model(recipe.model, len(dataset.classes), recipe.image_size, weights=recipe.weights or "imagenet")
    init_head_from_probe(start.to(context.device), dataset, recipe, seed)
    return start


def wise_ft(finetuned: nn.Module, start: nn.Module, alpha: float) -> dict:
    """WiSE-FT (Wortsman et al. 2022): the weights (1 - alpha) * start + alpha * fine-tuned, tensor by
    tensor (integer buffers such as BatchNorm's batch count are kept from the fine-tuned model). The two
    share an architecture and a starting point, so the average stays in one basin: under distribution
    shift it kept the start's robustness and the fine-tuned model's accuracy at once."""
    start_state = start.state_dict()
    mixed = {}
    for key, value in finetuned.state_dict().items():
        base = start_state[key].to(value.device)
        mixed[key] = (base + alpha * (value - base)) if value.is_floating_point() else value.clone()
    return mixed
