"""int8 export (export --format onnx-int8): calibrated on the run's training photos, checked against the
fp32 model on its test photos, refused below 99% label agreement, carrying what it is in its metadata,
and predicted from like any exported file."""

from __future__ import annotations

import json
import shutil

import pytest

from pasture import api
from pasture.cli import main

pytest.importorskip("onnxruntime", reason='the export extra is not installed (pip install -e ".[export]")')
# Each test trains and exports a run (5-20 s): the thorough layer (pytest -m "not slow" skips it).
pytestmark = pytest.mark.slow


@pytest.fixture
def probe_run(split_data, tmp_path):
    run = tmp_path / "run"
    api.train(split_data, run, model="effnet-lite0", pretrained="probe", image_size=32, quiet=True)
    return run


def test_an_int8_file_agrees_with_the_run_says_so_and_predicts(probe_run, split_data, tmp_path, capsys):
    import onnxruntime

    assert main(["export", str(probe_run), "--format", "onnx-int8"]) == 0
    said = capsys.readouterr().out
    int8 = probe_run / "model.int8.onnx"
    assert int8.is_file() and "int8" in said and "95% CI" in said and "in-source" in said
    meta = onnxruntime.InferenceSession(str(int8)).get_modelmeta().custom_metadata_map
    agreement = json.loads(meta["agreement_with_fp32"])
    assert meta["precision"] == "int8" and agreement["labels_same"] >= 0.99 and agreement["n_test"] == 12
    assert json.loads(meta["classes"]) == ["cow", "horse"] and meta["image_size"] == "32"
    low, high = json.loads(meta["int8_test_ci95"])
    assert low <= float(meta["int8_test_accuracy"]) <= high
    # quantized convolutions, and the padding arithmetic left exact (issue 29: it was rounded away)
    import onnx

    from pasture.export.int8 import size_arithmetic

    quantized = onnx.load(str(int8))
    assert sum(node.op_type == "DequantizeLinear" for node in quantized.graph.node) > 20
    sizes = {node.name: node.op_type for node in quantized.graph.node if node.name in set(size_arithmetic(quantized))}
    # nothing computed on the way to a padding is rounded (a shared constant such as 0 may be dequantized)
    assert sizes and "QuantizeLinear" not in sizes.values()
    # quantized: its weights are int8, and the file is smaller than the fp32 export
    fp32 = api.export(probe_run)
    assert int8.stat().st_size < 0.5 * fp32["bytes"]
    rows = api.predict(int8, [split_data / "test" / "cow"])
    fp32_rows = api.predict(probe_run / "model.onnx", [split_data / "test" / "cow"])
    assert [row["label"] for row in rows] == [row["label"] for row in fp32_rows]


def test_int8_refuses_a_file_that_disagrees_and_writes_nothing(probe_run, monkeypatch, capsys):
    import pasture.export.int8 as int8

    monkeypatch.setattr(int8, "MIN_AGREEMENT", 1.01)  # no file can reach it: the refusal path
    assert main(["export", str(probe_run), "--format", "onnx-int8"]) == 2
    err = capsys.readouterr().err
    assert "fp32 model's label" in err and len(err.strip().splitlines()) == 1
    assert not (probe_run / "model.int8.onnx").exists()
    assert not [path for path in probe_run.iterdir() if path.name.endswith(".tmp")]


def test_int8_needs_the_runs_training_photos(probe_run, split_data, capsys):
    shutil.rmtree(split_data)
    assert main(["export", str(probe_run), "--format", "onnx-int8"]) == 2
    err = capsys.readouterr().err
    assert "calibrates on the run's training photos" in err and "--format onnx" in err
    assert not (probe_run / "model.int8.onnx").exists()


def test_an_unknown_format_is_one_line(probe_run, capsys):
    with pytest.raises(api.UserError, match="choose one of onnx, onnx-int8"):
        api.export(probe_run, format="tflite-fp64")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(probe_run), "--format", "bogus"])
    assert exit_info.value.code == 2
