"""What a run trains on besides its labelled photos: a synthetic set mixed into its batches
(synthetic_for_run, `train --synthetic`) or a finished run's knowledge as a bank of soft labels
(teacher_bank_for_run, `train --teacher`), each with what config.json records of it; transfer_for_run
chooses between them as `pasture train` is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pasture.classify.distill import TeacherBank, model_identity, teacher_bank
from pasture.classify.recipes import Recipe, check_synthetic_allowed, check_synthetic_ratio, synthetic_share
from pasture.classify.trained import load_run
from pasture.core.defaults import DataOptions, Warn
from pasture.core.errors import UserError
from pasture.core.runs import check_output_folder
from pasture.data import ImageSet, class_index_map, decode_files, image_files_in, load_dataset, load_synthetic


def synthetic_for_run(synthetic, synthetic_ratio, recipe: Recipe, dataset, warn: Warn):
    """(synthetic ImageSet or None, its ratio, what config.json records of it)."""
    if synthetic is None:
        if synthetic_ratio is not None:
            raise UserError("--synthetic-ratio: give --synthetic SYNTH_DIR too")
        return None, None, None
    check_synthetic_allowed(recipe)
    images, fingerprint = load_synthetic(synthetic, dataset.classes, recipe.image_size, warn)
    synthetic_ratio = check_synthetic_ratio(synthetic_ratio)
    if synthetic_ratio is None:
        synthetic_ratio = synthetic_share(len(images), len(dataset.train))
    info = {
        "folder": str(Path(synthetic).resolve()),
        "fingerprint": fingerprint,
        "ratio": synthetic_ratio,
        "counts": images.counts(),
    }
    return images, synthetic_ratio, info


def teacher_bank_for_run(
    teacher, unlabeled, synthetic, recipe: Recipe, data, options: DataOptions, dataset, device, quiet: bool, warn: Warn
):
    """(TeacherBank, what config.json records of the teacher and the transfer set) for `--teacher`."""
    if recipe.pretrained == "probe":
        raise UserError(
            "--teacher: the student must train on images; a probe student would drop the teacher's views. "
            "Use --recipe distill (paper-cnn) or --model resnet-small"
        )
    teacher_model, teacher_config = load_run(teacher, device)
    size = teacher_config["image_size"]
    to_teacher = class_index_map(dataset.classes, teacher_config["classes"], f"--teacher {teacher}: the data's classes")
    # The same split at the teacher's size: the same files, in the same order, as the student's split.
    at_teacher_size = load_dataset(data, size, options, warn=lambda message: None)
    if at_teacher_size.train.files != dataset.train.files:
        raise UserError(f"{data}: the files changed while loading; run again")
    unlabelled = []
    transfer: dict = {"labelled": len(dataset.train)}
    if unlabeled is not None:
        files = image_files_in([unlabeled])
        unlabelled.append(decode_files(files, size))
        transfer["unlabeled"] = {"folder": str(Path(unlabeled).resolve()), "n": len(files)}
    if synthetic is not None:  # GAN samples: the teacher labels them, the GAN's class folders are ignored
        generated, fingerprint = load_synthetic(synthetic, dataset.classes, size, warn)
        unlabelled.append(generated.images)
        transfer["synthetic"] = {
            "folder": str(Path(synthetic).resolve()),
            "fingerprint": fingerprint,
            "n": len(generated),
        }
    identity = model_identity(teacher_model)
    # The teacher sees classes in its own order; the bank keeps the student's (the data's) order.
    bank = teacher_bank(
        teacher_model,
        identity,
        size,
        at_teacher_size.train.images,
        dataset.train.labels,
        unlabelled,
        recipe,
        len(dataset.classes),
        quiet=quiet,
        class_order=to_teacher,
    )
    info = {
        "run": str(Path(teacher).resolve()),
        "checkpoint": identity,
        "classes": teacher_config["classes"],
        "image_size": size,
        "recipe": teacher_config["recipe"]["name"],
        "transfer": transfer,
        "views": len(bank),
        "teacher_seconds": round(bank.seconds, 1),
        "bank_reused": bank.reused,
    }
    return bank, info


@dataclass(frozen=True)
class Transfer:
    """What a run trains on besides its labelled photos: synthetic images and their share of each batch,
    or a teacher's bank; with what config.json records of each (None when not used)."""

    synthetic: ImageSet | None = None  # GAN samples
    synthetic_ratio: float = 0.0
    synthetic_info: dict | None = None
    bank: TeacherBank | None = None
    teacher_info: dict | None = None

    def teacher_identity(self) -> dict:
        """What of the teacher makes a run another run: nothing without one, so that runs made before
        distillation keep their identity."""
        if self.teacher_info is None:
            return {}
        return {"teacher": {key: self.teacher_info[key] for key in ("checkpoint", "transfer")}}


def transfer_for_run(
    teacher,
    unlabeled,
    synthetic,
    synthetic_ratio,
    recipe: Recipe,
    data,
    options: DataOptions,
    dataset,
    device,
    out,
    force: bool,
    quiet: bool,
    warn: Warn,
) -> Transfer:
    """`train --teacher` (the teacher labels the unlabeled and synthetic photos into its bank) or
    `train --synthetic` (GAN samples mixed into each batch), each option checked against the other."""
    if teacher is None:
        images, ratio, info = synthetic_for_run(synthetic, synthetic_ratio, recipe, dataset, warn)
        return Transfer(synthetic=images, synthetic_ratio=ratio or 0.0, synthetic_info=info)
    if synthetic_ratio is not None:
        raise UserError(
            "--synthetic-ratio: with --teacher, synthetic images join the teacher's transfer set; drop --synthetic-ratio"
        )
    # A folder that is not ours is refused now, not after minutes of teacher outputs.
    check_output_folder(Path(out), None if force else "config.json", "run")
    bank, info = teacher_bank_for_run(
        teacher, unlabeled, synthetic, recipe, data, options, dataset, device, quiet, warn
    )
    return Transfer(bank=bank, teacher_info=info)
