"""Pasture used as an unlucky or hostile user would: full disks, read-only folders, unreadable folders,
kills during writes, damaged and poisoned run folders. Each test failed before its fix."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import held_by_another_process, interrupt_on_call, make_image

from pasture import api
from pasture.cli import main

TRAIN = ["--recipe", "scratch", "--epochs", "2", "--batch-size", "4", "--image-size", "16", "--quiet"]
QUICK = "recipe=default,epochs=1,image_size=16,batch_size=8"
GAN = dict(preset="default", iterations=4, sample_every=2, image_size=16, nz=8, ngf=4, ndf=4, batch_size=8, quiet=True)


def one_line_error(capsys, *fragments) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("pasture: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def mount_tmpfs(folder: Path, size: str, request) -> Path:
    """A tmpfs of `size` at `folder`, unmounted after the test. Needs root with CAP_SYS_ADMIN; the
    test is skipped, with the reason, elsewhere."""
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.decode().strip() or 'not root'}): a full or "
            "read-only disk needs one"
        )
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(folder)], check=False))
    return folder


@pytest.fixture
def small_disk(tmp_path, request):
    """256 KiB: room for configs and reports' JSON, none for a checkpoint or many images."""
    return mount_tmpfs(tmp_path / "disk", "256k", request)


@pytest.fixture
def own_disk(tmp_path, request):
    """64 MiB that the test can remount read-only."""
    return mount_tmpfs(tmp_path / "disk", "64m", request)


def remount(mount: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True)


# ---------------------------------------------------------------------------------------------- 1


@pytest.fixture
def trained_gan(split_data, tmp_path):
    api.gan_train(split_data, tmp_path / "gan", **GAN)
    return tmp_path / "gan"


@pytest.mark.parametrize("hostile", ["../../ESCAPE", "/tmp/pasture-ESCAPE", "", "..", "a\0b", "x\ny"])
def test_gan_sample_never_writes_outside_out(trained_gan, tmp_path, capsys, hostile):
    config = json.loads((trained_gan / "config.json").read_text())
    config["classes"] = [hostile, "horse"]
    (trained_gan / "config.json").write_text(json.dumps(config))
    before = set(tmp_path.rglob("*")) | set(Path("/tmp").glob("pasture-ESCAPE*"))
    assert main(["gan", "sample", str(trained_gan), "--per-class", "2", "--out", str(tmp_path / "w" / "syn")]) == 2
    one_line_error(capsys, "config.json", "class name")
    assert set(tmp_path.rglob("*")) | set(Path("/tmp").glob("pasture-ESCAPE*")) == before


# ---------------------------------------------------------------------------------------------- 2


def test_disk_full_in_train_is_one_line_and_keeps_the_config(split_data, small_disk, capsys):
    run = small_disk / "run"
    assert main(["train", str(split_data), "--out", str(run), *TRAIN]) == 2
    one_line_error(capsys, "No space left on device", str(run))
    assert json.loads((run / "config.json").read_text())["seed"] == 0  # what was written is intact
    assert not list(run.glob(".*.tmp"))  # the failed atomic write left no temp file


@pytest.mark.slow
def test_disk_full_in_gan_train_experiment_and_gan_sample(split_data, trained_gan, small_disk, capsys):
    assert (
        main(
            [
                "gan",
                "train",
                str(split_data),
                "--out",
                str(small_disk / "gan"),
                "--iterations",
                "4",
                "--sample-every",
                "2",
                "--image-size",
                "16",
                "--ngf",
                "64",
                "--ndf",
                "64",
                "--quiet",
            ]
        )
        == 2
    )
    one_line_error(capsys, "No space left on device")
    assert (
        main(
            [
                "experiment",
                str(split_data),
                "--out",
                str(small_disk / "study"),
                "--quiet",
                "--seeds",
                "1",
                "--conditions",
                f"g:{QUICK},gan=default,image_size_gan=16,iterations=2,ngf=64,ndf=64",
            ]
        )
        == 2
    )
    one_line_error(capsys, "No space left on device")
    assert main(["gan", "sample", str(trained_gan), "--per-class", "3000", "--out", str(small_disk / "syn")]) == 2
    one_line_error(capsys, "No space left on device")
    assert not (small_disk / "syn").exists()  # built aside and moved in whole, or not at all


def test_read_only_resume_and_gan_score_fail_before_any_work(split_data, own_disk, monkeypatch, capsys):
    import pasture.classify.fit as fit_module

    run = own_disk / "run"
    small_argv = [
        "train",
        str(split_data),
        "--out",
        str(run),
        "--recipe",
        "paper",
        "--epochs",
        "2",
        "--image-size",
        "12",
        "--quiet",
    ]
    restore = interrupt_on_call(monkeypatch, fit_module, "evaluate_model", 2)
    assert main(small_argv) == 130
    restore()
    remount(own_disk, "ro")
    assert main([*small_argv, "--resume"]) == 2
    one_line_error(capsys, str(run), "Read-only file system")
    remount(own_disk, "rw")
    gan = own_disk / "gan"
    api.gan_train(split_data, gan, **{**GAN, "iterations": 2, "ngf": 2, "ndf": 2, "sample_every": 2})
    remount(own_disk, "ro")
    trained = []
    monkeypatch.setattr("pasture.gan.synth.train_classifier", lambda *a, **k: trained.append(1))
    assert main(["gan", "score", str(gan), str(split_data)]) == 2
    one_line_error(capsys, str(gan), "Read-only file system")
    assert trained == []  # refused before the minutes of training, not after


def test_an_unreadable_class_folder_is_one_line(split_data, tmp_path, monkeypatch, capsys):
    blocked = split_data / "train" / "horse"
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self == blocked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert main(["train", str(split_data), "--out", str(tmp_path / "run"), *TRAIN]) == 2
    one_line_error(capsys, str(blocked), "Permission denied")


# ---------------------------------------------------------------------------------------------- 3


@pytest.fixture
def trained_run(split_data, tmp_path):
    run = tmp_path / "run"
    assert main(["train", str(split_data), "--out", str(run), *TRAIN]) == 0
    return run


@pytest.mark.parametrize(
    "damage",
    [
        "not json",
        "[]",
        "{}",
        {"image_size": -1},
        {"image_size": 0},
        {"image_size": "64"},
        {"image_size": 6000},
        {"image_size": 100000},
        {"classes": ["cow"]},
        {"recipe": {"name": "x", "epochs": "many"}},
    ],
)
@pytest.mark.slow
def test_a_damaged_or_hostile_run_config_is_one_line(trained_run, split_data, capsys, damage):
    path = trained_run / "config.json"
    if isinstance(damage, dict):
        config = json.loads(path.read_text())
        config.update(damage)
        path.write_text(json.dumps(config))
    else:
        path.write_text(damage)
    capsys.readouterr()
    assert main(["evaluate", str(trained_run), str(split_data)]) == 2
    one_line_error(capsys, "config.json")
    assert main(["predict", str(trained_run), str(split_data / "test" / "cow")]) == 2
    one_line_error(capsys, "config.json")


def test_a_damaged_metrics_file_is_rescored_on_resume(trained_run, split_data, capsys):
    good = json.loads((trained_run / "metrics.json").read_text())
    (trained_run / "metrics.json").write_text('{"format": 2, "test_accur')
    assert main(["train", str(split_data), "--out", str(trained_run), *TRAIN, "--resume"]) == 0
    assert "scoring the run again" in capsys.readouterr().err
    assert json.loads((trained_run / "metrics.json").read_text())["test_correct"] == good["test_correct"]


@pytest.mark.slow
def test_a_damaged_stored_experiment_run_is_computed_again(split_data, tmp_path, capsys):
    out = tmp_path / "study"
    first = api.experiment(split_data, out, conditions=[f"a:{QUICK}"], seeds=2, quiet=True)
    [damaged, _] = sorted((out / "runs").glob("*/result.json"))
    damaged.write_text("{ truncated")
    capsys.readouterr()
    again = api.experiment(split_data, out, conditions=[f"a:{QUICK}"], seeds=2, quiet=True)
    assert again["runs_computed"] == 1 and again["conditions"][0]["accuracies"] == first["conditions"][0]["accuracies"]
    assert capsys.readouterr().err.count("computing again") == 1


def test_a_decode_cache_entry_of_the_wrong_shape_is_decoded_again(split_data, capsys):
    from pasture.core.defaults import cache_root
    from pasture.data import load_dataset

    first = load_dataset(split_data, 16)
    for entry in (cache_root() / "decoded").rglob("*.pt"):
        torch.save({"image": torch.zeros(3, 99, 99, dtype=torch.uint8), "width": 24, "height": 24}, entry)
    again = load_dataset(split_data, 16)
    assert torch.equal(first.train.images, again.train.images)
    assert capsys.readouterr().err.count("damaged decode-cache entry") <= 1


# ---------------------------------------------------------------------------------------------- 4


def test_history_keeps_the_last_epoch_when_killed_before_its_line(split_data, tmp_path, monkeypatch):
    import pasture.core.loop as loop_module  # the one checkpoint writer (classifier and GAN)

    run = tmp_path / "run"
    restore = interrupt_on_call(monkeypatch, loop_module, "write_jsonl", 2)  # epoch 2's line, after its checkpoint
    assert main(["train", str(split_data), "--out", str(run), *TRAIN]) == 130
    restore()
    assert main(["train", str(split_data), "--out", str(run), *TRAIN, "--resume"]) == 0
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2]
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2


# ---------------------------------------------------------------------------------------------- 5, 6


def test_a_folder_killed_during_its_first_write_is_continued(split_data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".config.json.k1ll3dxx.tmp").write_text('{"half": ')
    assert main(["train", str(split_data), "--out", str(run), *TRAIN]) == 0
    assert not list(run.glob(".*.tmp"))
    study = tmp_path / "study"
    study.mkdir()
    (study / ".experiment.json.k1ll3dxx.tmp").write_text("{")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (study / ".pasture.lock").write_text(gone.stdout)  # its process has ended: a stale lock
    assert (
        main(
            [
                "experiment",
                str(split_data),
                "--out",
                str(study),
                "--quiet",
                "--seeds",
                "1",
                "--conditions",
                f"a:{QUICK}",
            ]
        )
        == 0
    )
    assert (study / "report.md").is_file() and not (study / ".pasture.lock").exists()


def test_experiment_force_clears_only_pasture_files(split_data, tmp_path):
    study = tmp_path / "study"
    api.experiment(split_data, study, conditions=[f"a:{QUICK}"], seeds=1, quiet=True)
    (study / "notes.txt").write_text("mine")
    again = api.experiment(split_data, study, conditions=[f"a:{QUICK}"], seeds=1, quiet=True, force=True)
    assert again["runs_computed"] == 1 and (study / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_a_second_experiment_on_the_same_folder_is_told_who_holds_it(split_data, tmp_path, capsys):
    study = tmp_path / "study"
    api.experiment(split_data, study, conditions=[f"a:{QUICK}"], seeds=1, quiet=True)
    with held_by_another_process(study) as holder:
        assert (
            main(
                [
                    "experiment",
                    str(split_data),
                    "--out",
                    str(study),
                    "--quiet",
                    "--seeds",
                    "2",
                    "--conditions",
                    f"a:{QUICK}",
                ]
            )
            == 2
        )
        one_line_error(capsys, f"pid {holder.pid}")
    assert len(list((study / "runs").glob("*/result.json"))) == 1  # the refused one computed nothing


@pytest.mark.slow
def test_orphan_temp_files_are_removed_when_a_folder_is_next_opened(trained_run, split_data, tmp_path):
    (trained_run / ".checkpoint.pt.a1b2c3d4.tmp").write_bytes(b"half a checkpoint")
    (trained_run / ".notes.v2.tmp").write_text("a user's own hidden file, not one of pasture's temp files")
    assert main(["train", str(split_data), "--out", str(trained_run), *TRAIN, "--force"]) == 0
    assert [path.name for path in trained_run.glob(".*.tmp")] == [".notes.v2.tmp"]
    study = tmp_path / "study"
    api.experiment(split_data, study, conditions=[f"a:{QUICK}"], seeds=1, quiet=True)
    [run_folder] = (study / "runs").iterdir()
    (run_folder / ".result.json.x1y2z3w4.tmp").write_text("{")
    (study / ".results.json.x1y2z3w4.tmp").write_text("{")
    api.experiment(split_data, study, conditions=[f"a:{QUICK}"], seeds=1, quiet=True)
    assert not list(study.rglob(".*.tmp"))


# ---------------------------------------------------------------------------------------------- 7, 8


def test_outputs_follow_the_umask(split_data, tmp_path, trained_gan):
    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        assert main(["train", str(split_data), "--out", str(run), *TRAIN]) == 0
        assert main(["gan", "sample", str(trained_gan), "--per-class", "2", "--out", str(tmp_path / "syn")]) == 0
    finally:
        os.umask(old)
    for name in ("config.json", "metrics.json", "checkpoint.pt", "history.jsonl", "curves.png"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name
    assert stat.S_IMODE((tmp_path / "syn").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "syn" / "synth.json").stat().st_mode) == 0o644


def test_a_newline_in_a_file_name_stays_on_one_line_of_predict_output(trained_run, tmp_path, capsys):
    field = tmp_path / "field"
    field.mkdir()
    make_image("cow", 300).save(field / "two\nlines.png")
    make_image("horse", 301).save(field / "plain.png")
    capsys.readouterr()
    assert main(["predict", str(trained_run), str(field)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and any("two\\nlines.png" in line for line in lines)
