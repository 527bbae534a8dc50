"""Devices: choosing one, the error when it is not there, precision the hardware can do, every tensor
of a training step on the model's device, and checkpoints from another device loading on the CPU.

CI has no GPU. The "meta" device stands in for one: an op that mixes a CPU tensor into a meta tensor
fails exactly as it would with a CUDA tensor, so code that follows its input's device passes and code
that makes tensors on the CPU behind its back does not.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib

import pytest
import torch
import torch.nn.functional as F

import pasture.core.device as device_module
from pasture import api
from pasture.classify.augment import augment_batch, get_augment, mix_batch
from pasture.classify.recipes import get_recipe, with_overrides
from pasture.classify.steps import class_weights, mix_in_synthetic
from pasture.cli import main
from pasture.core.device import effective_precision, resolve_device
from pasture.core.errors import UserError
from pasture.data import ImageSet
from pasture.gan.diffaugment import diff_augment
from pasture.models import create_model

META = torch.device("meta")
TRAIN = ["--recipe", "scratch", "--epochs", "2", "--batch-size", "4", "--image-size", "16", "--quiet"]


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch, no_accelerator):
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(device_module, "_mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(UserError, match="--device cuda:2: there are 2"):
        resolve_device("cuda:2")


@pytest.mark.parametrize(
    "name,fragment", [("cuda", "no CUDA GPU"), ("cuda:0", "no CUDA GPU"), ("mps", "MPS"), ("tpu", "choose one of")]
)
def test_a_device_that_is_not_there_is_a_user_error(no_accelerator, name, fragment):
    with pytest.raises(UserError, match=fragment) as error:
        resolve_device(name)
    assert f"--device {name}" in str(error.value)


def test_cli_device_cuda_without_cuda_is_one_line_and_writes_nothing(split_data, tmp_path, capsys, no_accelerator):
    out = tmp_path / "run"
    assert main(["train", str(split_data), "--out", str(out), *TRAIN, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_bf16_falls_back_to_fp32_where_the_cpu_has_no_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    messages = []
    monkeypatch.setattr(device_module, "cpu_flags", lambda: {"avx", "avx2", "fma"})
    assert effective_precision("bf16", cpu, messages.append) == "fp32"
    assert len(messages) == 1 and "no native bf16" in messages[0]
    monkeypatch.setattr(device_module, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert effective_precision("bf16", cpu, messages.append) == "bf16" and len(messages) == 1
    assert effective_precision("fp32", cpu) == "fp32"


def test_a_cpu_held_to_avx2_kernels_has_no_native_bf16(monkeypatch):
    # ATEN_CPU_CAPABILITY=avx2 and ONEDNN_MAX_CPU_ISA=AVX2 stand in for an AVX2 laptop on an AVX-512
    # CPU: the flags still say avx512_bf16, but the kernels that run emulate bf16.
    monkeypatch.setattr(device_module, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not device_module.cpu_has_native_bf16()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert device_module.cpu_has_native_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not device_module.cpu_has_native_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert device_module.cpu_has_native_bf16()
    monkeypatch.setattr(device_module, "cpu_flags", lambda: {"asimd", "bf16"})  # Arm with the BF16 extension
    assert device_module.cpu_has_native_bf16()


def test_bf16_on_a_gpu_without_it_uses_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    messages = []
    assert effective_precision("bf16", torch.device("cuda", 0), messages.append) == "fp16"
    assert "Tesla T4" in messages[0] and "fp16" in messages[0]


@pytest.mark.slow
def test_a_run_records_its_device_and_the_precision_it_used(split_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(device_module, "cpu_flags", lambda: {"avx2"})
    # on the CPU (a machine with a GPU would pick it, which has bf16)
    assert (
        main(
            [
                "train",
                str(split_data),
                "--out",
                str(tmp_path / "bf16"),
                *TRAIN,
                "--precision",
                "bf16",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "no native bf16" in capsys.readouterr().err
    assert main(["train", str(split_data), "--out", str(tmp_path / "fp32"), *TRAIN, "--device", "cpu"]) == 0
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["device"]["device"] == "cpu" and config["device"]["precision"] == "fp32"
    assert config["recipe"]["precision"] == "bf16"  # what was asked stays in the run's identity
    assert config["device"]["torch"] == torch.__version__
    a = torch.load(tmp_path / "bf16" / "checkpoint.pt", weights_only=True)["members"][0]
    b = torch.load(tmp_path / "fp32" / "checkpoint.pt", weights_only=True)["members"][0]
    assert all(torch.equal(a[key], b[key]) for key in a)  # the fallback really trained in fp32


@pytest.mark.parametrize("augment", ["paper", "strong"])
def test_a_training_step_creates_every_tensor_on_the_models_device(augment):
    generator = torch.Generator().manual_seed(0)
    images = torch.zeros(8, 3, 32, 32, dtype=torch.uint8, device=META)
    labels = torch.zeros(8, dtype=torch.long, device=META)
    synthetic = ImageSet(
        torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.ones(4, dtype=torch.long), [], ["a", "b"], split="synthetic"
    )  # synthetic images stay on the CPU
    mixed, mixed_labels, _ = mix_in_synthetic(images, labels, synthetic, 0.9, generator)
    augmented = augment_batch(mixed.float() / 255, get_augment(augment), generator)
    batch, targets = mix_batch(augmented, mixed_labels, 2, 0.2, 1.0, generator)
    recipe = with_overrides(get_recipe("small-data"), image_size=32)
    model = create_model(recipe.model, 2, 32).to(META)
    weights = class_weights(torch.tensor([0, 0, 1]), 2, recipe).to(META)
    loss = F.cross_entropy(model(batch), targets, weight=weights, label_smoothing=0.1)
    loss.backward()
    for tensor in (mixed, mixed_labels, augmented, batch, targets, loss):
        assert tensor.device == META
    assert all(parameter.grad.device == META for parameter in model.parameters())
    for policy in ("color", "translation", "cutout"):
        assert diff_augment(torch.zeros(4, 3, 16, 16, device=META), policy, 0.5, generator).device == META


def _as_if_saved_on_mps(path) -> None:
    """Rewrite a CPU checkpoint so that its storages say "mps", as one saved on an Apple GPU would
    (same-length bytes in data.pkl, its CRC fixed in both zip headers)."""
    raw = bytearray(path.read_bytes())
    raw = raw.replace(b"X\x03\x00\x00\x00cpu", b"X\x03\x00\x00\x00mps")
    for info in zipfile.ZipFile(io.BytesIO(bytes(raw))).infolist():
        if not info.filename.endswith("data.pkl"):
            continue
        name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
        start = info.header_offset + 30 + name_len + extra_len
        crc = struct.pack("<I", zlib.crc32(bytes(raw[start : start + info.compress_size])))
        raw[info.header_offset + 14 : info.header_offset + 18] = crc
        entry = raw.find(b"PK\x01\x02")
        while entry != -1:
            length = struct.unpack("<H", raw[entry + 28 : entry + 30])[0]
            if bytes(raw[entry + 46 : entry + 46 + length]).decode() == info.filename:
                raw[entry + 16 : entry + 20] = crc
            entry = raw.find(b"PK\x01\x02", entry + 4)
    path.write_bytes(bytes(raw))


def test_a_run_trained_on_another_device_evaluates_on_the_cpu(split_data, tmp_path):
    run = tmp_path / "run"
    assert main(["train", str(split_data), "--out", str(run), *TRAIN, "--device", "cpu"]) == 0
    before = api.evaluate(run, split_data, device="cpu")
    _as_if_saved_on_mps(run / "checkpoint.pt")
    if not device_module._mps_available():
        with pytest.raises(RuntimeError, match="mps"):  # what a plain torch.load does with it
            torch.load(run / "checkpoint.pt", weights_only=True)
    after = api.evaluate(run, split_data, device="cpu")
    assert after["confusion"] == before["confusion"] and after["accuracy"] == before["accuracy"]


def test_a_cuda_device_is_made_reproducible(monkeypatch):
    # Found on an H100: without deterministic cuDNN, GAN samples (ConvTranspose2d) and resnet-small
    # backward passes differed from process to process. Setting the flags needs no GPU.
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    device_module.reproducible_on(torch.device("cpu"))
    assert torch.backends.cudnn.deterministic is False  # the CPU needs nothing, and nothing is touched
    device_module.reproducible_on(torch.device("cuda", 0))
    assert torch.backends.cudnn.deterministic is True and torch.backends.cudnn.benchmark is False
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_distillation_views_mix_on_any_device():
    # Found on an H100: the bank's MixUp indexed CPU targets with indices moved to the GPU. The meta
    # device stands in for it here (same rule: an index must be on the CPU or the indexed tensor's device).
    from pasture.classify.distill import _mix

    images = torch.rand(6, 3, 8, 8)
    targets = F.one_hot(torch.tensor([0, 1, 0, 1, 0, 1]), 2).float()
    on_cpu, cpu_targets = _mix(images, targets, 1.0, torch.Generator().manual_seed(0))
    on_meta, meta_targets = _mix(images.to("meta"), targets, 1.0, torch.Generator().manual_seed(0))
    assert on_meta.device.type == "meta" and on_meta.shape == on_cpu.shape
    assert torch.equal(meta_targets, cpu_targets)  # the targets stay on the CPU, drawn the same
