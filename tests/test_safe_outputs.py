"""Nothing lost (issue 40): a command replaces only what pasture wrote, writes nothing inside the data it
reads, holds a run while it exports, cleans a killed export's leftovers, and decodes any photo within a
bounded amount of memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import write_class_folders
from PIL import Image

from pasture.cli import main
from pasture.core.imagefile import DECODE_SIDE, decode_array

TRAIN = ["--recipe", "scratch", "--epochs", "1", "--batch-size", "8", "--image-size", "16", "--quiet"]


@pytest.fixture
def run(split_data, tmp_path):
    folder = tmp_path / "run"
    assert main(["train", str(split_data), "--out", str(folder), *TRAIN]) == 0
    return folder


def users_folder(path: Path) -> Path:
    path.mkdir()
    (path / "thesis.tex").write_text("years of work")
    return path


# ------------------------------------------------------------------------------ packages pasture replaces


@pytest.mark.slow
def test_an_openvino_export_replaces_only_a_folder_pasture_wrote(run, tmp_path, capsys):
    pytest.importorskip("openvino")
    mine = users_folder(tmp_path / "mine")
    link = tmp_path / "link"
    link.symlink_to(mine, target_is_directory=True)
    for out in (mine, link, run):  # a user's folder, a link to it, the run folder itself
        assert main(["export", str(run), "--format", "openvino", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and str(out) in err
    assert (mine / "thesis.tex").read_text() == "years of work" and link.is_symlink()
    assert json.loads((run / "config.json").read_text())["classes"] == ["cow", "horse"]
    ir = tmp_path / "ir"
    assert main(["export", str(run), "--format", "openvino", "--out", str(ir)]) == 0
    first = (ir / "model.bin").stat().st_mtime_ns
    assert main(["export", str(run), "--format", "openvino", "--out", str(ir)]) == 0  # its own: replaced
    assert sorted(path.name for path in ir.iterdir()) == ["model.bin", "model.xml"]
    assert (ir / "model.bin").stat().st_mtime_ns >= first
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]  # no staging left


@pytest.mark.slow
def test_a_coreml_export_never_deletes_a_folder_it_did_not_write(split_data, tmp_path, capsys):
    pytest.importorskip("coremltools")
    run = tmp_path / "model.mlpackage"  # a run folder that happens to carry the package suffix
    assert main(["train", str(split_data), "--out", str(run), *TRAIN]) == 0
    mine = users_folder(tmp_path / "mine.mlpackage")
    link = tmp_path / "link.mlpackage"
    link.symlink_to(mine, target_is_directory=True)
    for out in (mine, link, run):
        assert main(["export", str(run), "--format", "coreml", "--out", str(out)]) == 2
        assert "pasture replaces only" in capsys.readouterr().err or out == link
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert (run / "config.json").is_file() and (run / "metrics.json").is_file()
    assert main(["predict", str(run), str(split_data / "test" / "cow")]) == 0  # the run is whole
    package = tmp_path / "cows.mlpackage"
    assert main(["export", str(run), "--format", "coreml", "--out", str(package)]) == 0
    assert main(["export", str(run), "--format", "coreml", "--out", str(package)]) == 0  # its own: replaced
    assert (package / "Manifest.json").is_file()


def test_a_killed_exports_staging_folder_is_removed_and_a_live_ones_kept(tmp_path):
    from pasture.core.paths import staging_folder

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / f".openvino-{int(dead.stdout)}-abc123"
    (left / "ir").mkdir(parents=True)
    (left / "ir" / "model.bin").write_bytes(b"x" * 1000)
    alive = tmp_path / f".openvino-{os.getppid()}-def456"  # our parent is alive: its work in progress stays
    alive.mkdir()
    with staging_folder(tmp_path, "openvino") as staging:
        assert staging.name.startswith(f".openvino-{os.getpid()}-")
        assert not left.exists() and alive.is_dir()
    assert not staging.exists()


# --------------------------------------------------------------------------- nothing written into the data


def test_explain_refuses_an_out_beside_the_class_folders_it_reads(run, split_data, tmp_path, capsys):
    classes = split_data / "test"
    out = classes / "why"
    assert main(["explain", str(run), str(classes / "cow"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "inside the data folder" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_train_names_a_folder_pasture_wrote_inside_the_data_instead_of_learning_it(tmp_path, capsys):
    data = write_class_folders(tmp_path / "photos", {"cow": 4, "horse": 4})
    why = data / "why"
    why.mkdir()
    Image.new("RGB", (24, 24)).save(why / "0000_cow_0.png")
    (why / "explanations.json").write_text("[]")
    assert main(["train", str(data), "--out", str(tmp_path / "r"), *TRAIN]) == 2
    err = capsys.readouterr().err
    assert f"{why}: explanations from `pasture explain`, not a class of photos" in err
    assert not (tmp_path / "r" / "config.json").exists()


def test_an_export_is_refused_inside_the_runs_data(run, split_data, capsys):
    out = split_data / "train" / "cow" / "model.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 2
    assert "inside the data folder" in capsys.readouterr().err and not out.exists()


def test_image_size_is_bounded_on_the_command_line_and_in_a_recipe_file(split_data, tmp_path, capsys):
    assert main(["train", str(split_data), "--out", str(tmp_path / "a"), *TRAIN, "--image-size", "20000"]) == 2
    assert "--image-size 20000: at most 1024 px" in capsys.readouterr().err
    recipe = tmp_path / "big.json"
    recipe.write_text(json.dumps({"base": "scratch", "recipe": {"image_size": 100000}}))
    assert main(["train", str(split_data), "--out", str(tmp_path / "b"), "--recipe", str(recipe), "--quiet"]) == 2
    assert "at most 1024 px" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------- an export holds its run

HELD_EXPORT = textwrap.dedent("""
    import os, sys, time
    import pasture.export.onnx_export as export
    from pasture.cli import main

    real = export.checked_parity
    release = sys.argv[2]

    def held(*args, **kwargs):
        print("exporting", flush=True)
        deadline = time.time() + 600
        while not os.path.exists(release) and time.time() < deadline:
            time.sleep(0.05)
        return real(*args, **kwargs)

    export.checked_parity = held
    sys.exit(main(["export", sys.argv[1]]))
""")


@pytest.mark.slow
def test_a_run_being_exported_by_another_process_cannot_be_retrained_but_can_be_read(run, split_data, tmp_path):
    release = tmp_path / "release"
    exporter = subprocess.Popen(
        [sys.executable, "-c", HELD_EXPORT, str(run), str(release)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert exporter.stdout.readline().strip() == b"exporting"
        config = (run / "config.json").read_text()
        forced = subprocess.run(
            [sys.executable, "-m", "pasture.cli", "train", str(split_data), "--out", str(run), *TRAIN, "--force"],
            capture_output=True,
            text=True,
        )
        assert forced.returncode == 2 and "reading this run" in forced.stderr, forced.stderr
        assert (run / "config.json").read_text() == config
        assert main(["export", str(run), "--out", str(tmp_path / "other.onnx")]) == 0  # readers share it
        from appkit import TOKEN, client_for

        from pasture.app.server import create_app

        deleted = client_for(create_app(tmp_path, token=TOKEN)).delete(f"/api/runs/{run.name}")
        assert deleted.status_code == 409 and "reading this run" in deleted.json()["error"]  # was a 500
        assert (run / "checkpoint.pt").is_file()
    finally:
        release.touch()
        _, err = exporter.communicate(timeout=600)
    assert exporter.returncode == 0, err
    assert (run / "model.onnx").is_file()


# --------------------------------------------------------------------------------- decoding within bounds


def test_a_16_bit_png_becomes_8_bits_as_before_in_integer_arithmetic(tmp_path):
    values = (np.arange(40 * 30, dtype=np.uint32) * 53 % 65536).astype(np.uint16).reshape(30, 40)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    as_8_bit = np.clip(values.astype(np.float64) / 65535.0 * 255.0, 0, 255).astype(np.uint8)  # the old rule
    expected = Image.fromarray(as_8_bit, mode="L").convert("RGB")
    from PIL import ImageOps

    square = ImageOps.fit(expected, (16, 16), method=Image.Resampling.BICUBIC)
    decoded, size = decode_array(path, 16)
    assert size == (40, 30)
    assert np.array_equal(decoded, np.asarray(square).transpose(2, 0, 1))


def test_a_large_photo_is_reduced_before_the_fit_and_looks_the_same(tmp_path):
    side = 2 * DECODE_SIDE + 100
    yy, xx = np.mgrid[0:side, 0 : side + 300]
    rgb = np.stack([(xx * 255 // (side + 300)), (yy * 255 // side), np.full_like(xx, 128)], -1).astype(np.uint8)
    path = tmp_path / "large.png"
    Image.fromarray(rgb).save(path)
    decoded, size = decode_array(path, 64)
    from PIL import ImageOps

    direct = np.asarray(ImageOps.fit(Image.fromarray(rgb), (64, 64), method=Image.Resampling.BICUBIC))
    assert size == (side + 300, side)
    assert np.abs(decoded.transpose(1, 2, 0).astype(int) - direct.astype(int)).max() <= 2


@pytest.mark.slow
def test_predicting_a_16_bit_png_near_the_pixel_limit_stays_under_1_5_gb(run, tmp_path):
    """The issue's photo: 9400 x 9500 grey at 16 bits (89.3 Mpx), a few hundred KB on disk. Before, its
    float64 conversion took `predict` to 3.2 GB."""
    path = tmp_path / "deep.png"
    values = np.zeros((9500, 9400), dtype=np.uint16)
    values[::97, :] = 40000  # some structure, still small on disk
    Image.fromarray(values).save(path)
    del values
    measure = textwrap.dedent("""
        import resource, subprocess, sys
        done = subprocess.run([sys.executable, "-m", "pasture.cli", "predict", sys.argv[1], sys.argv[2], "--json"],
                              capture_output=True, text=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        print(done.returncode, peak, done.stdout.strip()[:200], done.stderr.strip()[:300])
    """)
    done = subprocess.run([sys.executable, "-c", measure, str(run), str(path)], capture_output=True, text=True)
    code, peak = done.stdout.split()[:2]
    assert code == "0", done.stdout
    assert int(peak) < 1.5 * 2**30, f"peak RSS {int(peak) / 2**30:.2f} GB"


def test_an_experiment_of_one_seed_prints_its_runs_interval_not_nan(capsys):
    from pasture.cli.studies import _print_experiment
    from pasture.core.stats import mean_interval, wilson_interval

    row = {
        "condition": "probe",
        "test": mean_interval([0.9]),
        "pooled_wilson95": list(wilson_interval(90, 100)),
        "runs": 1,
        "n_per_run": 100,
    }
    _print_experiment({"conditions": [row], "comparisons": []}, "out")
    shown = capsys.readouterr().out
    assert "nan" not in shown and "one run; 95% CI 82.6%-94.5%, n=100" in shown


def test_a_photo_above_the_pixel_limit_is_named_with_pasture_s_limit_and_no_wrong_advice(run, tmp_path, monkeypatch):
    import pasture.core.imagefile as imagefile
    from pasture import api
    from pasture.core.errors import UserError

    monkeypatch.setattr(imagefile, "MAX_PIXELS", 100)
    photo = tmp_path / "big.png"
    Image.new("RGB", (20, 20)).save(photo)
    with pytest.raises(UserError) as refused:
        api.predict(run, [photo])
    message = str(refused.value)
    assert message == f"{photo}: is 20x20 px (0.0 Mpx), above pasture's limit of 0.0 Mpx; downscale it to use it"
