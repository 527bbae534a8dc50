"""Options are never silently misread: a value of the wrong type or outside the rules is one line before
any work (a recipe file, a search space, a condition's ratio or GAN), the same rule wherever the option
is given, and what the user did not ask for is never refused in their name."""

from __future__ import annotations

import json

import pytest
import torch

from pasture import api
from pasture.cli import main
from pasture.core.errors import UserError
from pasture.study.report import figure_name

QUICK = "recipe=default,epochs=1,image_size=16,batch_size=8"


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("pasture: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("epochs", 2.0, "epochs 2.0: must be a whole number"),
        ("batch_size", 4.5, "batch_size 4.5: must be a whole number"),
        ("image_size", 63.5, "image_size 63.5: must be a whole number"),
        ("epochs", True, "epochs True: must be a whole number"),
        ("lr", "fast", "lr 'fast': must be a finite number"),
        ("augment", 3, "augment 3: must be text"),
    ],
)
def test_a_recipe_file_with_a_wrong_type_is_one_line_and_writes_nothing(
    split_data, tmp_path, capsys, field, value, message
):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"base": "scratch", "recipe": {"epochs": 1, "image_size": 16, field: value}}))
    run = tmp_path / "run"
    assert main(["train", str(split_data), "--out", str(run), "--recipe", str(recipe)]) == 2
    assert message in one_line(capsys)
    assert not run.exists()


@pytest.mark.parametrize(
    "space,message",
    [
        ({"lr": {"low": 0.001, "high": float("inf")}}, "low and high must be finite numbers"),
        ({"lr": {"low": 0.001, "high": 0.1, "log": True, "step": 0.001}}, "give log or step, not both"),
        ({"lr": {"low": 0.001, "high": 0.1, "step": "0.01"}}, "step must be a positive number"),
        ({"lr": {"low": 0.001, "high": 0.1, "step": -0.01}}, "step must be a positive number"),
        ({"epochs": {"low": 1.5, "high": 4}}, "epochs is a whole number"),
        ({"epochs": {"low": 1, "high": 4, "step": 0.5}}, "epochs is a whole number"),
        ({"lr": {"low": 0.1, "high": 0.001}}, "low < high"),
        ({"epochs": [2.0, 3]}, "must be a whole number"),
        ({"lr": {"low": 0.001, "high": 0.1, "log": "yes"}}, "log must be true or false"),
    ],
)
def test_a_bad_search_space_is_one_line_before_any_work(split_data, tmp_path, capsys, space, message):
    pytest.importorskip("optuna")
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space))  # json writes inf as Infinity, which Python's reader accepts
    out = tmp_path / "search"
    assert main(["tune", str(split_data), "--out", str(out), "--space", str(path), "--trials", "1", "--quiet"]) == 2
    assert message in one_line(capsys)
    assert not out.exists()


def test_a_float_field_may_have_whole_number_bounds(split_data, tmp_path):
    pytest.importorskip("optuna")
    from pasture.study.tune import read_space

    path = tmp_path / "space.json"
    path.write_text(json.dumps({"lr": {"low": 1, "high": 2}, "epochs": {"low": 1, "high": 3, "step": 1}}))
    space = read_space(path, "scratch")
    assert space["lr"] == {"low": 1.0, "high": 2.0, "log": False, "step": None, "integer": False}
    assert isinstance(space["lr"]["low"], float) and space["epochs"]["integer"]


@pytest.mark.parametrize("ratio", ["0", "1.5", "-0.2", "1", "abc"])
def test_a_synthetic_ratio_follows_one_rule_in_train_and_in_experiments(split_data, tmp_path, capsys, ratio):
    condition = f"g:{QUICK},gan=default,image_size_gan=16,iterations=2,ngf=4,ndf=4,ratio={ratio}"
    assert (
        main(["experiment", str(split_data), "--out", str(tmp_path / "s"), "--conditions", condition, "--dry-run"]) == 2
    )
    assert "must be between 0 and 1" in one_line(capsys)
    with pytest.raises(api.UserError, match="must be between 0 and 1"):
        from pasture.classify.recipes import check_synthetic_ratio

        check_synthetic_ratio(float(ratio) if ratio != "abc" else ratio)


def test_a_gan_condition_is_checked_before_any_run(split_data, tmp_path, capsys, monkeypatch):
    trained = []
    monkeypatch.setattr("pasture.study.run.train_classifier", lambda *a, **k: trained.append(1))
    for bad, message in (
        ("iterations=0", "--iterations 0"),
        ("diffaugment=bogus", "--diffaugment"),
        ("ngf=4.5", "ngf 4.5: must be a whole number"),
    ):
        for extra in (["--dry-run"], []):
            conditions = [f"base:{QUICK}", f"g:{QUICK},gan=default,image_size_gan=16,{bad}"]
            assert (
                main(
                    [
                        "experiment",
                        str(split_data),
                        "--out",
                        str(tmp_path / "s"),
                        "--quiet",
                        "--jobs",
                        "1",
                        "--conditions",
                        *conditions,
                        *extra,
                    ]
                )
                == 2
            )
            line = one_line(capsys)
            assert "--conditions g:" in line and message in line, line
    assert trained == [] and not (tmp_path / "s").exists()


def test_device_auto_resolves_to_what_the_engine_accepts(monkeypatch):
    from pasture.study import experiment

    monkeypatch.setattr(experiment, "resolve_device", lambda device: torch.device("cuda"))  # a GPU machine
    assert experiment.study_device("auto", "ray") == "cpu"  # Ray runs on CPUs: auto means the CPU there
    assert experiment.study_device("auto", "local") == "cuda"
    assert experiment.study_device("cuda", "ray") == "cuda"  # asked for by name: refused, naming what was asked
    with pytest.raises(api.UserError, match="--device cuda: --engine ray runs on CPUs"):
        experiment.make_engine("ray", device="cuda")


def test_conditions_that_differ_only_in_punctuation_keep_their_own_figures(split_data, tmp_path):
    assert figure_name("a+b") != figure_name("a-b")
    api.experiment(
        split_data, tmp_path / "s", conditions=[f"a+b:{QUICK}", f"a-b:{QUICK},lr=0.01"], seeds=1, quiet=True, jobs=1
    )
    assert len(list((tmp_path / "s" / "figures").glob("confusion_*.png"))) == 2


def _just_outside(meta: dict):
    """A value just outside a field's declared bounds (core.defaults.setting)."""
    if meta.get("choices"):
        return "no-such-choice"
    if meta.get("positive"):
        return 0
    if meta.get("minimum") is not None:
        return meta["minimum"] - 1
    if meta.get("maximum") is not None:
        return meta["maximum"] + 1
    return meta["below"]


@pytest.mark.parametrize("kind", ["recipe", "gan"])
def test_every_declared_bound_is_checked_by_the_one_checker(kind):
    """Issue 44: each bound is declared once, on its field, and one checker holds them all: every field
    with a bound refuses a value just outside it, with a message that names its flag."""
    import dataclasses

    from pasture.classify.recipes import get_recipe, validate_recipe
    from pasture.gan.presets import get_gan_preset
    from pasture.gan.trainer import validate_gan_preset

    base, validate = (
        (get_recipe("scratch"), validate_recipe)
        if kind == "recipe"
        else (get_gan_preset("default"), validate_gan_preset)
    )
    keys = ("choices", "minimum", "maximum", "below")
    bounded = [
        item
        for item in dataclasses.fields(base)
        if item.metadata.get("positive") or any(item.metadata.get(key) is not None for key in keys)
    ]
    assert len(bounded) == (22 if kind == "recipe" else 15)
    for item in bounded:
        value = _just_outside(item.metadata)
        if item.name == "image_size" and kind == "gan":
            value = 2048  # a power of two (checked first), above the most pasture reads
        with pytest.raises(UserError, match=f"--{item.name.replace('_', '-')} {value}"):
            validate(dataclasses.replace(base, **{item.name: value}))


def test_bounds_that_were_not_checked_before_are_now():
    """A GAN's learning rates and beta1 had no check: lr_g = -1 trained a GAN that climbed its loss."""
    import dataclasses

    from pasture.gan.presets import get_gan_preset
    from pasture.gan.trainer import validate_gan_preset

    with pytest.raises(UserError, match="--lr-g -0.0002: must be positive"):
        validate_gan_preset(dataclasses.replace(get_gan_preset("default"), lr_g=-2e-4))
    with pytest.raises(UserError, match=r"--beta1 1.0: must be in \[0, 1\)"):
        validate_gan_preset(dataclasses.replace(get_gan_preset("default"), beta1=1.0))
