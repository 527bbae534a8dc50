"""What pasture writes never corrupts what it reads, is checked before the work it would waste, is safe
to open in a spreadsheet, and a failure says only what is true: the machine's state (disk full,
read-only) in one line, a bug with its traceback and a request to report it."""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import make_image, write_class_folders

from pasture import api
from pasture.cli import main

TRAIN = ["--recipe", "scratch", "--epochs", "1", "--batch-size", "8", "--image-size", "16", "--quiet"]
QUICK = "recipe=default,epochs=1,image_size=16,batch_size=8"


@pytest.fixture
def trained_run(split_data, tmp_path):
    run = tmp_path / "run"
    assert main(["train", str(split_data), "--out", str(run), *TRAIN]) == 0
    return run


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("pasture: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_an_output_inside_the_data_is_refused_by_every_command_that_writes(
    split_data, flat_data, trained_run, tmp_path, capsys
):
    before = sorted(path.relative_to(flat_data) for path in flat_data.rglob("*"))
    photo = next((flat_data / "cow").iterdir())
    for argv in (
        ["train", str(flat_data), "--out", str(flat_data / "myrun"), *TRAIN],
        ["train", str(flat_data), "--out", str(flat_data / "cow" / ".." / "x"), *TRAIN],  # '..' resolved
        ["evaluate", str(trained_run), str(flat_data), "--out", str(flat_data / "eval")],
        ["explain", str(trained_run), str(flat_data), "--out", str(flat_data / "why")],
        ["gan", "train", str(flat_data), "--out", str(flat_data / "gan"), "--iterations", "2"],
        ["experiment", str(flat_data), "--out", str(flat_data / "study"), "--conditions", f"a:{QUICK}"],
    ):
        assert main(argv) == 2, argv
        assert "inside the data folder" in error_line(capsys)
    with pytest.raises(api.UserError, match="inside the data folder"):
        api.doctor(flat_data, flat_data / "report")
    assert sorted(path.relative_to(flat_data) for path in flat_data.rglob("*")) == before  # nothing written
    link = tmp_path / "elsewhere"
    link.symlink_to(flat_data)  # the same folder by another name
    assert main(["train", str(flat_data), "--out", str(link / "run"), *TRAIN]) == 2
    assert main(["explain", str(trained_run), str(photo), "--out", str(tmp_path / "why")]) == 0  # a file is fine


def test_predict_csv_checks_its_target_before_any_work(trained_run, split_data, tmp_path, capsys, monkeypatch):
    from pasture.classify.trained import LoadedRun

    scored = []
    real = LoadedRun.scores
    monkeypatch.setattr(LoadedRun, "scores", lambda *a, **k: scored.append(1) or real(*a, **k))
    folder = tmp_path / "somewhere"
    folder.mkdir()
    photos = str(split_data / "test")
    for target, fragment in (
        (folder, "is a folder; give a file name in it"),
        (tmp_path / "nofolder" / "x.csv", "does not exist"),
        (tmp_path / "file.txt" / "x.csv", "does not exist"),
    ):
        assert main(["predict", str(trained_run), photos, "--csv", str(target)]) == 2
        line = error_line(capsys)
        assert fragment in line and str(target) in line and ".tmp" not in line and "resume" not in line, line
    assert scored == []  # refused before a single prediction
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        if not os.access(read_only, os.W_OK):  # root may write anyway (tests/test_hardening.py remounts read-only)
            assert main(["predict", str(trained_run), photos, "--csv", str(read_only / "x.csv")]) == 2
            assert "permission denied" in error_line(capsys)
    finally:
        read_only.chmod(0o700)


def test_export_checks_its_target_first(trained_run, tmp_path, capsys):
    pytest.importorskip("onnx")
    assert main(["export", str(trained_run), "--out", str(tmp_path / "nowhere" / "deep" / "m.onnx")]) == 2
    line = error_line(capsys)
    assert "nowhere/deep" in line and "does not exist" in line and ".tmp" not in line


def test_a_killed_predict_leaves_no_temporary_file_behind_next_time(trained_run, split_data, tmp_path):
    target = tmp_path / "labels.csv"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".labels.csv.{dead.stdout.strip()}.k1ll3dxx.tmp"  # what a killed predict left
    live = tmp_path / f".labels.csv.{os.getppid()}.l1v3xxxx.tmp"  # another live process writing the same file
    mine = tmp_path / ".notes.csv.tmp"  # a user's own file
    for path in (stale, live, mine):
        path.write_text("half")
    assert main(["predict", str(trained_run), str(split_data / "test"), "--csv", str(target), "--quiet"]) == 0
    assert not stale.exists() and live.exists() and mine.exists() and target.is_file()


def test_a_csv_never_holds_a_formula_a_spreadsheet_would_run(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    write_class_folders(data, {"cow": 6, "=cmd": 6})  # a class name a spreadsheet would evaluate
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), *TRAIN]) == 0
    field = tmp_path / "field"
    field.mkdir()
    for index, name in enumerate(['=HYPERLINK("x","y").png', "+1.png", "-2.png", "@SUM(A1).png", "ok.png"]):
        make_image("cow", 500 + index).save(field / name)
    (field / "=bad.png").write_bytes(b"not an image")
    target = tmp_path / "labels.csv"
    monkeypatch.chdir(field)  # relative names: the file column then starts with the photo's own name
    assert main(["predict", str(run), ".", "--csv", str(target), "--quiet"]) == 0
    rows = list(csv.DictReader(target.open(encoding="utf-8")))
    assert len(rows) == 6
    for row in rows:
        for column in ("file", "label", "skipped"):
            assert not row[column].startswith(("=", "+", "-", "@")), row
    assert '\'=HYPERLINK("x","y").png' in [row["file"] for row in rows]  # kept, as text
    assert {row["label"] for row in rows if row["label"]} <= {"cow", "'=cmd"}


def test_a_model_mismatch_is_one_line_naming_the_model_the_weights_fit(trained_run, capsys):
    config = json.loads((trained_run / "config.json").read_text())
    config["model"] = config["recipe"]["model"] = "resnet-small"  # weights of paper-cnn, said to be resnet-small
    (trained_run / "config.json").write_text(json.dumps(config))
    assert main(["predict", str(trained_run), str(trained_run / "curves.png")]) == 2
    line = error_line(capsys)
    assert "weights do not fit resnet-small: they fit paper-cnn" in line and len(line) < 300, line


def test_the_machines_state_is_one_line_and_a_bug_shows_itself(split_data, tmp_path, capsys, monkeypatch):
    from pasture.cli import runs, studies

    def full_disk(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".report.md.a1b2c3d4.tmp"))

    monkeypatch.setattr(studies, "_run_experiment", full_disk)
    assert main(["experiment", str(split_data), "--out", str(tmp_path / "s")]) == 2
    line = error_line(capsys)
    assert f"{tmp_path / 'report.md'}: No space left on device" in line and "finished runs are kept" in line
    monkeypatch.setattr(runs, "_run_recipes", full_disk)
    assert main(["recipes"]) == 2
    assert "resume" not in error_line(capsys) and "kept" not in capsys.readouterr().err  # not true there

    def bug(args):
        raise OSError(errno.EBADF, "Bad file descriptor")  # an OSError that is pasture's own mistake

    monkeypatch.setattr(runs, "_run_recipes", bug)
    assert main(["recipes"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "Bad file descriptor" in err and "please report it" in err
    assert "pasture: error" not in err


DISK_LIMIT = textwrap.dedent("""
    import resource, signal, sys
    from pasture.cli import main
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.slow
def test_a_file_size_limit_is_one_line_and_keeps_the_config(split_data, tmp_path):
    """A full disk that needs no mount (RLIMIT_FSIZE), so it runs wherever the tmpfs tests are skipped:
    the checkpoint (tens of KB) does not fit under 20 KB, config.json does."""
    run = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            DISK_LIMIT,
            "20000",
            "train",
            str(split_data),
            "--out",
            str(run),
            "--recipe",
            "paper",
            "--epochs",
            "2",
            "--image-size",
            "16",
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("pasture: error")]
    assert "File too large" in line and str(run) in line and "--resume" in line and "Traceback" not in done.stderr
    assert json.loads((run / "config.json").read_text())["seed"] == 0  # what was written is intact
    assert not list(run.glob(".*.tmp"))


def test_a_loaded_run_is_a_loaded_run_under_its_old_name_too(trained_run, split_data):
    """Issue 44: classify.trained.Classifier is LoadedRun now (models.registry's nn.Module is Classifier);
    the old name stays for a release, so code written against api.Classifier keeps working."""
    from pasture import api
    from pasture.data import decode_files

    loaded = api.load(trained_run, device="cpu")
    assert (
        type(loaded).__name__ == "LoadedRun" and isinstance(loaded, api.Classifier) and api.Classifier is api.LoadedRun
    )
    old = api.Classifier(trained_run, "cpu")
    images = decode_files(sorted((split_data / "test" / "cow").iterdir())[:2], loaded.image_size)
    assert old.label(images, ["a", "b"]) == loaded.label(images, ["a", "b"])
