"""OpenVINO export (export --format openvino): IR written into a folder, checked against the run with
the OpenVINO runtime, carrying pasture's metadata, and predicted from without torch."""

from __future__ import annotations

import json

import pytest
from conftest import assert_predicts_as_the_run, predict_without_torch

from pasture import api
from pasture.cli import main

pytest.importorskip("openvino", reason='the openvino extra is not installed (pip install -e ".[openvino]")')
# Each test trains and exports a run (5-20 s): the thorough layer (pytest -m "not slow" skips it).
pytestmark = pytest.mark.slow


@pytest.fixture
def run(split_data, tmp_path):
    folder = tmp_path / "run"
    api.train(split_data, folder, recipe="scratch", epochs=1, image_size=16, ensemble=2, tta=True, quiet=True)
    return folder


def test_openvino_matches_the_run_carries_its_metadata_and_predicts(run, split_data, capsys):
    assert main(["export", str(run), "--format", "openvino"]) == 0
    assert "max |p_torch" in capsys.readouterr().out
    xml = run / "openvino" / "model.xml"
    assert xml.is_file() and (run / "openvino" / "model.bin").is_file()
    assert_predicts_as_the_run(xml, run, split_data / "test")
    from pasture.export.openvino_runner import OpenVinoClassifier

    model = OpenVinoClassifier(xml, threads=1)
    assert model.classes == ["cow", "horse"] and model.image_size == 16 and model.metadata["tta"] == "true"
    assert json.loads(model.metadata["test_ci95"])[0] <= float(model.metadata["test_accuracy"])


def test_predict_from_an_openvino_model_imports_no_torch(run, split_data):
    api.export(run, format="openvino")
    assert len(predict_without_torch(run / "openvino" / "model.xml", split_data / "test" / "cow")) == 6


def test_openvino_errors_are_one_line_and_leave_nothing(run, tmp_path, capsys):
    assert main(["export", str(run), "--format", "openvino", "--out", str(tmp_path / "model.xml")]) == 2
    assert "give a folder" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "missing.xml"), str(tmp_path)]) == 2
    assert "no such model" in capsys.readouterr().err
    assert not list(run.glob(".openvino-*"))
