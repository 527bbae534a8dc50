"""Training recipes: named presets held as data, overridden field by field, and the one schedule.

A recipe names everything a run needs besides the data and the seed: model, input size,
augmentation, optimiser and schedule. Every field carries its CLI help, so `pasture train` offers
each as a flag and experiments accept each as a condition key: a new field is a one-place change.
Torch-free at import (the CLI reads RECIPES to build --help).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from pasture.classify.recipe_fields import Recipe
from pasture.core.defaults import DEFAULT_RECIPE, bounds_problem, field_type_problem
from pasture.core.errors import UserError

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        # Exactly as the report states (section III.B.4).
        Recipe(
            name="paper",
            optimizer="sgd",
            lr=0.01,
            momentum=0.99,
            weight_decay=0.05,
            batch_size=4,
            epochs=20,
            image_size=64,
            augment="none",
            description="the report's recipe: SGD lr 0.01, momentum 0.99, weight decay 0.05, batch 4, 20 epochs",
        ),
        # Called `default` before issue 25 (it was the default then). Tuned on a validation split carved from cowhorse-dev's train split (never its test split);
        # see benchmarks/tune_default.py and the README.
        Recipe(
            name="scratch",
            optimizer="adamw",
            lr=1e-3,
            momentum=0.9,
            weight_decay=0.05,
            batch_size=16,
            epochs=60,
            schedule="cosine",
            warmup_epochs=3,
            label_smoothing=0.1,
            image_size=64,
            augment="paper",
            balance_classes=True,
            description="the report's small CNN from scratch with pasture's tuned recipe (AdamW, cosine, label "
            "smoothing): tiny and fast, but it learns the photo source",
        ),
        # The best from-scratch combination; chosen on validation splits of the dev train split
        # (benchmarks/recipes.py --tune), never on a test split.
        Recipe(
            name="small-data",
            model="resnet-small",
            image_size=64,
            augment="strong",
            optimizer="adamw",
            lr=2e-3,
            weight_decay=0.05,
            batch_size=32,
            epochs=120,
            schedule="cosine",
            warmup_epochs=5,
            label_smoothing=0.1,
            mixup_alpha=0.2,
            cutmix_alpha=1.0,
            ema_decay=0.99,
            tta=True,
            balance_classes=True,
            description="best from scratch: small ResNet, strong augmentation, MixUp/CutMix, EMA, TTA",
        ),
        # A paper-cnn student of a pretrained teacher (pasture train --teacher RUN): strong augmentation
        # and MixUp on views the teacher scores once (cached), many passes over that bank. Not tuned:
        # temperature 2 and weight 0.9 are the usual KD values, 16 views x 20 passes (320 views seen per
        # photo, against the default recipe's 60) was what a 2-core study could afford; 64 and 256 views
        # gave the same dev test accuracy (74%, one seed each). The teacher scores in bf16 where the CPU
        # has it natively: 3.1x faster, the same top class on 99.8% of 1,600 views (benchmarks/distill.py).
        Recipe(
            name="distill",
            model="paper-cnn",
            image_size=64,
            augment="strong",
            mixup_alpha=1.0,
            optimizer="adamw",
            lr=2e-3,
            weight_decay=0.05,
            batch_size=64,
            epochs=20,
            schedule="cosine",
            warmup_epochs=1,
            distill_views=16,
            distill_temperature=2.0,
            distill_weight=0.9,
            teacher_precision="bf16",
            description="a small student (paper-cnn) that learns to match a teacher run (--teacher): same augmented, "
            "mixed views for both, teacher outputs cached",
        ),
        # The default. Pretrained backbones, frozen: features computed once per image (cached), and a
        # logistic-regression head solved to convergence, its C chosen by cross-validation (leave one
        # source out when sources are known). The optimiser fields do not apply to this head. Lite0 +
        # Lite2 side by side: chosen on leave-one-source-out (issue 25; models/pretrained.py says why).
        Recipe(
            name="probe",
            model="effnet-lite0+lite2",
            image_size=260,
            pretrained="probe",
            augment="none",
            balance_classes=True,
            description="EfficientNet-Lite0 + Lite2 ImageNet features + logistic-regression head",
        ),
        # The smallest model within 3 points of the default on photo sources it never saw (issue 29,
        # python benchmarks/loso.py --seeds 1 --conditions probe probe-lite0-224 ... probe-lite0-128
        # probe-192 probe-160, 2026-12-03): Lite0 alone at 192 px, 92.1% against 95.0% (paired -2.9,
        # -4.8 to -1.0); at 160 px -6.8, at 128 px -11.8. A third of the default's file (13.5 MB against
        # 32.8 MB fp32) and 4x faster at batch 1 (10 ms against 43 ms, one core, ONNX Runtime).
        Recipe(
            name="tiny",
            model="effnet-lite0",
            image_size=192,
            pretrained="probe",
            augment="none",
            balance_classes=True,
            description="EfficientNet-Lite0 features at 192 px + logistic-regression head: a third of the "
            "default's size, 4x faster, about 3 points lower on unseen sources",
        ),
        # Whole pretrained network, LP-FT: the head starts from a linear probe, then everything trains
        # with discriminative learning rates, frozen BN statistics and mild augmentation.
        Recipe(
            name="finetune",
            model="effnet-lite0",
            image_size=224,
            pretrained="finetune",
            augment="paper",
            optimizer="adamw",
            lr=3e-4,
            backbone_lr_scale=0.1,
            freeze_bn=True,
            weight_decay=1e-2,
            batch_size=16,
            epochs=8,
            schedule="cosine",
            warmup_epochs=1,
            label_smoothing=0.1,
            tta=True,
            balance_classes=True,
            description="EfficientNet-Lite0 fine-tuned end to end after a linear probe (LP-FT), backbone at "
            "1/10 of the head's rate",
        ),
    )
}

# Old names still accepted for one release, each with a one-line note (recipe_alias_note).
RECIPE_ALIASES = {"default": "scratch"}


def recipe_alias_note(name: str) -> str | None:
    """The note for a recipe asked for by an old name, or None."""
    if name not in RECIPE_ALIASES:
        return None
    return (
        f"--recipe {name}: is now called {RECIPE_ALIASES[name]} (the default is the pretrained probe); "
        f"the old name is accepted until pasture 0.3"
    )


def get_recipe(name: str) -> Recipe:
    """A named recipe (or an old name of one), or a recipe file (NAME.json, as `pasture tune` writes)."""
    if name.endswith(".json"):
        return read_recipe_file(name)
    name = RECIPE_ALIASES.get(name, name)
    if name not in RECIPES:
        raise UserError(
            f"--recipe {name}: unknown recipe; choose one of {', '.join(RECIPES)} or give a recipe file (.json)"
        )
    return RECIPES[name]


RECIPE_FILE_FORMAT = 1


def recipe_file_text(recipe: Recipe, base: str, note: str = "") -> str:
    """A recipe file: every field of `recipe` (so it reads the same after pasture's presets change),
    the preset it started from, and a note saying where it came from."""
    return (
        json.dumps({"format": RECIPE_FILE_FORMAT, "base": base, "note": note, "recipe": recipe.to_dict()}, indent=2)
        + "\n"
    )


def read_recipe_file(path: str | Path) -> Recipe:
    """The Recipe in a recipe file: its `base` preset with the file's fields over it (a file may list
    only the fields it changes). Every problem is one UserError naming the file."""
    from pasture.core.runs import read_option_json  # here: this module stays torch-free for --help

    path = Path(path)
    data = read_option_json(path, "--recipe", "recipe file")
    if not isinstance(data, dict) or not isinstance(data.get("recipe"), dict):
        raise UserError(f'--recipe {path}: a recipe file holds {{"base": PRESET, "recipe": {{field: value, ...}}}}')
    # A file without a base meant the from-scratch recipe when that was the default; it still does.
    base = RECIPE_ALIASES.get(data.get("base", "scratch"), data.get("base", "scratch"))
    if base not in RECIPES:
        raise UserError(f"--recipe {path}: base {base!r} is not a recipe; choose one of {', '.join(RECIPES)}")
    fields = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(data["recipe"]) - fields)
    if unknown:
        raise UserError(f"--recipe {path}: unknown recipe field(s) {', '.join(unknown)}")
    recipe = dataclasses.replace(
        RECIPES[base], **{"name": path.stem, **data["recipe"]}
    )  # the file's name if it has one
    try:
        validate_recipe(recipe)
    except (UserError, ValueError, TypeError) as error:
        raise UserError(f"--recipe {path}: {error}") from None
    return recipe


def with_overrides(recipe: Recipe, **overrides) -> Recipe:
    """A copy of `recipe` with the given fields replaced; None means "keep the recipe's value"."""
    changes = {key: value for key, value in overrides.items() if value is not None}
    unknown = set(changes) - {f.name for f in dataclasses.fields(Recipe)}
    if unknown:
        raise ValueError(f"unknown recipe fields: {sorted(unknown)}")
    result = dataclasses.replace(recipe, **changes)
    validate_recipe(result)
    return result


# What a probe's head ignores: it is a logistic regression solved to convergence on cached features of
# the unaugmented photos (and their mirror images), so no optimiser, schedule or augmentation applies.
PROBE_IGNORES = (
    "optimizer",
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "batch_size",
    "epochs",
    "schedule",
    "warmup_epochs",
    "label_smoothing",
    "mixup_alpha",
    "cutmix_alpha",
    "ema_decay",
    "augment",
    "backbone_lr_scale",
    "freeze_bn",
    "wise_alpha",
)


def base_recipe_name(recipe: str | None, pretrained: str | None = None, model: str | None = None) -> str:
    """The preset a run starts from. Given a name, that one. Not given: the default (the probe), or the
    recipe that fits what was asked for instead: `finetune` for pretrained="finetune", `scratch` for a
    model trained from scratch (--model resnet-small alone)."""
    if recipe is not None:
        return recipe
    if pretrained in ("probe", "finetune"):
        return pretrained
    if model is not None:
        from pasture.models import get_spec

        if not get_spec(model).pretrained:
            return "scratch"
    return DEFAULT_RECIPE


# Measured, for the line a from-scratch run prints: issue 25's hidden photos from other sources (n=500),
# and benchmarks/loso.py (8 sources held out in turn).
SCRATCH_UNSEEN = "59.8% on hidden photos from other sources (n=500), against 95.2% for the pretrained probe"


def recipe_line(recipe: Recipe, asked: str | None) -> str:
    """The first line of a training run: which recipe, model and input size, and why."""
    if asked is None:
        why = "the default: a pretrained backbone, which keeps working on photo sources it never saw"
    elif asked.endswith(".json"):
        why = f"from {asked}"
    else:
        why = "as asked"
    return f"recipe {recipe.name}: {recipe.model} at {recipe.image_size} px, {recipe.description or 'custom'} ({why})"


def scratch_warning(recipe: Recipe) -> str | None:
    """One line for a model trained from scratch: it will likely learn the photo source."""
    if recipe.pretrained != "none":
        return None
    return (
        f"{recipe.model} trained from scratch will likely learn the photo source, not only the animal: "
        f"{SCRATCH_UNSEEN}. Drop --recipe/--model for the pretrained default"
    )


def resolve_recipe(recipe: str | None = None, pretrained: str | None = None, **overrides) -> Recipe:
    """The Recipe a run will use: the named preset (base_recipe_name when None) with the given fields
    overridden (None keeps the preset's value), checked against the model it names.

    A pretrained --model without --image-size gets that model's native input size (effnet-lite2: 260).
    A probe refuses fields that would change nothing (PROBE_IGNORES), rather than ignore them.
    """
    # Imported here, not at the top: this module stays torch-free for the CLI's --help.
    from pasture.classify.augment import get_augment
    from pasture.models import get_spec

    base = get_recipe(base_recipe_name(recipe, pretrained, overrides.get("model")))
    if overrides.get("model") is not None and overrides.get("image_size") is None:
        native = get_spec(overrides["model"]).native_image_size
        if native is not None and get_spec(overrides["model"]).pretrained and base.pretrained != "none":
            overrides["image_size"] = native
    if overrides.get("weights") is not None:
        overrides["weights"] = str(Path(overrides["weights"]).resolve())
    resolved = with_overrides(base, pretrained=pretrained, **overrides)
    spec = get_spec(resolved.model)
    if spec.pretrained and resolved.pretrained == "none":
        raise UserError(f"--model {spec.name}: a pretrained backbone; add --pretrained probe or --pretrained finetune")
    if not spec.pretrained and resolved.pretrained != "none":
        raise UserError(
            f"--pretrained {resolved.pretrained}: {spec.name} has no pretrained weights; use --model effnet-lite0"
        )
    if not spec.pretrained and resolved.weights is not None:
        raise UserError(f"--weights: {spec.name} is trained from scratch and takes no backbone weights")
    if resolved.weights is not None and not Path(resolved.weights).is_file():
        raise UserError(f"--weights {resolved.weights}: no such file")
    if resolved.image_size < spec.min_image_size:
        raise UserError(
            f"--image-size {resolved.image_size}: too small for {spec.name}; it needs at least {spec.min_image_size} px"
        )
    if resolved.pretrained == "probe":
        probe_defaults = RECIPES["probe"]
        for name in PROBE_IGNORES:
            if overrides.get(name) is not None and overrides[name] != getattr(probe_defaults, name):
                flag = "--" + name.replace("_", "-")
                raise UserError(
                    f"{flag}: does not apply to a probe (its head is a logistic regression solved to "
                    "convergence on cached features); drop it, or use --recipe finetune or scratch"
                )
    get_augment(resolved.augment)
    return resolved


def check_synthetic_allowed(recipe: Recipe, option: str = "--synthetic") -> None:
    """Synthetic images reach every recipe: a network trained on images mixes them into its batches, a
    probe fits its head on their features as extra rows (since issue 30). The one check, for train and
    experiments: an ensemble of probes would fit every bootstrap member on the same synthetic rows,
    which pasture has not measured, so it is refused."""
    if recipe.pretrained == "probe" and recipe.ensemble > 1:
        raise UserError(f"{option}: synthetic images with an ensemble of probes are not supported; use --ensemble 1")


def synthetic_share(n_synthetic: int, n_train: int) -> float:
    """The synthetic share of each batch when none is given: as if the synthetic images had been added
    to the training folder."""
    return n_synthetic / (n_synthetic + n_train)


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


def apply_schedule(optimizer, base_lr: float, step: int, steps_per_epoch: int, recipe: Recipe) -> float:
    """Set every parameter group's learning rate for optimiser step `step` (0-based): base_lr x the
    group's "lr_scale" (1 when absent) x lr_factor. The one schedule of every training loop (classifier,
    probe head, self-supervised start). Returns the factor."""
    factor = lr_factor(step, steps_per_epoch, recipe)
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group.get("lr_scale", 1.0) * factor
    return factor


def check_synthetic_ratio(ratio, option: str = "--synthetic-ratio") -> float | None:
    """The one rule for a synthetic share of each batch (train's --synthetic-ratio and a condition's
    ratio=): a number strictly between 0 and 1. None stays None (the default share)."""
    if ratio is None:
        return None
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise UserError(f"{option} {ratio}: must be between 0 and 1 (the share of each batch that is synthetic)")
    return float(ratio)


def validate_recipe(recipe: Recipe) -> None:
    problem = field_type_problem(recipe)
    if problem is not None:  # a recipe file's "epochs": 2.0 crashed the training after its folder was made
        raise UserError(f"recipe {recipe.name}: {problem}")
    problem = bounds_problem(recipe)  # each field's bounds, declared on it
    if problem is not None:
        raise UserError(problem)
    if recipe.selfsup_epochs and recipe.pretrained != "none":  # what involves two fields stays here
        raise UserError(
            f"--selfsup-epochs {recipe.selfsup_epochs}: self-supervised pretraining is for from-scratch models; "
            f"drop it or --pretrained {recipe.pretrained}"
        )
