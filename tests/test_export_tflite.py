"""TFLite export (export --format tflite): litert-torch's conversion checked with the LiteRT interpreter,
pasture's metadata in the file's metadata table, predicted from without torch. The tflite extra lives in
its own virtual environment (it pins typing-extensions below what coremltools needs): `.ci/run` makes
one and runs this file there; in the main environment it is skipped with that reason."""

from __future__ import annotations

import json

import pytest
from conftest import assert_predicts_as_the_run, predict_without_torch

from pasture import api
from pasture.cli import main

pytest.importorskip(
    "litert_torch", reason="the tflite extra is not installed here (it has its own environment: .ci/run, README)"
)
pytestmark = pytest.mark.slow  # each test trains and converts a run


@pytest.fixture
def run(split_data, tmp_path):
    folder = tmp_path / "run"
    # one member: litert-torch 0.10 mixes up the weights of an ensemble's look-alike members at random (the
    # parity gate refuses those exports; see export/tflite_export.py)
    api.train(split_data, folder, recipe="scratch", epochs=1, image_size=16, ensemble=1, tta=True, quiet=True)
    return folder


def test_tflite_matches_the_run_carries_its_metadata_and_predicts(run, split_data, capsys):
    assert main(["export", str(run), "--format", "tflite"]) == 0
    assert "max |p_torch" in capsys.readouterr().out
    model_file = run / "model.tflite"
    assert_predicts_as_the_run(model_file, run, split_data / "test")
    from pasture.export.tflite_runner import TfliteClassifier

    model = TfliteClassifier(model_file, threads=1)
    assert model.classes == ["cow", "horse"] and model.image_size == 16 and model.metadata["format"] == "tflite"
    assert json.loads(model.metadata["test_ci95"])[0] <= float(model.metadata["test_accuracy"])


def test_predict_from_a_tflite_model_imports_no_torch(run, split_data):
    api.export(run, format="tflite")
    assert len(predict_without_torch(run / "model.tflite", split_data / "test" / "cow")) == 6


def test_tflite_errors_are_one_line_and_leave_nothing(run, tmp_path, capsys):
    assert main(["export", str(run), "--format", "tflite", "--out", str(tmp_path / "model.onnx")]) == 2
    assert "name the file *.tflite" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "missing.tflite"), str(tmp_path)]) == 2
    assert "no such model" in capsys.readouterr().err
    assert not list(run.glob(".tflite-*"))


def test_an_ensemble_is_refused_before_anything_is_written(split_data, tmp_path, capsys):
    folder = tmp_path / "ensemble"
    api.train(split_data, folder, recipe="scratch", epochs=1, image_size=16, ensemble=2, quiet=True)
    assert main(["export", str(folder), "--format", "tflite"]) == 2
    assert "an ensemble of 2 models" in capsys.readouterr().err
    assert not (folder / "model.tflite").exists() and not list(folder.glob(".tflite-*"))
