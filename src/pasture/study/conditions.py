"""Conditions: what a study compares. A condition is a recipe plus overrides, optionally a GAN's samples,
a synthetic set, a teacher (distillation) or unlabelled photos; `parse_condition` reads the command
line's NAME:key=value,... form, and CONDITIONS holds the named ones (the report's, pasture's).
Cut out of study/experiment.py (issue 28): torch-free, below every other study module.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from pasture.classify.recipes import Recipe, check_synthetic_ratio, get_recipe
from pasture.core.defaults import option_fields, without_labels
from pasture.core.errors import UserError
from pasture.gan.presets import GanPreset


@dataclass(frozen=True)
class Condition:
    name: str
    recipe: str = "scratch"  # what a written condition without recipe= trains (before issue 25: "default")
    overrides: tuple = ()  # ((recipe field, value), ...)
    gan_preset: str | None = None  # synthetic images from this GAN preset, trained per replicate
    gan_overrides: tuple = ()  # ((GanPreset field, value), ...)
    synthetic_per_class: int = 500
    synthetic_ratio: float | None = None  # None: as if the images were added to the training folder
    synthetic_dir: str | None = None  # a fixed synthetic set (from `gan sample`) instead of a GAN per split
    teacher: str | None = None  # distil from this recipe, trained per replicate on its training part
    unlabeled_dir: str | None = None  # photos without labels that the teacher labels for the student
    description: str = ""

    def settings(self) -> dict:
        """What makes the runs of this condition what they are (its name and description excluded)."""
        data = without_labels(dataclasses.asdict(self))
        for key in ("teacher", "unlabeled_dir"):  # absent unless set: runs stored before keep their keys
            if data[key] is None:
                data.pop(key)
        data["overrides"] = [list(pair) for pair in self.overrides]
        data["gan_overrides"] = [list(pair) for pair in self.gan_overrides]
        return data


CONDITIONS: dict[str, Condition] = {
    condition.name: condition
    for condition in (
        Condition("paper", recipe="paper", description="the report's CNN and recipe, no augmentation"),
        Condition(
            "paper+transforms",
            recipe="paper",
            overrides=(("augment", "paper"),),
            description="the report's random transforms",
        ),
        Condition(
            "paper+dcgan",
            recipe="paper",
            gan_preset="paper",
            synthetic_per_class=500,
            description="the report's DCGAN: 500 synthetic images per class added to training",
        ),
        Condition("scratch", recipe="scratch", description="pasture's tuned recipe for the report's CNN, from scratch"),
        Condition(
            "scratch+gan",
            recipe="scratch",
            gan_preset="default",
            synthetic_per_class=500,
            synthetic_ratio=0.3,
            description="pasture's conditional DiffAugment GAN, 30% of each batch synthetic",
        ),
        Condition(
            "scratch+projected",
            recipe="scratch",
            gan_preset="projected",
            synthetic_per_class=500,
            synthetic_ratio=0.3,
            description="scratch with the projected GAN's samples, 30% of each batch synthetic",
        ),
        Condition("small-data", recipe="small-data", description="best from-scratch recipe (small ResNet)"),
        Condition(
            "small-data+projected",
            recipe="small-data",
            gan_preset="projected",
            synthetic_per_class=500,
            synthetic_ratio=0.3,
            description="small-data with the projected GAN's samples, 30% of each batch synthetic",
        ),
        Condition(
            "probe",
            recipe="probe",
            description="EfficientNet-Lite0 + Lite2 ImageNet features + logistic head (the default recipe)",
        ),
        Condition("finetune", recipe="finetune", description="EfficientNet-Lite0 fine-tuned (LP-FT)"),
        Condition(
            "tiny", recipe="tiny", description="EfficientNet-Lite0 features at 192 px + logistic head (small, fast)"
        ),
        Condition(
            "distill",
            recipe="distill",
            teacher="probe",
            description="paper-cnn distilled from the probe (trained on the same training part)",
        ),
        Condition(
            "distill+gan",
            recipe="distill",
            teacher="probe",
            gan_preset="default",
            synthetic_per_class=250,
            description="distill, with the default GAN's samples (labelled by the teacher) in the transfer set",
        ),
        Condition(
            "distill+projected",
            recipe="distill",
            teacher="probe",
            gan_preset="projected",
            synthetic_per_class=250,
            description="distill, with the projected GAN's samples (labelled by the teacher) in the transfer set",
        ),
        Condition(
            "distill-resnet",
            recipe="distill",
            teacher="probe",
            overrides=(("model", "resnet-small"),),
            description="resnet-small distilled from the probe",
        ),
    )
}
PAPER_EXPERIMENT = ("paper", "paper+transforms", "paper+dcgan", "scratch", "scratch+gan")
# Old condition names, accepted for one release (the recipe `default` is now `scratch`).
CONDITION_ALIASES = {"default": "scratch", "default+gan": "scratch+gan"}
# The report's own numbers, beside which `experiment paper` prints pasture's.
REPORT_NUMBERS = {
    "paper": "95% train / 55% test",
    "paper+transforms": "test +5% (about 60%)",
    "paper+dcgan": "no change",
}

# Condition keys come from the dataclasses, so a new recipe or GAN field is a condition key at once:
# every recipe field by its name; every GAN field by its name where no recipe field has it, and as
# gan_<field> always (gan_batch_size, gan_precision); image_size_gan is kept for older commands.
_RECIPE_KEYS = {f.name for f in option_fields(Recipe)}
_GAN_FIELDS = [f.name for f in option_fields(GanPreset)]
_GAN_KEYS = {
    **{f"gan_{name}": name for name in _GAN_FIELDS},
    **{name: name for name in _GAN_FIELDS if name not in _RECIPE_KEYS},
    "image_size_gan": "image_size",
}


def _parse_value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def recipe_and_overrides(recipe: str) -> tuple[str, list]:
    """(preset, [(field, value)]) of a recipe name or file: a recipe file becomes its base preset plus
    the fields it changes, so a run's key holds the file's content (not its path) and workers on other
    machines need no copy of the file."""
    if not recipe.endswith(".json"):
        return recipe, []
    from_file = get_recipe(recipe)
    base = json.loads(Path(recipe).read_text()).get("base", "scratch")  # as read_recipe_file reads it
    preset = get_recipe(base).to_dict()
    changed = [(key, value) for key, value in without_labels(from_file.to_dict()).items() if value != preset[key]]
    return base, changed


def parse_condition(text: str, recipe: str | None = None, model: str | None = None) -> Condition:
    """'default' (a named condition) or 'NAME:key=value,...' with keys recipe, gan, per_class, ratio,
    synthetic, any recipe field (augment, epochs, lr, model, ...) and GAN fields (iterations, nz, ngf,
    ndf, diffaugment, conditional, loss, ada, image_size_gan, gan_batch_size).

    `recipe` and `model` (the experiment's --recipe/--model) apply to written conditions that do not
    name their own; named conditions keep theirs."""
    if ":" not in text:
        text = CONDITION_ALIASES.get(text, text)
        if text not in CONDITIONS:
            raise UserError(
                f"--conditions {text}: unknown condition; choose from {', '.join(CONDITIONS)} "
                "or write NAME:key=value,..."
            )
        return CONDITIONS[text]
    name, _, spec = text.partition(":")
    if not name:
        raise UserError(f"--conditions {text}: give the condition a name before the colon")
    fields: dict = {"name": name}
    overrides: list = []
    gan_overrides: list = []
    file_overrides: list = []
    if recipe is not None:
        fields["recipe"], file_overrides = recipe_and_overrides(recipe)
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, equals, raw = item.partition("=")
        if not equals:
            raise UserError(f"--conditions {text}: {item!r} is not key=value")
        value = _parse_value(raw)
        if key == "recipe":
            fields["recipe"], file_overrides = recipe_and_overrides(str(value))
        elif key == "gan":
            fields["gan_preset"] = str(value)
        elif key == "per_class":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"--conditions {text}: per_class={raw}: give a whole number of at least 1")
            fields["synthetic_per_class"] = value
        elif key == "ratio":
            fields["synthetic_ratio"] = check_synthetic_ratio(value, f"--conditions {text}: ratio=")
        elif key == "synthetic":
            fields["synthetic_dir"] = str(Path(str(value)).resolve())
        elif key == "teacher":
            fields["teacher"] = str(value)
        elif key == "unlabeled":
            fields["unlabeled_dir"] = str(Path(str(value)).resolve())
        elif key in _RECIPE_KEYS:
            overrides.append((key, value))
        elif key in _GAN_KEYS:
            gan_overrides.append((_GAN_KEYS[key], value))
        else:
            raise UserError(f"--conditions {text}: unknown key {key!r}")
    written = dict(overrides)  # fields written in the condition win over a recipe file's
    overrides = [pair for pair in file_overrides if pair[0] not in written] + overrides
    if model is not None and "model" not in dict(overrides):
        overrides.append(("model", model))
    return Condition(overrides=tuple(overrides), gan_overrides=tuple(gan_overrides), **fields)
