"""Where the arithmetic runs: choosing the device (CUDA, then Apple MPS, then the CPU) and the precision
it can actually do, and saying what was chosen.

Random draws stay on the CPU everywhere (seeded torch.Generator objects): the draws are tiny per-image
parameters, and a seed then gives the same augmentation, data order and latents on every device. Only
dropout masks use the device's own generator (seeded by torch.manual_seed), saved in checkpoints.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from pathlib import Path

import torch

from pasture.core.errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def reproducible_on(device: torch.device) -> torch.device:
    """Make CUDA arithmetic repeatable in this process, so that the same seed and config give the same
    numbers on the same GPU, as they do on the CPU. By default cuDNN may pick a different convolution
    algorithm per process, some of them with atomic (order-dependent) sums: on an H100, runs with
    ConvTranspose2d (GAN samples) or resnet-small backward passes came out different each time
    (benchmarks/gpu_check.sh). Deterministic cuDNN algorithms, and cuBLAS's fixed workspace, stop that.
    Returns `device`."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return device


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """--device auto|cpu|cuda|cuda:N|mps -> torch.device; `auto` picks CUDA, then MPS, then the CPU.
    A device that is not there is a UserError naming the option. A CUDA device is made reproducible
    (reproducible_on)."""
    return reproducible_on(_resolve_device(name))


def _resolve_device(name: str | torch.device | None) -> torch.device:
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise UserError(
                "--device mps: Apple's MPS backend is not available to torch here (it needs an Apple "
                "silicon Mac and torch built with MPS); use --device cpu or auto"
            )
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(
                f"--device {name}: torch sees no CUDA GPU here (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda or 'none'}); use --device cpu or auto"
            )
        index = torch.cuda.current_device() if name == "cuda" else _cuda_index(name)
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: there are {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
        return torch.device("cuda", index)
    raise UserError(f"--device {name}: choose one of {', '.join(DEVICE_CHOICES)}")


def _cuda_index(name: str) -> int:
    try:
        return int(name.split(":", 1)[1])
    except ValueError:
        raise UserError(f"--device {name}: write cuda:N with N a GPU number, e.g. cuda:0") from None


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (read once per process: run records and timing keys ask for it often)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX on x86, the BF16 extension on
    Arm). Without it, PyTorch emulates bf16 and is 10-100x slower than fp32 (a 512^3 matmul took 0.19 s
    against 0.02 s on an AVX2-only CPU)."""
    flags = cpu_flags()
    if flags & {"avx512_bf16", "amx_bf16"}:
        # Held below AVX-512 (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2: how an AVX2 laptop is
        # stood in for), the kernels that run emulate bf16 as an AVX2-only CPU does.
        if torch.backends.cpu.get_cpu_capability() != "AVX512":
            return False
        isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
        return isa in ("ALL", "DEFAULT") or any(level in isa for level in ("BF16", "AMX", "FP16", "AVX10"))
    return "bf16" in flags


def effective_precision(requested: str, device: torch.device, warn=None) -> str:
    """The precision training will use on `device` for the `requested` one ("fp32" or "bf16"): bf16
    where the hardware has it; on a CUDA GPU without bf16 (before Ampere), fp16 with a gradient scaler;
    on a CPU without native bf16, fp32 with a warning (emulated bf16 would be far slower, not faster)."""
    if requested != "bf16":
        return requested
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16"
        if warn is not None:
            warn(
                f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16; using fp16 with a "
                "gradient scaler instead"
            )
        return "fp16"
    if device.type == "cpu" and not cpu_has_native_bf16():
        if warn is not None:
            warn(
                "--precision bf16: this CPU has no native bf16 (no AVX-512 BF16 or AMX), where bf16 runs "
                "10-100x slower than fp32; training in fp32 instead (recorded in config.json)"
            )
        return "fp32"
    return "bf16"


def autocast(precision: str, device: torch.device | None = None):
    """Autocast of forward passes to bf16 or fp16 (weights, optimiser and loss stay fp32); a no-op for
    fp32. Shared by classifier and GAN training."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast((device or torch.device("cpu")).type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler that works only for fp16 (elsewhere it passes losses and steps through)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def device_rng_state(device: torch.device):
    """The device's own RNG state (dropout masks on a GPU), for checkpoints; None on the CPU, whose
    state the checkpoint saves anyway."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return torch.mps.get_rng_state()
    return None


def set_device_rng_state(device: torch.device, state) -> None:
    if state is None:
        return
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    elif device.type == "mps":
        torch.mps.set_rng_state(state)


def device_info(device: torch.device, precision: str | None = None) -> dict:
    """What config.json records about where a run ran."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        name = f"Apple MPS ({platform.machine()})"
    else:
        name = cpu_model()
    info = {"device": str(device), "name": name, "torch": torch.__version__, "cuda": torch.version.cuda}
    if precision is not None:
        info["precision"] = precision
    return info


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's weights are on (the CPU for a model without parameters)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def fits_on_device(nbytes: int, device: torch.device, share: float = 0.25) -> bool:
    """Whether a tensor of `nbytes` can stay on `device` for a whole run (a quarter of the free memory
    at most); else it is moved per batch from pinned memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return nbytes <= share * free
    return True  # the CPU holds it already; MPS shares the machine's memory
