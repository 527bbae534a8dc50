"""What a newcomer gets without options: the pretrained probe, said on the first line; the from-scratch
recipe under its own name, with a warning that it learns the photo source; old names still accepted."""

from __future__ import annotations

import json

import pytest
from conftest import make_image

from pasture import api
from pasture.classify.recipes import RECIPES, get_recipe, read_recipe_file, resolve_recipe
from pasture.cli import main
from pasture.core.defaults import DEFAULT_RECIPE
from pasture.study.conditions import CONDITIONS, PAPER_EXPERIMENT, parse_condition


@pytest.mark.slow
def test_train_without_options_trains_the_pretrained_probe_and_says_so(split_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(split_data), "--out", str(run)]) == 0
    out, err = capsys.readouterr()
    first = out.splitlines()[0]
    assert first.startswith("recipe probe: effnet-lite0+lite2 at 260 px") and "the default" in first
    assert "learn the photo source" not in err  # no from-scratch warning for the default
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"]["name"] == DEFAULT_RECIPE == "probe"
    assert config["model"] == "effnet-lite0+lite2" and config["recipe"]["pretrained"] == "probe"
    # it records only what a probe uses (issue 44): its backbone, C and members, no optimiser or epochs
    assert "head_c" in config["recipe"] and not {"epochs", "optimizer", "lr", "momentum", "augment"} & set(
        config["recipe"]
    )
    assert "epochs" not in config["identity"]["recipe"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["notes"]["head"]["folds"] == "5 stratified folds"  # no sources known: stratified folds
    assert len(api.predict(run, [split_data / "test" / "cow"])) == 6
    assert main(["train", str(split_data), "--out", str(run), "--resume"]) == 0  # the same identity: finished
    assert "already finished" in capsys.readouterr().err


def test_a_from_scratch_model_warns_that_it_learns_the_photo_source(split_data, tmp_path, capsys):
    assert (
        main(
            [
                "train",
                str(split_data),
                "--out",
                str(tmp_path / "s"),
                "--recipe",
                "scratch",
                "--epochs",
                "1",
                "--image-size",
                "16",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith("recipe scratch: paper-cnn at 16 px") and "(as asked)" in out.splitlines()[0]
    warning = [line for line in err.splitlines() if "learn the photo source" in line]
    assert len(warning) == 1 and "59.8%" in warning[0] and "pretrained" in warning[0]


def test_the_old_name_default_still_trains_the_scratch_recipe_with_a_note(split_data, tmp_path, capsys):
    assert (
        main(
            [
                "train",
                str(split_data),
                "--out",
                str(tmp_path / "d"),
                "--recipe",
                "default",
                "--epochs",
                "1",
                "--image-size",
                "16",
                "--quiet",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "--recipe default: is now called scratch" in err
    assert json.loads((tmp_path / "d" / "config.json").read_text())["recipe"]["name"] == "scratch"
    assert get_recipe("default") == RECIPES["scratch"] and "default" not in RECIPES


def test_a_from_scratch_model_alone_starts_from_the_scratch_recipe():
    assert resolve_recipe(None, model="resnet-small").name == "scratch"
    assert resolve_recipe(None, pretrained="finetune").name == "finetune"
    assert resolve_recipe(None).name == "probe"
    assert resolve_recipe(None, model="effnet-lite2").image_size == 260  # a backbone at its native size
    assert resolve_recipe(None, model="effnet-lite2", image_size=96).image_size == 96


def test_old_recipe_files_and_conditions_keep_their_meaning(tmp_path):
    no_base = tmp_path / "mine.json"
    no_base.write_text(json.dumps({"recipe": {"epochs": 3}}))  # written when the default was from scratch
    assert read_recipe_file(no_base).model == "paper-cnn" and read_recipe_file(no_base).epochs == 3
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"base": "default", "recipe": {"epochs": 3}}))
    assert read_recipe_file(old).model == "paper-cnn"
    assert (
        parse_condition("default") == CONDITIONS["scratch"]
        and parse_condition("default+gan") == CONDITIONS["scratch+gan"]
    )
    assert parse_condition("mine:epochs=3").recipe == "scratch"
    # The report's experiment is unchanged: its CNN, its recipe, its GAN.
    assert [CONDITIONS[name].recipe for name in PAPER_EXPERIMENT] == ["paper", "paper", "paper", "scratch", "scratch"]


def test_recipes_lists_the_default_and_the_old_name(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "probe" in out and "[default]" in out.split("probe", 1)[1].splitlines()[0]
    assert "default      old name of scratch" in out
    assert "effnet-lite0+lite2" in out and "effnet-lite2" in out


@pytest.mark.slow
def test_the_app_teaches_the_probe_unless_told(tmp_path):
    pytest.importorskip("fastapi")
    from appkit import TOKEN, client_for, photos, wait_for

    from pasture.app.server import create_app

    client = client_for(create_app(tmp_path / "runs", token=TOKEN))
    page = client.get("/").text
    assert '<input type="radio" name="mode" value="probe" checked>' in page
    response = client.post(
        "/api/teach", data={"classes": '["cow", "horse"]', "name": "plain"}, files=photos("cow", 3) + photos("horse", 3)
    )
    assert response.status_code == 200, response.text
    assert response.json()["epochs"] is None  # a probe: no epochs to count
    status = wait_for(client, response.json()["job"])
    assert status["state"] == "done", status
    assert json.loads((tmp_path / "runs" / "plain" / "config.json").read_text())["recipe"]["name"] == "probe"


def test_grouped_training_chooses_the_head_on_held_out_sources(tmp_path):
    data = tmp_path / "data"  # DATA/<class>/<source>/: three sources, each with both classes
    for number, source in enumerate(("farm", "field", "barn")):
        for label in ("cow", "horse"):
            folder = data / label / source
            folder.mkdir(parents=True)
            for index in range(4):
                make_image(label, 500 + 10 * number + index).save(folder / f"{source}_{index}.png")
    metrics = api.train(data, tmp_path / "run", groups="subfolders", image_size=48, quiet=True)
    head = metrics["notes"]["head"]
    assert head["folds"].startswith("leave-one-source-out over") and head["usable_folds"] >= 2
