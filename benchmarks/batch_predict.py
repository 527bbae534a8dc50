"""Batch prediction at scale: `pasture predict RUN FOLDER --csv OUT.csv` on 5,000 photos, time and peak
memory, for a run folder (torch) and its ONNX export (ONNX Runtime alone), paper-cnn and effnet-lite0.

The 5,000 files are links to cowhorse-dev's photos (each decoded from its JPEG every time, as new photos
would be), in a temporary folder. Each case runs in its own process, which reports its peak RSS.

    python benchmarks/batch_predict.py [--data ../shared/data/cowhorse-dev] [--images 5000]

Prints a table and writes JSON to benchmarks/results/batch_predict.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import DEFAULT_DATA, RESULTS, data_or_exit, write_results

# Peak memory from /proc/self/status (VmHWM): execve starts a new address space, so it is this process's
# own, while getrusage's ru_maxrss would carry over the parent's high-water mark across fork + exec.
CASE = """
import json, sys, time
from pasture.cli import main
started = time.perf_counter()
code = main(["predict", sys.argv[1], sys.argv[2], "--csv", sys.argv[3], "--quiet", "--device", "cpu"])
seconds = time.perf_counter() - started
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"code": code, "seconds": seconds, "peak_rss_mib": peak / 1024, "torch_imported": "torch" in sys.modules}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--out", default=str(RESULTS / "batch_predict.json"))
    args = parser.parse_args()
    data = data_or_exit(args.data)
    os.environ.setdefault("PASTURE_CACHE_DIR", tempfile.mkdtemp(prefix="pasture-cache-"))
    from pasture import api

    photos = sorted(p for p in (data / "test").rglob("*") if p.is_file())
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        folder = scratch / "photos"
        folder.mkdir()
        for index in range(args.images):
            source = photos[index % len(photos)]
            (folder / f"{index:05d}{source.suffix.lower()}").symlink_to(source)
        for name, settings in {
            "paper-cnn": dict(recipe="default", epochs=1),
            "effnet-lite0 probe": dict(recipe="probe", epochs=5),
        }.items():
            run = scratch / name.split()[0]
            api.train(data, run, quiet=True, device="cpu", **settings)
            api.export(run)
            for kind, model in (("run folder (torch)", run), ("ONNX file (onnxruntime)", run / "model.onnx")):
                csv_path = scratch / "out.csv"
                done = subprocess.run(
                    [sys.executable, "-c", CASE, str(model), str(folder), str(csv_path)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                result = json.loads(done.stdout.strip().splitlines()[-1])
                lines = sum(1 for _ in csv_path.open()) - 1
                row = {
                    "model": name,
                    "from": kind,
                    "images": lines,
                    **result,
                    "images_per_second": lines / result["seconds"],
                }
                rows.append(row)
                print(
                    f"{name:20s} {kind:26s} {lines} images in {result['seconds']:.1f} s "
                    f"({row['images_per_second']:.0f} img/s), peak RSS {result['peak_rss_mib']:.0f} MiB, "
                    f"torch imported: {result['torch_imported']}",
                    flush=True,
                )
    print()
    print("| model | from | images | seconds | images/s | peak RSS | torch imported |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['from']} | {row['images']} | {row['seconds']:.1f} | "
            f"{row['images_per_second']:.0f} | {row['peak_rss_mib']:.0f} MiB | {row['torch_imported']} |"
        )
    write_results(args.out, {"data": str(data), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
