"""The tiny recipe (issue 29): effnet-lite0 features at 192 px and a logistic head, trained, scored and
used like any run."""

from __future__ import annotations

import json

from pasture import api
from pasture.classify.recipes import get_recipe
from pasture.cli import main


def test_the_tiny_recipe_is_one_small_backbone_and_trains_like_any_run(split_data, tmp_path, capsys):
    recipe = get_recipe("tiny")
    assert (recipe.model, recipe.image_size, recipe.pretrained) == ("effnet-lite0", 192, "probe")
    run = tmp_path / "run"
    assert main(["train", str(split_data), "--out", str(run), "--recipe", "tiny", "--image-size", "32"]) == 0
    assert "tiny" in capsys.readouterr().out  # the first line names the recipe
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"]["name"] == "tiny" and config["model"] == "effnet-lite0"
    metrics = json.loads((run / "metrics.json").read_text())
    low, high = metrics["test_ci95"]
    assert low <= metrics["test_accuracy"] <= high and metrics["n_test"] == 12
    assert len(api.predict(run, [split_data / "test" / "cow"])) == 6
    assert main(["recipes"]) == 0 and "tiny" in capsys.readouterr().out


def test_tiny_is_a_named_condition_for_studies():
    from pasture.study.conditions import parse_condition

    condition = parse_condition("tiny")
    assert condition.recipe == "tiny" and condition.overrides == ()
