"""Behaviour fixed after a code review (issue: the house in order): each test failed before its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import make_image, write_class_folders
from PIL import Image

from pasture import api
from pasture.cli import main
from pasture.core.errors import UserError
from pasture.data import load_dataset

TRAIN = ["--recipe", "scratch", "--epochs", "1", "--batch-size", "4", "--image-size", "16", "--quiet"]
QUICK = "recipe=default,epochs=1,image_size=16,batch_size=8"


@pytest.mark.slow
def test_fixture_images_are_the_same_in_every_process():
    code = (
        "import hashlib, sys; sys.path.insert(0, 'tests'); from conftest import make_image; "
        "print(hashlib.sha256(make_image('cow', 3, 24).tobytes()).hexdigest())"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    import hashlib

    assert runs == {hashlib.sha256(make_image("cow", 3, 24).tobytes()).hexdigest()}


def test_an_experiment_refuses_synthetic_images_for_an_ensemble_of_probes(split_data, tmp_path, capsys):
    out = tmp_path / "study"
    assert (
        main(
            [
                "experiment",
                str(split_data),
                "--out",
                str(out),
                "--quiet",
                "--conditions",
                f"a:{QUICK}",
                "x:recipe=probe,image_size=48,ensemble=3,gan=default",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--conditions x" in err and "ensemble" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # refused before any run or GAN was trained
    with pytest.raises(UserError, match="ensemble"):
        api.train(split_data, tmp_path / "run", recipe="probe", image_size=48, ensemble=3, synthetic=tmp_path)


@pytest.mark.slow
def test_a_probe_fits_synthetic_images_as_extra_rows_with_their_share(split_data, tmp_path):
    # Issue 30: a probe once dropped synthetic images (refused them). The training photos with their
    # labels swapped, given as synthetic rows, must pull the probe toward "cow" on horse photos, more so
    # with a larger share.
    from pasture.data import ImageSet
    from pasture.gan.synth import write_synthetic

    dataset = load_dataset(split_data, 48)
    mislabelled = ImageSet(dataset.train.images, 1 - dataset.train.labels, [], dataset.classes, split="synthetic")
    write_synthetic(mislabelled, {"image_size": 48, "classes": dataset.classes}, tmp_path / "synth")
    horse_test = dataset.test.images[dataset.test.labels == 1]
    cow_share = {}
    for name, ratio in (("plain", None), ("small", 0.1), ("large", 0.5)):
        extra = {} if ratio is None else {"synthetic": tmp_path / "synth", "synthetic_ratio": ratio}
        api.train(split_data, tmp_path / name, recipe="probe", image_size=48, head_c=1.0, quiet=True, **extra)
        cow_share[name] = float(api.load(tmp_path / name).probabilities(horse_test)[:, 0].mean())
    assert cow_share["plain"] < cow_share["small"] < cow_share["large"]
    config = json.loads((tmp_path / "large" / "config.json").read_text())
    assert config["identity"]["synthetic"]["ratio"] == 0.5


def test_the_reports_chance_line_follows_the_number_of_classes(tmp_path, monkeypatch):
    import pasture.study.report as report

    drawn = {}
    monkeypatch.setattr(report, "save_figure", lambda figure, path: drawn.setdefault("figure", figure))
    rows = [{"condition": "a", "test": {"mean": 0.5, "ci95": [0.4, 0.6]}, "runs": 2, "accuracies": [0.4, 0.6]}]
    report._figure_accuracy(rows, 3, tmp_path / "accuracy.png")
    [line] = [line for line in drawn["figure"].axes[0].get_lines() if line.get_label().startswith("chance")]
    assert line.get_label() == "chance (3 classes)" and list(line.get_ydata()) == pytest.approx([1 / 3, 1 / 3])


def test_the_cli_records_the_arguments_it_was_given(split_data, tmp_path):
    argv = ["train", str(split_data), "--out", str(tmp_path / "run"), *TRAIN]
    assert main(argv) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["command"] == ["pasture", *argv]


def test_experiment_has_no_resume_flag_that_does_nothing(split_data, tmp_path):
    with pytest.raises(SystemExit) as stop:
        main(["experiment", str(split_data), "--out", str(tmp_path / "s"), "--resume"])
    assert stop.value.code == 2


def _non_utf8_name(folder, stem: bytes) -> bytes:
    """A PNG whose file name is not valid UTF-8 (0xff), as on old disks and USB sticks."""
    path = os.fsencode(folder) + b"/" + stem + b"\xff.png"
    with open(path, "wb") as handle:
        make_image("cow", 77).save(handle, format="PNG")
    return path


@pytest.mark.slow
def test_file_names_that_are_not_utf8_load_and_print(split_data, tmp_path, capsys):
    _non_utf8_name(split_data / "train" / "cow", b"odd_")
    with open(os.fsencode(split_data / "train" / "cow") + b"/broken_\xfe.png", "wb") as handle:
        handle.write(b"not an image")  # skipped, with its name in the warning and in config.json
    run = tmp_path / "run"
    assert main(["train", str(split_data), "--out", str(run), *TRAIN]) == 0
    captured = capsys.readouterr()
    assert "broken_\\xfe.png" in captured.err and "Traceback" not in captured.err
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["data_summary"]["train_counts"]["cow"] == 9
    assert config["data_summary"]["skipped"][0]["file"].endswith("broken_\\xfe.png")
    field = tmp_path / "field"
    field.mkdir()
    _non_utf8_name(field, b"new_")
    assert main(["predict", str(run), str(field)]) == 0
    assert "new_\\xff.png" in capsys.readouterr().out
    assert main(["predict", str(run), str(field), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    study = tmp_path / "study"
    assert (
        main(
            [
                "experiment",
                str(split_data),
                "--out",
                str(study),
                "--quiet",
                "--seeds",
                "1",
                "--conditions",
                f"a:{QUICK}",
            ]
        )
        == 0
    )
    assert "broken_\\xfe.png" in (study / "report.md").read_text(encoding="utf-8")


def test_a_class_folder_name_that_is_not_utf8_is_a_one_line_error(tmp_path, capsys):
    data = write_class_folders(tmp_path / "data", {"cow": 3, "horse": 3})
    os.rename(data / "horse", os.fsencode(data) + b"/horse\xff")
    assert main(["train", str(data), "--out", str(tmp_path / "run"), *TRAIN]) == 2
    err = capsys.readouterr().err
    assert "horse\\xff" in err and "rename" in err and len(err.strip().splitlines()) == 1


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # pasture says it itself
def test_images_above_the_decompression_bomb_warning_are_skipped_with_a_warning(split_data, monkeypatch):
    # pasture's own limit (89.5 Mpx, the size of Pillow's warning) is checked from the header; a small
    # limit stands in for a 12000 x 12000 photo.
    import pasture.core.imagefile as imagefile

    monkeypatch.setattr(imagefile, "MAX_PIXELS", 1000)
    Image.new("RGB", (40, 40), "white").save(split_data / "train" / "cow" / "huge.png")  # 1600 px: warning zone
    messages = []
    with_bomb = load_dataset(split_data, 16, warn=messages.append)
    assert with_bomb.train.counts()["cow"] == 8  # only the 24 x 24 fixtures (576 px) are decoded
    assert [message for message in messages if "huge.png" in message and "above pasture's limit of 0.0 Mpx" in message]
    with pytest.raises(UserError, match="huge.png"):
        load_dataset(split_data, 16, strict=True)


def test_pasture_recipes_lists_every_preset_with_its_description(capsys):
    from pasture.classify.recipes import RECIPES
    from pasture.gan.presets import GAN_PRESETS

    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name, recipe in {**RECIPES, **GAN_PRESETS}.items():
        assert name in out and recipe.description in out
    for section in ("recipes (", "models:", "augmentation:", "GAN presets (", "experiment conditions ("):
        assert section in out
