"""Argument types, the help formatter and the flags several commands share (recipe and GAN
settings, data options, --device, run folders, engines). Imports no torch.
"""

from __future__ import annotations

import argparse
import dataclasses

from pasture.classify.recipes import RECIPE_ALIASES, RECIPES
from pasture.core.defaults import DEFAULT_MIN_IMAGE_SIZE, DEFAULT_TEST_FRACTION, DataOptions, option_fields


def int_at_least(minimum: int):
    """An argparse type: a whole number >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    return parse


positive_int = int_at_least(1)


nonnegative_int = int_at_least(0)


def jobs_choice(text: str) -> int | str:
    """An argparse type for --jobs: a whole number of at least 1, or auto."""
    return text if text == "auto" else positive_int(text)


JOBS_HELP = (
    "runs at once on this machine, each in its own process with cores/N threads; auto (the default): one "
    "single-threaded run per core, up to 8 (on a CUDA GPU, which they share, also one per 4 GiB of its "
    "memory); a study that already holds runs keeps their threads per run"
)


def recipe_choice(text: str) -> str:
    """An argparse type: a named recipe, or a recipe file (FILE.json, as `pasture tune` writes)."""
    if text in RECIPES or text in RECIPE_ALIASES or text.endswith(".json"):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: choose one of {', '.join(RECIPES)} or give a recipe file (.json)")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def fraction(text: str) -> float:
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 1")
    return value


def folds(text: str) -> int | str:
    """--folds: a whole number of folds (2 or more), or the word groups."""
    return "groups" if text == "groups" else int_at_least(2)(text)


def class_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if len(names) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: name at least two classes, comma-separated")
    return names


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written, and "(default: X)" only where X tells the reader something: not on a
    required option or a switch, not where the default is "not given", and not twice."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            action.required
            # by identity: `0 in (None, False)` is true, and a default of 0 (--seed) does tell something
            or any(action.default is unset for unset in (None, False, argparse.SUPPRESS))
            or not action.option_strings
            or "default" in text
        ):
            return text
        return super()._get_help_string(action)


def add_settings_flags(parser: argparse.ArgumentParser, settings_type, preset_word: str) -> None:
    """One flag per field of a settings dataclass (Recipe, GanPreset), built from the field's type and
    its help metadata, so a new field needs no edit here. A flag left out keeps the preset's value."""
    group = parser.add_argument_group(
        f"{preset_word} fields",
        f"each flag overrides that field of the {preset_word}; left out, the {preset_word}'s value",
    )
    for setting in option_fields(settings_type):
        flag = "--" + setting.name.replace("_", "-")
        meta = setting.metadata
        help_text = meta.get("help", "")
        if setting.type == "bool":
            group.add_argument(
                flag,
                dest=setting.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        if setting.type == "int":
            kind = int_at_least(meta["minimum"]) if meta.get("minimum") is not None else int
        elif setting.type == "float":
            kind = float
        else:
            kind = str
        group.add_argument(
            flag,
            dest=setting.name,
            type=kind,
            choices=meta.get("choices"),
            default=argparse.SUPPRESS,
            metavar=setting.name.upper() if meta.get("choices") is None else None,
            help=help_text,
        )


def settings_overrides(args, settings_type) -> dict:
    """The settings fields given on the command line (flags left out keep the preset's values)."""
    return {f.name: getattr(args, f.name) for f in option_fields(settings_type) if hasattr(args, f.name)}


def data_options(args) -> DataOptions:
    return DataOptions(
        classes=args.classes,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        min_image_size=args.min_image_size,
        strict=args.strict,
        groups=args.groups,
        group_column=args.group_column,
        split_by_group=args.split_by_group,
    )


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help="auto (a CUDA GPU, else Apple MPS, else the CPU), cpu, cuda, cuda:N or mps",
    )


def add_run_folder_flags(parser: argparse.ArgumentParser, folder: str) -> None:
    parser.add_argument("--resume", action="store_true", help=f"continue {folder} from its last checkpoint")
    parser.add_argument(
        "--force", action="store_true", help=f"overwrite a different run already in {folder} (only pasture's own files)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--classes", type=class_list, help="class order, e.g. horse,cow (alphabetical when not given)")
    parser.add_argument(
        "--test-fraction",
        type=fraction,
        default=DEFAULT_TEST_FRACTION,
        help="share of each class held out for testing (DATA/<class>/ layout only)",
    )
    parser.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="seed of that split; fixed apart from --seed so seeds share one test set",
    )
    parser.add_argument(
        "--min-image-size",
        type=positive_int,
        default=DEFAULT_MIN_IMAGE_SIZE,
        help="images with a shorter side below this many px are unusable",
    )
    parser.add_argument("--strict", action="store_true", help="unusable files are an error instead of a warning")
    add_group_flags(parser)
    parser.add_argument(
        "--split-by-group",
        action="store_true",
        help="hold out whole groups for the test split (DATA/<class>/ only): the test accuracy is then "
        "the accuracy on sources the model never saw",
    )


def add_engine_flags(parser) -> None:
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this machine (--jobs processes); ray: every run a Ray task, on a Ray instance "
        "started for the study or on the cluster at --ray-address (needs the ray extra)",
    )
    parser.add_argument(
        "--ray-address",
        metavar="auto|HOST:PORT",
        help="join this Ray cluster (auto: the one started on this machine with `ray start --head`)",
    )
    parser.add_argument(
        "--threads-per-run",
        type=positive_int,
        metavar="N",
        help="with --engine ray: CPUs (and torch threads) per run (default 1)",
    )


def accuracy_line(label: str, accuracy: float, ci95: list[float], n: int) -> str:
    return f"{label}{accuracy:.1%}  (95% CI {ci95[0]:.1%}-{ci95[1]:.1%}, n={n})"


def options_from_args(options_type, args, **given):
    """An options dataclass (ExperimentOptions, TuneOptions) from the parsed arguments of the same names,
    with `given` values on top; `command` is the command line as typed (args.command is the subcommand)."""
    names = {f.name for f in dataclasses.fields(options_type)} - {"command"}
    values = {name: getattr(args, name) for name in names if hasattr(args, name)}
    return options_type(**{**values, "command": args.command_line, **given})


def add_group_flags(parser: argparse.ArgumentParser, purpose: str = "") -> None:
    """--groups and --group-column: which photo source (group) each image comes from."""
    parser.add_argument(
        "--groups",
        metavar="FILE.csv|subfolders",
        help="the group (photo source) of each image: a CSV with columns file (relative to DATA) and "
        "--group-column, or subfolders for DATA/<class>/<group>/*" + (f"; {purpose}" if purpose else ""),
    )
    parser.add_argument(
        "--group-column",
        default="group",
        metavar="COLUMN",
        help="the --groups table's column (e.g. source, or source_repo in MANIFEST.csv)",
    )
