"""GAN training: presets as data, the D/G steps, DiffAugment/ADA, generator EMA, logs, checkpoints.

One "unit" is a (G, D) pair trained on some classes of the TRAINING split: the `paper` preset trains
one unit per class (the report generated each class separately); `conditional` trains one unit for
all classes. Units train one after another; the checkpoint holds the finished ones, so --resume
continues inside the unit in progress with the same numbers as an uninterrupted run.

Loss (k = 1 discriminator step per generator step, as the report's Algorithm 1):
  bce   D maximises log D(x) + log(1 - D(G(z))); G minimises -log D(G(z)) (the non-saturating form)
  hinge D: relu(1 - D(x)) + relu(1 + D(G(z))); G: -D(G(z))
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from pasture.core.defaults import bounds_problem, field_type_problem
from pasture.core.device import autocast, effective_precision, grad_scaler
from pasture.core.errors import UserError
from pasture.core.loop import Checkpoint, Loop, every, progress, restore_rng_states, rng_states
from pasture.core.runs import atomic_write_bytes
from pasture.core.runtime import keep_freed_memory, progress_bar, seed_everything
from pasture.data import ImageSet
from pasture.gan.diffaugment import diff_augment, parse_policy
from pasture.gan.nets import Discriminator, Generator, upsampling_blocks
from pasture.gan.presets import GanPreset
from pasture.gan.projected import LiteGenerator, ProjectedDiscriminator
from pasture.gan.summary import plot_gan_losses
from pasture.models import WeightEMA

ADA_INTERVAL = 4  # iterations between adjustments of the augmentation probability
ADA_STEP = 0.01  # change of p per adjustment: 0 -> 1 in 400 iterations at most
COLLAPSE_RATIO = 0.5  # warn when samples are less than half as spread out as the real images


def validate_gan_preset(preset: GanPreset) -> None:
    problem = field_type_problem(preset)
    if problem is not None:
        raise UserError(f"GAN preset {preset.name}: {problem}")
    try:
        upsampling_blocks(preset.image_size)
        parse_policy(preset.diffaugment)
    except ValueError as error:
        option = "--image-size" if "size" in str(error) else "--diffaugment"
        raise UserError(f"{option}: {error}") from None
    problem = bounds_problem(preset)  # each field's bounds, declared on it
    if problem is not None:
        raise UserError(problem)
    if preset.feature_size % 32:  # a bound the field cannot declare
        raise UserError(f"--feature-size {preset.feature_size}: give a multiple of 32 (64, 128, 224, ...)")


def to_gan_range(images_uint8: torch.Tensor) -> torch.Tensor:
    return images_uint8.float().div(127.5).sub(1.0)


def to_uint8(images_m11: torch.Tensor) -> torch.Tensor:
    return ((images_m11.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def resize_uint8(images_uint8: torch.Tensor, size: int) -> torch.Tensor:
    if images_uint8.shape[-1] == size:
        return images_uint8
    resized = F.interpolate(
        images_uint8.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return resized.round().clamp(0, 255).to(torch.uint8)


def mean_pairwise_distance(images_m11: torch.Tensor, limit: int = 64) -> float:
    """Mean L2 distance between pairs of images (at most `limit`, at 32 px): the diversity score."""
    images = images_m11[:limit]
    if images.shape[-1] > 32:
        images = F.interpolate(images, size=(32, 32), mode="area")
    flat = images.reshape(images.shape[0], -1)
    distances = torch.cdist(flat, flat)
    n = flat.shape[0]
    return float(distances.sum() / max(1, n * (n - 1)))


def discriminator_loss(preset: GanPreset, real_logits, fake_logits) -> torch.Tensor:
    if preset.loss == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    # -[log sigmoid(real) + log(1 - sigmoid(fake))], written stably with softplus
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(preset: GanPreset, fake_logits) -> torch.Tensor:
    if preset.loss == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()  # non-saturating: -log D(G(z))


def build_generator(preset: GanPreset, conditional_classes: int) -> torch.nn.Module:
    """The preset's generator, built on the CPU; conditional_classes 0 = unconditional."""
    network = LiteGenerator if preset.architecture == "projected" else Generator
    return network(preset.nz, preset.image_size, preset.ngf, conditional_classes)


def build_discriminator(preset: GanPreset, conditional_classes: int) -> torch.nn.Module:
    if preset.architecture == "projected":
        return ProjectedDiscriminator(preset.image_size, preset.ndf, conditional_classes, preset.feature_size)
    return Discriminator(preset.image_size, preset.ndf, conditional_classes)


class GanUnit:
    """G, D, optional G EMA and their optimisers, for the classes in `class_ids`."""

    def __init__(
        self, preset: GanPreset, num_classes: int, class_ids: list[int], device: torch.device, precision: str = "fp32"
    ):
        conditional_classes = num_classes if preset.conditional else 0
        self.preset, self.class_ids = preset, class_ids
        # Built on the CPU (the same initial weights from a seed on every device), then moved.
        self.generator = build_generator(preset, conditional_classes).to(device)
        self.discriminator = build_discriminator(preset, conditional_classes).to(device)
        if preset.channels_last:
            self.generator.to(memory_format=torch.channels_last)
            self.discriminator.to(memory_format=torch.channels_last)
        self.ema = WeightEMA(self.generator, preset.ema_decay) if preset.ema_decay else None
        betas = (preset.beta1, 0.999)
        self.optimizer_g = torch.optim.Adam(self.generator.parameters(), lr=preset.lr_g, betas=betas)
        trainable = [weight for weight in self.discriminator.parameters() if weight.requires_grad]  # not CCM/CSM
        self.optimizer_d = torch.optim.Adam(trainable, lr=preset.lr_d, betas=betas)
        self.scaler_g, self.scaler_d = grad_scaler(precision, device), grad_scaler(precision, device)  # fp16 only

    @property
    def sampler(self) -> torch.nn.Module:
        return self.ema.model if self.ema is not None else self.generator

    def state_dict(self) -> dict:
        return {
            "class_ids": self.class_ids,
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "generator_ema": self.ema.state_dict() if self.ema is not None else {},
            "optimizer_g": self.optimizer_g.state_dict(),
            "optimizer_d": self.optimizer_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict() if self.scaler_g.is_enabled() else {},
            "scaler_d": self.scaler_d.state_dict() if self.scaler_d.is_enabled() else {},
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        if self.ema is not None:
            self.ema.load_state_dict(state["generator_ema"])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])
        if state.get("scaler_g"):
            self.scaler_g.load_state_dict(state["scaler_g"])
            self.scaler_d.load_state_dict(state["scaler_d"])


def unit_plan(preset: GanPreset, num_classes: int) -> list[list[int]]:
    """Which classes each unit learns: all in one (conditional), or one unit per class."""
    return [list(range(num_classes))] if preset.conditional else [[index] for index in range(num_classes)]


def save_grid(images_m11: torch.Tensor, path: Path, nrow: int) -> None:
    # here, not at the top: torchvision imports torch._dynamo (1.2 s), which `pasture train` never needs
    from torchvision.utils import make_grid

    grid = to_uint8(make_grid(images_m11, nrow=nrow, padding=2, pad_value=1.0))
    buffer = io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


@dataclass
class _UnitRun:
    """One unit in training: everything its checkpoint saves and restores."""

    index: int
    unit: GanUnit
    generator: torch.Generator  # batches, latents and augmentation (on the CPU, seeded)
    fixed_z: torch.Tensor  # the latents of the sample grids, fixed for the whole run
    p_aug: float  # augmentation probability (moves with ADA)
    device: torch.device
    precision: str  # effective: fp32, bf16 or fp16
    sign_sum: float = 0.0  # ADA's running E[sign D(x)] since its last adjustment
    sign_count: int = 0
    start: int = 0  # first iteration to run


def _start_unit(
    preset: GanPreset,
    num_classes: int,
    index: int,
    class_ids: list[int],
    seed: int,
    state: dict | None,
    device: torch.device,
    precision: str,
) -> _UnitRun:
    """Unit `index` fresh (seeded seed + 1000 x index), or as the checkpoint `state` interrupted it."""
    generator = seed_everything(seed + 1000 * index)
    unit = GanUnit(preset, num_classes, class_ids, device, precision)
    fixed_z = torch.randn(16 * len(class_ids) if preset.conditional else 16, preset.nz, generator=generator)
    run = _UnitRun(
        index,
        unit,
        generator,
        fixed_z,
        p_aug=1.0 if parse_policy(preset.diffaugment) and not preset.ada else 0.0,
        device=device,
        precision=precision,
    )
    if state is not None:
        unit.load_state_dict(state["unit"])
        restore_rng_states(state, generator, device)
        run.p_aug, run.sign_sum, run.sign_count = (
            float(state["p_aug"]),
            float(state["sign_sum"]),
            int(state["sign_count"]),
        )
        run.fixed_z = state["fixed_z"]
        run.start = int(state["iteration"])
    return run


def _save_gan_checkpoint(
    checkpoint: Checkpoint, finished: list[dict], run: _UnitRun, iteration: int, log: list[dict], diversity: dict
) -> None:
    """The checkpoint after `iteration` iterations of unit `run`: what _start_unit restores."""
    checkpoint.save(
        finished,
        log,
        {
            "unit": run.unit.state_dict(),
            "iteration": iteration,
            **rng_states(run.generator, run.device),
            "p_aug": run.p_aug,
            "sign_sum": run.sign_sum,
            "sign_count": run.sign_count,
            "fixed_z": run.fixed_z,
        },
        diversity=diversity,
    )


def _gan_step(
    run: _UnitRun, preset: GanPreset, real: torch.Tensor, labels: torch.Tensor, batch: int, iteration: int
) -> dict:
    """One D step and one G step (k = 1), and ADA's adjustment; returns the iteration's log row."""
    unit, generator, device = run.unit, run.generator, run.device
    indices = torch.randint(len(real), (batch,), generator=generator).to(device)  # drawn on the CPU (seeded)
    real_batch = real[indices]
    batch_labels = labels[indices] if preset.conditional else None
    z = torch.randn(batch, preset.nz, generator=generator).to(device)
    policy, p_aug = preset.diffaugment, run.p_aug
    with autocast(run.precision, device):
        fake = unit.generator(z, batch_labels)
        # D step: the same kind of augmentation on reals and fakes
        real_logits = unit.discriminator(diff_augment(real_batch, policy, p_aug, generator), batch_labels)
        fake_logits = unit.discriminator(diff_augment(fake.detach(), policy, p_aug, generator), batch_labels)
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    loss_d = discriminator_loss(preset, real_logits, fake_logits)
    unit.optimizer_d.zero_grad(set_to_none=True)
    unit.scaler_d.scale(loss_d).backward()
    unit.scaler_d.step(unit.optimizer_d)
    unit.scaler_d.update()
    # G step: gradients flow through the (differentiable) augmentation into G
    with autocast(run.precision, device):
        gen_logits = unit.discriminator(diff_augment(fake, policy, p_aug, generator), batch_labels)
    loss_g = generator_loss(preset, gen_logits.float())
    unit.optimizer_g.zero_grad(set_to_none=True)
    unit.scaler_g.scale(loss_g).backward()
    unit.scaler_g.step(unit.optimizer_g)
    unit.scaler_g.update()
    if unit.ema is not None:
        unit.ema.update(unit.generator)
    if preset.ada and parse_policy(policy):
        run.sign_sum += float(torch.sign(real_logits.detach()).sum())
        run.sign_count += real_logits.numel()  # one logit per image (dcgan) or per patch (projected)
        if (iteration + 1) % ADA_INTERVAL == 0:
            overfit = run.sign_sum / run.sign_count  # E[sign D(x)]: near 1 when D memorises reals
            run.p_aug = min(1.0, max(0.0, run.p_aug + ADA_STEP * (1 if overfit > preset.ada_target else -1)))
            run.sign_sum, run.sign_count = 0.0, 0
    return {
        "unit": run.index,
        "iteration": iteration + 1,
        "loss_d": float(loss_d.detach()),
        "loss_g": float(loss_g.detach()),
        "d_real": float(torch.sigmoid(real_logits.detach()).mean()),
        "d_fake": float(torch.sigmoid(fake_logits.detach()).mean()),
        "p_aug": run.p_aug,
    }


def _sample_point(
    run: _UnitRun, preset: GanPreset, iteration: int, fixed_labels, real_spread: float, diversity: dict, warn
) -> torch.Tensor:
    """The fixed-noise samples at a sample point, with the collapse watch: their spread against the real
    images' is recorded in `diversity` and a warning given when it falls below COLLAPSE_RATIO."""
    unit = run.unit
    with torch.no_grad():
        samples = unit.sampler.eval()(
            run.fixed_z.to(run.device), None if fixed_labels is None else fixed_labels.to(run.device)
        ).cpu()
    unit.generator.train()
    ratio = mean_pairwise_distance(samples) / max(real_spread, 1e-8)
    diversity[f"{run.index}:{iteration}"] = ratio
    # Early samples of an EMA generator are all alike; judge collapse from a quarter in.
    if ratio < COLLAPSE_RATIO and warn is not None and iteration >= preset.iterations // 4:
        warn(
            f"GAN unit {run.index} at iteration {iteration}: samples are {ratio:.2f}x as spread out as the "
            "real images; the generator may be collapsing"
        )
    return samples


def train_gan(
    train: ImageSet,
    preset: GanPreset,
    seed: int,
    out: Path | None = None,
    resume: bool = False,
    quiet: bool = True,
    warn=None,
    device: str | torch.device = "cpu",
    precision: str | None = None,
) -> dict:
    """Train the GAN unit(s) of `preset` on `train`, which must be a training split, on `device` with
    the effective `precision` (default: the preset's, where the device can do it).

    Writes (with `out`): checkpoint.pt, gan_log.jsonl, samples_uN_XXXXX.png (unit N, iteration XXXXX)
    and gan_losses.png. Returns {"units": [{"class_ids", "generator" (the sampler), "discriminator"}],
    "log": [...], "diversity": {...}, "seconds": ...}.
    """
    if train.split != "train":
        # Enforced here, not only by callers: a GAN that saw test images would leak them into training.
        raise ValueError(f"GANs train on a training split only; got the {train.split!r} split")
    validate_gan_preset(preset)
    keep_freed_memory()  # see pasture.core.runtime: same numbers, far fewer page faults per step
    if train.images.shape[-1] != preset.image_size:
        raise ValueError(f"images are {train.images.shape[-1]} px but the preset makes {preset.image_size} px")
    device = torch.device(device)
    precision = precision or effective_precision(preset.precision, device)
    num_classes = len(train.classes)
    real_all = to_gan_range(train.images.to(device))
    real_spread = mean_pairwise_distance(
        real_all[torch.randperm(len(real_all), generator=torch.Generator().manual_seed(0))]
    )
    plan = unit_plan(preset, num_classes)
    checkpoint_path = out / "checkpoint.pt" if out is not None else None
    checkpoint = Checkpoint(checkpoint_path, 1, parts="units", log="log", log_file="gan_log.jsonl")
    resumed = checkpoint.load(resume, "iteration")
    finished, log, in_progress = resumed.finished, resumed.log, resumed.in_progress
    diversity: dict = dict(resumed.state.get("diversity", {}))
    started = time.perf_counter()
    bar = progress_bar(
        preset.iterations * len(plan), resumed.steps_done(preset.iterations), quiet, desc="gan", unit="it"
    )
    try:
        for unit_index in range(len(finished), len(plan)):
            class_ids = plan[unit_index]
            run = _start_unit(preset, num_classes, unit_index, class_ids, seed, in_progress, device, precision)
            in_progress = None
            unit = run.unit
            real, labels = _unit_images(train, real_all, class_ids, preset, device)
            fixed_labels = torch.tensor(class_ids).repeat_interleave(16) if preset.conditional else None
            batch = min(preset.batch_size, len(real))

            def step(iteration: int, run=run, real=real, labels=labels, batch=batch) -> dict:
                return _gan_step(run, preset, real, labels, batch, iteration)

            def sample_point(done: int, record: dict, run=run, fixed_labels=fixed_labels, unit_index=unit_index):
                samples = _sample_point(run, preset, done, fixed_labels, real_spread, diversity, warn)
                if out is not None:
                    save_grid(samples, out / f"samples_u{unit_index}_{done:05d}.png", nrow=8)
                    _save_gan_checkpoint(checkpoint, finished, run, done, log, diversity)

            def postfix(record: dict, run=run) -> dict:
                return {"D": f"{record['loss_d']:.2f}", "G": f"{record['loss_g']:.2f}", "p": f"{run.p_aug:.2f}"}

            events = [
                lambda done, record: log.append(record),
                progress(bar, postfix),
                every(preset.sample_every, preset.iterations, sample_point),
            ]
            Loop(step, events).run(run.start, preset.iterations)
            finished.append(_finished_unit(class_ids, unit))
    finally:
        bar.close()
    checkpoint.save(finished, log, diversity=diversity)
    if out is not None:
        plot_gan_losses(log, out / "gan_losses.png")
    return {"units": finished, "log": log, "diversity": diversity, "seconds": time.perf_counter() - started}


def _unit_images(train: ImageSet, real_all: torch.Tensor, class_ids, preset: GanPreset, device):
    """The real images (in [-1, 1], on the device) and labels one GAN unit trains on: its classes'."""
    member = torch.isin(train.labels, torch.tensor(class_ids))
    real, labels = real_all[member.to(device)], train.labels[member].to(device)
    if preset.channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    return real, labels


def _finished_unit(class_ids, unit) -> dict:
    """What the checkpoint keeps of a trained unit: its classes, G's sampler and D (its features are a
    from-scratch start worth probing: benchmarks/gan_features.py)."""
    return {
        "class_ids": class_ids,
        "generator": unit.sampler.state_dict(),
        "discriminator": unit.discriminator.state_dict(),
    }
