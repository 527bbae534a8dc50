"""The classifier training loop: recipe + model + data + augmentation -> trained model and history.

The whole training split is one uint8 tensor; each step indexes a batch, converts it to float,
augments it on the batch and takes one optimiser step. A checkpoint is written atomically after every
epoch with the model, optimiser and every random-number state, so a resumed run continues exactly
where the interrupted one stopped (same numbers as an uninterrupted run).

An ensemble trains its members one after another (seeds seed, seed+1000, ...); the checkpoint holds
the finished members too, so an interrupted ensemble resumes inside the member it was training.
Recipes with pretrained="probe" are handed to pasture.probe (frozen backbone, cached features).
"""

from __future__ import annotations

import contextlib
import copy
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

from pasture.augment import augment_batch, get_augment, mix_batch
from pasture.data import Dataset, ImageSet
from pasture.evaluate import evaluate_model, to_float
from pasture.errors import UserError
from pasture.models import Ensemble, create_model
from pasture.recipes import Recipe, class_weights, lr_factor  # lr_factor: re-exported, the schedule lives with recipes
from pasture.runs import atomic_torch_save, load_checkpoint, write_jsonl
from pasture.runtime import keep_freed_memory

CHECKPOINT_FORMAT = 1


MEMBER_SEED_STRIDE = 1000  # member i of an ensemble trains with seed + 1000 * i


@dataclass
class TrainResult:
    model: nn.Module  # one Classifier, or an Ensemble of them
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    nonfinite_loss: bool = False
    notes: dict = field(default_factory=dict)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch's global RNG (dropout, init); return the generator for data order
    and augmentation, kept separate so its state can be saved and restored on its own."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class WeightEMA:
    """Exponential moving average of a model's floating-point state (parameters and BN statistics).

    The decay ramps up as min(decay, (1 + n) / (10 + n)) after n updates, so the average is not
    dominated by the random initial weights in runs of only a few hundred steps.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, current in zip(self.model.state_dict().values(), model.state_dict().values()):
            if average.dtype.is_floating_point:
                average.mul_(decay).add_(current.detach(), alpha=1 - decay)
            else:
                average.copy_(current)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


def autocast(precision: str):
    """bfloat16 autocast of forward passes for precision "bf16" (weights, optimiser and loss stay fp32);
    a no-op for "fp32". Shared by classifier and GAN training."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The classifier layer's parameters (timm's get_classifier(), else the last Linear layer)."""
    net = getattr(model, "net", model)
    if hasattr(net, "get_classifier"):
        return list(net.get_classifier().parameters())
    linears = [module for module in net.modules() if isinstance(module, nn.Linear)]
    return list(linears[-1].parameters()) if linears else []


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """One parameter group, or two when fine-tuning: backbone at lr x backbone_lr_scale, head at lr.
    Each group carries its "lr_scale"; the schedule multiplies it in at every step."""
    head = head_parameters(model) if recipe.pretrained == "finetune" else []
    head_ids = {id(parameter) for parameter in head}
    groups = [{"params": [p for p in model.parameters() if id(p) not in head_ids],
               "lr_scale": recipe.backbone_lr_scale if head else 1.0}]
    if head:
        groups.append({"params": head, "lr_scale": 1.0})
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=recipe.lr, momentum=recipe.momentum,
            nesterov=recipe.nesterov and recipe.momentum > 0, weight_decay=recipe.weight_decay,
        )
    # fused: one kernel per step instead of a Python loop over parameters (same update rule); the
    # single-tensor default spent a fifth of paper-cnn's training time in the optimiser.
    return torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=True)


def progress_bar(total: int, initial: int, quiet: bool, desc: str = "train", unit: str = "epoch"):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=quiet, file=sys.stderr,
                dynamic_ncols=True, leave=False)


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:  # BN statistics of 16 images are noise; keep the pretrained ones
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def build_members(recipe: Recipe, num_classes: int, member_states: list[dict]) -> nn.Module:
    """The final model from saved member weights: one Classifier, or an Ensemble."""
    members = []
    for state in member_states:
        member = create_model(recipe.model, num_classes, recipe.image_size)
        member.load_state_dict(state)
        members.append(member.eval())
    return members[0] if len(members) == 1 else Ensemble(members)


def mix_in_synthetic(
    images_uint8: torch.Tensor, labels: torch.Tensor, synthetic: ImageSet | None, ratio: float,
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
        images_uint8[mask] = synthetic.images[pick]
        labels[mask] = synthetic.labels[pick]
    return images_uint8, labels, mask


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
) -> TrainResult:
    """Train `recipe.model` (`recipe.ensemble` members) on `dataset.train`; evaluate on `dataset.test`
    after every epoch (recorded only; nothing is selected on it), or with `eval_every` K only after the
    first, every K-th and the last epoch, which saves the evaluation's time on long runs. With `run_dir`, writes checkpoint.pt
    and history.jsonl every epoch; with `resume`, continues from run_dir/checkpoint.pt.

    `synthetic` images (e.g. from a GAN) take a `synthetic_ratio` share of each training batch; the
    test split stays real."""
    if recipe.pretrained == "probe":
        from pasture.probe import train_probe

        return train_probe(dataset, recipe, seed, run_dir=run_dir, quiet=quiet)
    keep_freed_memory()  # see pasture.runtime: same numbers, far fewer page faults per step
    checkpoint_path = Path(run_dir) / "checkpoint.pt" if run_dir is not None else None
    state = load_checkpoint(checkpoint_path) if resume and checkpoint_path is not None else None
    finished: list[dict] = list(state["members"]) if state else []
    history: list[dict] = list(state["history"]) if state else []
    started = time.perf_counter()
    done_epochs = len(finished) * recipe.epochs + (int(state["epoch"]) if state and "epoch" in state else 0)
    bar = progress_bar(recipe.epochs * recipe.ensemble, done_epochs, quiet)
    nonfinite = False
    try:
        for member in range(len(finished), recipe.ensemble):
            weights, member_nonfinite = _train_member(
                dataset, recipe, seed + MEMBER_SEED_STRIDE * member, member, finished, history,
                state if state and "epoch" in state else None, checkpoint_path, bar, synthetic, synthetic_ratio,
                eval_every,
            )
            nonfinite |= member_nonfinite
            finished.append(weights)
            state = None
    finally:
        bar.close()
    if checkpoint_path is not None:
        atomic_torch_save({"format": CHECKPOINT_FORMAT, "members": finished, "history": history}, checkpoint_path)
    return TrainResult(
        model=build_members(recipe, len(dataset.classes), finished),
        history=history, seconds=time.perf_counter() - started, nonfinite_loss=nonfinite,
    )


def pretrain_selfsup(model: nn.Module, images_uint8: torch.Tensor, recipe: Recipe, generator: torch.Generator,
                     bar) -> None:
    """SimCLR on the training images (real ones only), with its own progress bar (epoch, loss, ETA). Runs
    before the first supervised epoch; a run interrupted during it starts it again on resume (there is
    no checkpoint yet)."""
    from pasture.selfsup import pretrain

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


def _train_member(dataset, recipe, seed, member, finished, history, state, checkpoint_path, bar,
                  synthetic=None, synthetic_ratio=0.0, eval_every=1):
    """Train one model; returns (final weights, whether the loss went non-finite)."""
    generator = seed_everything(seed)
    num_classes = len(dataset.classes)
    model = create_model(recipe.model, num_classes, recipe.image_size,
                         weights=(recipe.weights or "imagenet") if recipe.pretrained != "none" else None)
    if recipe.selfsup_epochs and state is None:  # before the EMA copy and the optimiser see the weights
        pretrain_selfsup(model, dataset.train.images, recipe, generator, bar)
    optimizer = make_optimizer(model, recipe)
    ema = WeightEMA(model, recipe.ema_decay) if recipe.ema_decay else None
    preset = get_augment(recipe.augment)
    train_images, train_labels = dataset.train.images, dataset.train.labels
    n_train = train_labels.shape[0]
    loss_weights = class_weights(train_labels, num_classes, recipe)  # None unless balance_classes
    steps_per_epoch = math.ceil(n_train / recipe.batch_size)
    start_epoch = 0
    if recipe.pretrained == "finetune" and state is None:
        from pasture.probe import init_head_from_probe

        init_head_from_probe(model, dataset, recipe, generator)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["rng_data"])
        torch.set_rng_state(state["rng_torch"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start_epoch = int(state["epoch"])
    final = ema.model if ema is not None else model
    nonfinite = False
    for epoch in range(start_epoch, recipe.epochs):
        epoch_started = time.perf_counter()
        set_train_mode(model, recipe.freeze_bn)
        order = torch.randperm(n_train, generator=generator)
        loss_sum, correct = 0.0, 0
        for batch_index in range(steps_per_epoch):
            indices = order[batch_index * recipe.batch_size:(batch_index + 1) * recipe.batch_size]
            batch_images, labels, _ = mix_in_synthetic(train_images[indices], train_labels[indices], synthetic,
                                                        synthetic_ratio, generator)
            images = augment_batch(to_float(batch_images), preset, generator)
            images, targets = mix_batch(images, labels, num_classes, recipe.mixup_alpha, recipe.cutmix_alpha,
                                        generator)
            step = epoch * steps_per_epoch + batch_index
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * group["lr_scale"] * lr_factor(step, steps_per_epoch, recipe)
            with autocast(recipe.precision):
                logits = model(images)
            logits = logits.float()
            # Cross-entropy on logits (soft targets when mixed): the softmax is inside the loss.
            loss = F.cross_entropy(logits, targets, weight=loss_weights, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update(model)
            loss_sum += float(loss.detach()) * labels.shape[0]
            correct += int((logits.argmax(1) == labels).sum())
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / n_train,
            "train_accuracy": correct / n_train,
            "lr": recipe.lr * lr_factor((epoch + 1) * steps_per_epoch - 1, steps_per_epoch, recipe),
            "seconds": time.perf_counter() - epoch_started,
        }
        if recipe.ensemble > 1:
            record["member"] = member + 1
        if not math.isfinite(record["train_loss"]):
            nonfinite = True
        if dataset.test is not None and evaluate_after(epoch + 1, recipe.epochs, eval_every):
            record["test_accuracy"] = evaluate_model(final, dataset.test.images, dataset.test.labels,
                                                     dataset.classes)["accuracy"]
        history.append(record)
        if checkpoint_path is not None:
            atomic_torch_save({
                "format": CHECKPOINT_FORMAT,
                "members": finished,
                "member": member,
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "ema": ema.state_dict() if ema is not None else {},
                "rng_data": generator.get_state(),
                "rng_torch": torch.get_rng_state(),
                "history": history,
            }, checkpoint_path)
            write_jsonl(checkpoint_path.parent / "history.jsonl", history)
        postfix = {"loss": f"{record['train_loss']:.3f}", "acc": f"{record['train_accuracy']:.2f}"}
        if "test_accuracy" in record:
            postfix["test"] = f"{record['test_accuracy']:.2f}"
        if recipe.ensemble > 1:
            postfix["member"] = f"{member + 1}/{recipe.ensemble}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)
    return final.state_dict(), nonfinite
