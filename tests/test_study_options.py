"""Options as data for studies: api.experiment and api.tune take an options object (or a keyword per
field), and the CLI builds that object from its flags of the same names, so a new option cannot be
forgotten on the way from the command line to the study."""

from __future__ import annotations

import dataclasses

import pytest

from pasture import api
from pasture.cli import build_parser
from pasture.cli.options import options_from_args
from pasture.study.experiment import ExperimentOptions
from pasture.study.tune import TuneOptions


def dests(command: list[str]) -> set[str]:
    parser = build_parser()
    args = parser.parse_args(command)
    return set(vars(args))


@pytest.mark.parametrize(
    ("options_type", "command", "not_flags"),
    [
        (ExperimentOptions, ["experiment", "DATA", "--out", "DIR"], {"paper", "command"}),
        (TuneOptions, ["tune", "DATA", "--out", "DIR", "--space", "s.json"], {"command"}),
    ],
)
def test_every_study_option_is_a_flag_of_the_same_name(options_type, command, not_flags):
    fields = {f.name for f in dataclasses.fields(options_type)}
    assert fields - not_flags <= dests(command), sorted(fields - not_flags - dests(command))


def test_the_cli_passes_each_flag_and_the_command_line_through():
    args = build_parser().parse_args(
        ["experiment", "DATA", "--out", "DIR", "--seeds", "3", "--folds", "groups", "--conditions", "scratch", "probe"]
    )
    args.command_line = ["pasture", "experiment", "DATA"]
    options = options_from_args(ExperimentOptions, args, paper=True)
    assert (options.seeds, options.folds, options.conditions) == (3, "groups", ["scratch", "probe"])
    assert options.paper is True and options.command == ["pasture", "experiment", "DATA"]


def test_an_options_object_and_keywords_combine_and_unknown_keywords_are_refused(tmp_path):
    base = ExperimentOptions(conditions=["scratch"], seeds=4, dry_run=True)
    with pytest.raises(TypeError, match="'sedes'"):
        api.experiment(tmp_path / "data", tmp_path / "out", base, sedes=2)
    with pytest.raises(TypeError, match="'trails'"):
        api.tune(tmp_path / "data", tmp_path / "out", TuneOptions(space="s.json"), trails=3)
    with pytest.raises(api.UserError, match="--space"):
        api.tune(tmp_path / "data", tmp_path / "out")


def test_a_dry_run_from_an_options_object_plans_what_the_object_says(split_data, tmp_path):
    options = ExperimentOptions(conditions=["a:recipe=default,epochs=1,image_size=16"], seeds=2, dry_run=True, jobs=1)
    plan = api.experiment(split_data, tmp_path / "s", options, seeds=3)["plan"]  # the keyword wins
    assert plan["replicates"] == 3 and plan["conditions"] == ["a"] and plan["to_run"] == 3
    assert not (tmp_path / "s").exists()  # a dry run writes nothing


def test_a_study_spec_is_built_from_its_options_not_copied_by_hand():
    """Issue 44: every field ExperimentOptions/TuneOptions share with their spec reaches it, so a field
    added to both cannot be forgotten in a hand-written copy; what the caller resolved wins."""
    import dataclasses

    from pasture.study.experiment import NOT_COPIED, ExperimentOptions, ExperimentSpec, spec_from_options
    from pasture.study.tune import TuneOptions, TuneSpec

    for options_type, spec_type, given in (
        (
            ExperimentOptions,
            ExperimentSpec,
            {
                "seeds": 7,
                "folds": 4,
                "groups": "subfolders",
                "group_column": "src",
                "classes": ["horse", "cow"],
                "min_image_size": 20,
                "eval_every": 3,
                "dry_run": True,
                "jobs": 3,
                "quiet": True,
                "force": True,
            },
        ),
        (
            TuneOptions,
            TuneSpec,
            {
                "space": "s.json",
                "recipe": "paper",
                "trials": 9,
                "folds": 4,
                "seeds": 3,
                "batch": 2,
                "seed": 5,
                "classes": ["a", "b"],
                "test_fraction": 0.3,
                "split_seed": 4,
                "min_image_size": 20,
                "quiet": True,
                "force": True,
            },
        ),
    ):
        shared = {f.name for f in dataclasses.fields(options_type)} & {f.name for f in dataclasses.fields(spec_type)}
        assert set(given) == shared - NOT_COPIED  # the test sets every field that is copied
        options = options_type(**given, command=["pasture", "x"])
        extra = {"conditions": []} if spec_type is ExperimentSpec else {}
        spec = spec_from_options(spec_type, options, data="D", out="O", device="cpu", **extra)
        assert all(getattr(spec, name) == value for name, value in given.items())
        assert spec.command == ["pasture", "x"] and spec.device == "cpu" and spec.data == "D"
