"""What every benchmark script shares: where the dev photos are, the --data check, writing JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "cowhorse-dev"


def data_or_exit(path: str) -> Path:
    """The --data folder, or exit 2 with a one-line message when it is missing."""
    folder = Path(path)
    if not folder.is_dir():
        print(f"no data at {folder}; pass --data DATA", file=sys.stderr)
        raise SystemExit(2)
    return folder


def write_results(path: str | Path, payload: dict) -> Path:
    """Write the benchmark's JSON (with the versions of everything that can change a number)."""
    from pasture.core.runs import versions

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**payload, "versions": versions()}, indent=2, default=str))
    print(f"wrote {out}")
    return out


def eight_sources() -> tuple[list[Path], list[int], list[str], list[str]]:
    """(files, labels 0 cow / 1 horse, source, split) of the 440 cow/horse photos of the 8 sources
    (cowhorse-dev's 3 and cowhorse-sources' 5), from their MANIFEST.csv files; split is e.g.
    "cowhorse-dev/train"."""
    import csv

    files, labels, sources, splits = [], [], [], []
    shared = DEFAULT_DATA.parent
    for folder, column in ((shared / "cowhorse-dev", "source_repo"), (shared / "cowhorse-sources", "source")):
        with (folder / "MANIFEST.csv").open() as handle:
            for row in csv.DictReader(handle):
                files.append(folder / row["file"])
                labels.append(("cow", "horse").index(row["label"]))
                sources.append(row[column].split("/")[-1][:28])
                splits.append(folder.name + "/" + row["file"].split("/")[0])
    return files, labels, sources, splits
