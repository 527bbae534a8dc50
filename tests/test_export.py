"""ONNX export: every model type, parity with the run, metadata, and prediction with ONNX Runtime alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import make_image

from pasture import api
from pasture.cli import main
from pasture.core.errors import UserError

onnxruntime = pytest.importorskip(
    "onnxruntime", reason='the export extra is not installed (pip install -e ".[export]")'
)

MODELS = {
    "paper-cnn": dict(recipe="scratch", epochs=2, image_size=16),
    "resnet-small+ema+tta": dict(recipe="small-data", epochs=2, image_size=32),
    "ensemble+tta": dict(recipe="scratch", epochs=1, image_size=16, ensemble=2, tta=True),
    "effnet-lite0 probe": dict(model="effnet-lite0", pretrained="probe", image_size=32),
    "effnet-lite2 probe": dict(model="effnet-lite2", pretrained="probe", image_size=32),
    "effnet-lite0+lite2 probe (the default's backbone)": dict(recipe="probe", image_size=48),
    "effnet-lite0 finetune": dict(model="effnet-lite0", pretrained="finetune", image_size=32, epochs=1),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_export_matches_the_run_and_carries_its_metadata(split_data, tmp_path, name):
    from pasture.export.onnx_runner import OnnxClassifier

    run = tmp_path / "run"
    metrics = api.train(split_data, run, quiet=True, **MODELS[name])
    info = api.export(run)
    assert info["file"] == str(run / "model.onnx") and info["checked_on"] == "the run's 12 test images"
    assert info["parity_max_abs"] < 1e-4
    model = OnnxClassifier(run / "model.onnx")
    assert model.classes == ["cow", "horse"] and model.image_size == MODELS[name]["image_size"]
    assert float(model.metadata["test_accuracy"]) == metrics["test_accuracy"]
    assert json.loads(model.metadata["test_ci95"]) == metrics["test_ci95"] and int(model.metadata["n_test"]) == 12
    folder = split_data / "test" / "horse"
    by_torch = api.predict(run, [folder], device="cpu")
    by_onnx = api.predict(run / "model.onnx", [folder])
    assert [row["label"] for row in by_onnx] == [row["label"] for row in by_torch]
    for a, b in zip(by_onnx, by_torch):
        assert a["file"] == b["file"] and a["probability"] == pytest.approx(b["probability"], abs=1e-4)


def test_predict_with_an_onnx_file_needs_no_torch_and_prints_what_predict_run_prints(split_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(split_data),
                "--out",
                str(run),
                "--recipe",
                "scratch",
                "--epochs",
                "2",
                "--image-size",
                "16",
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["export", str(run), "--out", str(tmp_path / "cowhorse.onnx")]) == 0
    assert "max |p_torch - p_onnxruntime|" in capsys.readouterr().out
    field = tmp_path / "field"
    field.mkdir()
    make_image("cow", 500).save(field / "a.png")
    make_image("horse", 501).save(field / "b.jpg")
    code = (
        "import json, sys\nfrom pasture.cli import main\n"
        f"code = main(['predict', {str(tmp_path / 'cowhorse.onnx')!r}, {str(field)!r}, '--json'])\n"
        f"code += main(['predict', {str(tmp_path / 'cowhorse.onnx')!r}, {str(field)!r}, '--quiet', "
        f"'--csv', {str(tmp_path / 'out.csv')!r}])\n"
        "assert code == 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    by_onnx = json.loads(done.stdout.splitlines()[0])
    assert "2 images: 2 predicted" in done.stdout and (tmp_path / "out.csv").is_file()
    assert main(["predict", str(run), str(field), "--json", "--device", "cpu"]) == 0
    by_run = json.loads(capsys.readouterr().out)
    assert [(row["file"], row["label"]) for row in by_onnx] == [(row["file"], row["label"]) for row in by_run]
    for a, b in zip(by_onnx, by_run):
        for name in ("cow", "horse"):
            assert a["probabilities"][name] == pytest.approx(b["probabilities"][name], abs=1e-4)


def test_export_when_the_data_has_moved_checks_on_generated_images(split_data, tmp_path):
    run = tmp_path / "run"
    api.train(split_data, run, recipe="scratch", epochs=1, image_size=16, quiet=True)
    shutil.rmtree(split_data)
    info = api.export(run, tmp_path / "m.onnx")
    assert "generated images" in info["checked_on"] and info["n_checked"] == 32 and info["parity_max_abs"] < 1e-4


def test_export_and_onnx_predict_errors_are_one_line(split_data, tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert "not a pasture run folder" in capsys.readouterr().err
    run = tmp_path / "run"
    api.train(split_data, run, recipe="scratch", epochs=1, image_size=16, quiet=True)
    assert main(["export", str(run), "--out", str(tmp_path / "model.txt")]) == 2
    assert "*.onnx" in capsys.readouterr().err
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    assert main(["predict", str(bogus), str(split_data / "test" / "cow")]) == 2
    err = capsys.readouterr().err
    assert "bogus.onnx" in err and len(err.strip().splitlines()) == 1


def test_batch_predict_streams_a_csv_with_skipped_files_and_the_same_numbers(split_data, tmp_path, capsys):
    import csv

    from pasture.classify import predictions

    run = tmp_path / "run"
    api.train(split_data, run, recipe="scratch", epochs=1, image_size=16, quiet=True)
    field = tmp_path / "field"
    field.mkdir()
    for index in range(150):  # more than two batches
        make_image("cow" if index % 2 else "horse", 700 + index).save(field / f"img_{index:03d}.png")
    (field / "broken.jpg").write_bytes(b"not a jpeg")
    (field / "a,comma.png").write_bytes((field / "img_000.png").read_bytes())
    api.export(run, tmp_path / "m.onnx")
    for model in (run, tmp_path / "m.onnx"):
        out = tmp_path / f"{model.name}.csv"
        assert main(["predict", str(model), str(field), "--csv", str(out), "--quiet", "--device", "cpu"]) == 0
        assert "152 images: 151 predicted, 1 skipped" in capsys.readouterr().out
        rows = list(csv.DictReader(out.open()))
        assert len(rows) == 152 and set(rows[0]) == {"file", "label", "probability", "p_cow", "p_horse", "skipped"}
        [broken] = [row for row in rows if row["file"].endswith("broken.jpg")]
        assert broken["label"] == "" and "not an image" in broken["skipped"]
        assert any(row["file"].endswith("a,comma.png") for row in rows)  # quoted, not split
    by_run = {row["file"]: row for row in csv.DictReader((tmp_path / "run.csv").open())}
    by_onnx = {row["file"]: row for row in csv.DictReader((tmp_path / "m.onnx.csv").open())}
    direct = {
        row["file"]: row for row in api.predict(run, [field / f"img_{i:03d}.png" for i in range(150)], device="cpu")
    }
    for name, row in direct.items():
        assert by_run[name]["label"] == by_onnx[name]["label"] == row["label"]
        assert float(by_run[name]["p_cow"]) == pytest.approx(row["probabilities"]["cow"], abs=1e-6)
    assert predictions.batch_size_for(16) < 150  # the stream really went through several batches
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_check_takes_photos_spread_over_the_test_set_and_refuses_an_unfaithful_export(
    split_data, tmp_path, monkeypatch
):
    """An export is checked on CHECK_PHOTOS of the run's test photos, evenly spaced (every class), its
    probabilities and familiarity distances from one backbone pass each side; a graph that differs from
    the run is refused and removed, whichever output differs."""
    import numpy as np

    from pasture.classify.trained import finished_run_config, run_split
    from pasture.export import onnx_export
    from pasture.export.onnx_runner import OnnxClassifier

    run = tmp_path / "run"
    api.train(split_data, run, recipe="probe", image_size=48, quiet=True)
    config = finished_run_config(run)
    images, checked_on = onnx_export.check_images(run, config, count=4)
    test = run_split(config).test
    assert checked_on == "4 of the run's 12 test images"
    assert torch.equal(images, test.images[[0, 4, 7, 11]]) and set(test.labels[[0, 4, 7, 11]].tolist()) == {0, 1}
    info = api.export(run)
    assert info["parity_max_abs"] < 1e-4 and info["familiarity_parity_max_abs"] < 1e-4
    real_outputs = OnnxClassifier.outputs
    for wrong, said in ((0, "ONNX Runtime differs from the run"), (2, "its familiarity distances differ")):

        def shifted(self, images, batch_size=64, wrong=wrong):
            outputs = real_outputs(self, images, batch_size)
            outputs[wrong] = outputs[wrong] + np.float32(0.01)
            return outputs

        monkeypatch.setattr(OnnxClassifier, "outputs", shifted)
        with pytest.raises(UserError, match=said):
            api.export(run, out=tmp_path / "wrong.onnx")
        assert not (tmp_path / "wrong.onnx").exists()
