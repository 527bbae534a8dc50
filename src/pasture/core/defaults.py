"""Defaults, data options and the warning printer shared by the API and the CLI.

Torch-free on purpose: the CLI reads these to build its --help, which must start without torch.
"""

from __future__ import annotations

import math
import os
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

DEFAULT_MIN_IMAGE_SIZE = 16  # px; smaller files are skipped as unusable (or an error with --strict)
DEFAULT_TEST_FRACTION = 0.5  # the report's 41 train / 41 test
# The pretrained probe: 9x% balanced accuracy on photo sources it never saw (benchmarks/loso.py) against
# 5x-6x% for the report's CNN from scratch, which learns the photo source (issue 25).
DEFAULT_RECIPE = "probe"

Warn = Callable[[str], None]


def cache_root():
    """Where pasture keeps caches (decoded images, backbone features): $PASTURE_CACHE_DIR, else
    ~/.cache/pasture. Everything there is keyed by content and can be deleted at any time."""
    return Path(os.environ.get("PASTURE_CACHE_DIR") or Path.home() / ".cache" / "pasture")


def cache_enabled() -> bool:
    return os.environ.get("PASTURE_NO_CACHE", "") in ("", "0")


# The largest input side pasture accepts (--image-size, a recipe's or GAN preset's image_size): its models
# read 64-384 px; 20,000 px ran out of memory with a traceback, 100,000 decoded for minutes (issue 40).
MAX_IMAGE_SIZE = 1024


def setting(
    default,
    help: str,
    choices: tuple | None = None,
    minimum: float | None = None,
    *,
    maximum: float | None = None,
    below: float | None = None,
    positive: bool = False,
    unit: str = "",
    hint: str = "",
):
    """A field of a settings dataclass (Recipe, GanPreset) with what the CLI needs to offer it as a
    flag (pasture.cli builds those flags from the fields, so a new field is a one-place change) and its
    bounds, declared once here and checked by bounds_problem: `choices`, `minimum` and `maximum`
    (inclusive), `below` (exclusive), `positive` (above 0), in `unit`; `hint` is said after the bound."""
    bounds = {"minimum": minimum, "maximum": maximum, "below": below, "positive": positive, "unit": unit, "hint": hint}
    return field(default=default, metadata={"help": help, "choices": choices, **bounds})


def _bound_problem(value, meta) -> str | None:
    """What is wrong with `value` against one field's declared bounds, or None."""
    low, high, below = meta.get("minimum"), meta.get("maximum"), meta.get("below")
    unit = f" {meta['unit']}" if meta.get("unit") else ""
    if meta.get("choices") is not None and value not in meta["choices"]:
        return f"choose one of {', '.join(meta['choices'])}"
    if meta.get("positive") and not value > 0:
        return "must be positive"
    if low is not None and (high is not None or below is not None) and not unit:  # a fraction's range
        inside = low <= value and (value <= high if high is not None else value < below)
        return (
            None if inside else (f"must be in [{low}, {high}]" if high is not None else f"must be in [{low}, {below})")
        )
    if low is not None and value < low:
        return "must not be negative" if low == 0 else f"must be at least {low}{unit}"
    if high is not None and value > high:
        return f"at most {high}{unit}"
    return None


def bounds_problem(settings) -> str | None:
    """The first field of a settings dataclass outside the bounds its `setting()` declares, as the
    flag's one-line message ("--epochs 0: must be at least 1"), or None. Run after field_type_problem
    (the values have their types). Checks that involve two fields stay with their dataclass."""
    for item in fields(settings):
        if item.metadata.get("help") is None:
            continue
        value = getattr(settings, item.name)
        if value is None:
            continue
        problem = _bound_problem(value, item.metadata)
        if problem is not None:
            hint = item.metadata.get("hint")
            return f"--{item.name.replace('_', '-')} {value}: {problem}" + (f" ({hint})" if hint else "")
    return None


# What names a preset or condition without changing what its runs compute.
LABEL_FIELDS = ("name", "description")


def option_fields(settings_type) -> list:
    """The fields of a settings dataclass a user may set (all but its name and description)."""
    return [f for f in fields(settings_type) if f.name not in LABEL_FIELDS]


def without_labels(settings: dict) -> dict:
    """`settings` without its name and description: what makes two presets or conditions the same."""
    return {key: value for key, value in settings.items() if key not in LABEL_FIELDS}


def field_type_problem(settings) -> str | None:
    """Why a field of a settings dataclass (Recipe, GanPreset) read from a file or a condition has the
    wrong type, or None: a whole-number field needs a whole number (2.0, 4.5 and true are not), a
    number field a finite number, a text field text, a yes/no field true or false."""
    hints = typing.get_type_hints(type(settings))
    for item in fields(settings):
        value, kind = getattr(settings, item.name), hints[item.name]
        allowed = typing.get_args(kind) or (kind,)
        if value is None and type(None) in allowed:
            continue
        if bool in allowed:
            ok, wanted = isinstance(value, bool), "true or false"
        elif int in allowed:
            ok, wanted = isinstance(value, int) and not isinstance(value, bool), "a whole number"
        elif float in allowed:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            wanted = "a finite number"
        elif str in allowed:
            ok, wanted = isinstance(value, str), "text"
        else:
            continue
        if not ok:
            return f"{item.name} {value!r}: must be {wanted}"
    return None


def warn_to_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class DataOptions:
    """How a data folder becomes a dataset: class order, the split made here, and what is unusable.
    The same for every command that loads training data (train, gan train, experiments)."""

    classes: tuple[str, ...] | None = None  # class order (default: alphabetical), e.g. ("horse", "cow")
    test_fraction: float = DEFAULT_TEST_FRACTION  # share of each class held out (DATA/<class>/ layout only)
    split_seed: int = 0  # seed of that split; apart from the run's seed so that seeds share one test set
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE  # px; a shorter side makes an image unusable
    strict: bool = False  # unusable files are an error instead of a warning
    groups: str | None = None  # the group (photo source) of each image: a CSV, or "subfolders"
    group_column: str = "group"  # the CSV column that holds it
    split_by_group: bool = False  # hold out whole groups for the test split (DATA/<class>/ only)

    def __post_init__(self):
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))

    def identity(self, data, dataset) -> dict:
        """The data side of a run's identity (config.json): which files, which split, which filters.
        `dataset` is what these options loaded from `data` (pasture.data.Dataset)."""
        split_here = dataset.layout == "class-folders"
        return {
            "data": str(Path(data).resolve()),
            "data_fingerprint": dataset.fingerprint,
            "classes": dataset.classes,
            "layout": dataset.layout,
            "test_fraction": self.test_fraction if split_here else None,
            "split_seed": self.split_seed if split_here else None,
            "min_image_size": self.min_image_size,
            "strict": self.strict,
            # only when set, so that runs made before groups existed keep their identity
            **(
                {"groups": self.groups, "group_column": self.group_column, "split_by_group": self.split_by_group}
                if self.groups is not None
                else {}
            ),
        }

    @classmethod
    def from_identity(cls, identity: dict) -> DataOptions:
        """The options that load a run's data again as it was (its split and its groups included): the
        inverse of `identity`. What the identity leaves out (a fixed split's fraction, no groups) keeps
        this class's defaults."""
        given = {option.name: identity.get(option.name) for option in fields(cls)}
        return cls(**{key: value for key, value in given.items() if value is not None})
