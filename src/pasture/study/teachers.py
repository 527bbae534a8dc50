"""Teachers of distillation conditions: one teacher per training part, recipe and device, trained once
and stored like a GAN (cache_root()/teachers), and the bank of its soft labels a student learns from.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from pasture.classify.distill import model_identity, teacher_bank
from pasture.classify.evaluate import predict_probabilities
from pasture.classify.fit import train_classifier
from pasture.classify.recipes import Recipe, resolve_recipe
from pasture.classify.trained import build_members
from pasture.core.defaults import cache_enabled, cache_root
from pasture.core.runs import atomic_torch_save
from pasture.core.store import build_once
from pasture.models.registry import Ensemble
from pasture.study.design import RunTask, content_hash
from pasture.study.gan_store import gan_samples, training_content
from pasture.study.inputs import RunInputs, task_device

TEACHER_STORE_FORMAT = 1  # bump when classifier training changes, so stored teachers are not reused


def teacher_bank_of(task: RunTask, inputs: RunInputs, recipe: Recipe, num_classes: int):
    """The teacher bank of a distillation run: the condition's teacher recipe trained on the replicate's
    training part with seed 0 (one teacher per training part, as a user has one teacher run: every
    student seed and repeat of that part shares it and its cached bank; the spread over seeds is the
    student's), plus the GAN's samples at the teacher's size when the condition has a GAN. Returns
    (bank, GAN folder, what the result records of the teacher)."""
    condition = task.condition
    assert condition.teacher is not None
    teacher_recipe = resolve_recipe(condition.teacher)
    teacher_data = inputs.replicate_dataset(task, teacher_recipe.image_size)
    teacher, teacher_seconds, teacher_reused = trained_teacher(task, teacher_recipe, teacher_data)
    unlabelled, gan_dir = [], None
    if condition.gan_preset:
        generated, gan_dir = gan_samples(task, inputs, teacher_recipe.image_size)
        unlabelled.append(generated.images)
    if condition.unlabeled_dir:
        unlabelled.append(inputs.unlabeled_at(condition.unlabeled_dir, teacher_recipe.image_size))
    # The teacher was trained on this replicate's classes, in this order: no class_order to map.
    bank = teacher_bank(
        teacher,
        model_identity(teacher),
        teacher_recipe.image_size,
        teacher_data.train.images,
        teacher_data.train.labels,
        unlabelled,
        recipe,
        num_classes,
    )
    predicted = predict_probabilities(teacher, teacher_data.test.images).argmax(1)
    teacher_accuracy = float((predicted == teacher_data.test.labels).float().mean())
    return (
        bank,
        gan_dir,
        {
            "recipe": teacher_recipe.name,
            "seconds": teacher_seconds,
            "reused": teacher_reused,
            "bank_seconds": bank.seconds,
            "bank_reused": bank.reused,
            "views": len(bank),
            "test_accuracy": teacher_accuracy,
        },
    )


def trained_teacher(task: RunTask, recipe: Recipe, dataset) -> tuple:
    """(the teacher model, its training seconds, whether it was stored) of a distillation task: trained
    once per training part, recipe and device, and stored like a GAN (every student seed and repeat of
    that part, and every other study of the same photos, reuses it; before, each student run trained
    its own copy of the same teacher)."""
    device = task_device(task)
    key = content_hash(
        {
            "format": TEACHER_STORE_FORMAT,
            "recipe": recipe.to_dict(),
            "seed": 0,
            "train_images": training_content(dataset),
            "device": device.type,
            "torch": torch.__version__,
        }
    )
    folder = (cache_root() / "teachers" if cache_enabled() else Path(task.out) / "teachers") / key
    path = folder / "teacher.pt"

    def read():
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            model = build_members(recipe, len(dataset.classes), stored["members"], device)
            return model, float(stored["seconds"]), True
        except Exception:  # a damaged entry is trained again, never trusted
            return None

    def train():
        started = time.perf_counter()
        model = train_classifier(dataset, recipe, 0, device=device).model
        seconds = time.perf_counter() - started
        members = model.members if isinstance(model, Ensemble) else [model]
        atomic_torch_save(
            {
                "members": [
                    {name: value.detach().cpu() for name, value in member.state_dict().items()} for member in members
                ],
                "seconds": seconds,
            },
            path,
        )
        return model, seconds, False

    return build_once(folder, read, train, "teacher")
