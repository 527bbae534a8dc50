"""Core ML export (export --format coreml): a package with an RGB image input of the run's size, a
probabilities output and pasture's metadata, checked as a specification here (Core ML itself runs only
on Apple systems, which the result says)."""

from __future__ import annotations

import json
import platform

import pytest

from pasture import api
from pasture.cli import main

pytest.importorskip("coremltools", reason='the coreml extra is not installed (pip install -e ".[coreml]")')
# Each test trains and exports a run (5-20 s): the thorough layer (pytest -m "not slow" skips it).
pytestmark = pytest.mark.slow


@pytest.fixture
def run(split_data, tmp_path):
    folder = tmp_path / "run"
    api.train(split_data, folder, recipe="scratch", epochs=1, image_size=16, quiet=True)
    return folder


def test_a_coreml_package_has_the_contract_an_app_needs(run, capsys):
    from pasture.export.coreml_export import coremltools_module

    assert main(["export", str(run), "--format", "coreml"]) == 0
    said = capsys.readouterr()
    package = run / "model.mlpackage"
    assert package.is_dir() and "Failed to load" not in said.err
    ct = coremltools_module()
    spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    image = spec.description.input[0].type.imageType
    assert (image.width, image.height) == (16, 16)
    assert [output.name for output in spec.description.output] == ["probabilities"]
    metadata = dict(spec.description.metadata.userDefined)
    assert json.loads(metadata["classes"]) == ["cow", "horse"] and metadata["format"] == "coreml"
    if platform.system() != "Darwin":
        assert "Apple systems" in said.out  # no parity claimed where Core ML cannot run
    again = api.export(run, format="coreml")  # a second export replaces the package
    assert again["file"] == str(package) and not list(run.glob(".coreml-*"))


def test_a_coreml_export_names_its_package(run, tmp_path, capsys):
    assert main(["export", str(run), "--format", "coreml", "--out", str(tmp_path / "model.onnx")]) == 2
    assert "*.mlpackage" in capsys.readouterr().err
    assert main(["export", str(run), "--format", "coreml", "--out", str(tmp_path / "nowhere" / "m.mlpackage")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "taken.mlpackage").write_text("a file, not a package")
    assert main(["export", str(run), "--format", "coreml", "--out", str(tmp_path / "taken.mlpackage")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert (tmp_path / "taken.mlpackage").read_text() == "a file, not a package"
