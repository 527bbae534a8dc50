import json
import os
import platform
import subprocess
import sys

import pytest

# Each check runs in a fresh interpreter: malloc settings are per process and cannot be undone.
# What is checked is the mechanism itself, read from glibc: whether a 4 MiB block (the size of a
# training step's temporaries) is served by its own mmap (and so page-faulted in again at every step)
# or from the heap, where a freed block is reused. mallinfo2's hblkhd counts the bytes in mmapped
# blocks. Page-fault counts were tried first and flaked: without a fixed threshold, glibc's default
# moves with the address layout of the run.
_PROBE = """
import ctypes, ctypes.util, json
import torch
from pasture.core.runtime import keep_freed_memory, malloc_tuning_applied

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.mallinfo2.restype = Mallinfo2

def mmapped_growth():
    before = libc.mallinfo2().hblkhd
    held = [torch.ones(1024, 1024) for _ in range(6)]  # 6 x 4 MiB, alive while measured
    grown = libc.mallinfo2().hblkhd - before
    del held
    return grown

default = mmapped_growth()
applied = keep_freed_memory()
print(json.dumps({"applied": applied, "again": keep_freed_memory(), "flag": malloc_tuning_applied(),
                  "default": default, "tuned": mmapped_growth()}))
"""


def _probe(**env) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


needs_glibc = pytest.mark.skipif(
    sys.platform != "linux"
    or platform.libc_ver()[0] != "glibc"
    or tuple(map(int, platform.libc_ver()[1].split(".")[:2])) < (2, 33),
    reason="malloc tuning applies to glibc on Linux only (mallinfo2: glibc >= 2.33)",
)

# glibc's environment variable fixes its start threshold (128 KiB) and turns off its dynamic moves,
# so the untuned case is the same in every run.
GLIBC_START_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "131072"}
MIB = 1024 * 1024


@needs_glibc
def test_keep_freed_memory_serves_step_sized_blocks_from_the_heap():
    probe = _probe(PASTURE_MALLOC_TUNING="1", **GLIBC_START_THRESHOLD)
    assert probe["applied"] and probe["again"] and probe["flag"]
    assert probe["default"] >= 24 * MIB, probe  # before: each 4 MiB block was its own mmap
    assert probe["tuned"] == 0, probe  # after: none is


@needs_glibc
def test_malloc_tuning_can_be_turned_off():
    probe = _probe(PASTURE_MALLOC_TUNING="0", **GLIBC_START_THRESHOLD)
    assert not probe["applied"] and not probe["flag"]
    assert probe["tuned"] >= 24 * MIB, probe


@pytest.mark.slow
def test_training_applies_the_malloc_tuning(tmp_path):
    code = """
import torch
from pasture.data import Dataset, ImageSet
from pasture.classify.recipes import get_recipe, with_overrides
from pasture.core.runtime import malloc_tuning_applied
from pasture.classify.fit import train_classifier
before = malloc_tuning_applied()
images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
train = ImageSet(images=images, labels=torch.tensor([0, 1] * 4), files=[f"{i}.png" for i in range(8)], classes=["a", "b"])
dataset = Dataset(root=".", layout="train/test", classes=["a", "b"], image_size=16, train=train, test=None)
train_classifier(dataset, with_overrides(get_recipe("scratch"), epochs=1, image_size=16), seed=0)
print(before, malloc_tuning_applied())
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PASTURE_MALLOC_TUNING": "1"}
    )
    assert result.returncode == 0, result.stderr
    expected = "True" if sys.platform == "linux" and platform.libc_ver()[0] == "glibc" else "False"
    assert result.stdout.split() == ["False", expected]
