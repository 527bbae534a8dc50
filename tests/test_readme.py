"""The README's promises that drift or litter, checked (issue 39): every path its commands tell a user to
create inside a checkout is ignored by git, and it states no number that changes with every commit
(test counts)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# What a command names as its output: `--out X`, `--csv X`, the virtual environment of the set-up.
OUTPUT = re.compile(r"(?:--out|--csv|-m venv(?: --system-site-packages)?)\s+([^\s`&|;]+)")


def paths_the_readme_creates(text: str) -> list[str]:
    """The relative paths that the README's commands write (placeholders in capitals, such as DIR or
    RUN, and paths outside the checkout, such as ../shared, are not paths a user makes here)."""
    made = []
    for line in text.splitlines():
        stripped = line.strip().removeprefix("$ ")
        if not stripped.startswith(("pasture ", "python", "mkdocs ")):
            continue
        for target in OUTPUT.findall(stripped):
            if target.startswith(("..", "/")) or re.fullmatch(r"[A-Z_]+(\.[a-z]+)?", target.rstrip("/")):
                continue
            made.append(target)
        if stripped.startswith("mkdocs build") and "--site-dir" not in stripped:
            made.append("site/")
    return made


def test_the_readme_path_finder_sees_outputs_and_skips_placeholders():
    text = "\n".join(
        [
            "$ pasture train ../shared/data/x --out runs/first",
            "pasture export RUN --out model.onnx   # comment",
            "pasture predict RUN DIR --csv OUT.csv",
            "python3 -m venv .venv && . .venv/bin/activate",
            "pasture train photos/ --out DIR",
            "not a command --out nothing",
        ]
    )
    assert paths_the_readme_creates(text) == ["runs/first", "model.onnx", ".venv"]


def test_git_ignores_every_path_the_readme_tells_a_user_to_create():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    made = paths_the_readme_creates(README.read_text())
    assert {"runs/first", ".venv", "why/", "cowhorse.onnx"} <= set(made)  # the tour's outputs are found
    # each as a file and as a folder (a pattern like "/.venv/" matches only a folder, which git cannot tell
    # for a path that does not exist): covered when either is ignored
    asked = [candidate for path in made for candidate in (path.rstrip("/"), path.rstrip("/") + "/x")]
    checked = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=ROOT,
        input="\n".join(asked),
        capture_output=True,
        text=True,
    )
    ignored = {line.removesuffix("/x") for line in checked.stdout.splitlines()}
    missing = [path for path in made if path.rstrip("/") not in ignored]
    assert not missing, f".gitignore does not cover {missing}, which the README tells users to create"


def test_the_readme_states_no_test_count():
    counts = re.findall(r"\b\d+ tests\b", README.read_text())
    assert not counts, f"the README states {counts}: a number that drifts with every commit; leave it out"
