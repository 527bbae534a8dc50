"""A typo answers before the heavy imports (issue 42): every command checks its paths before torch is
imported, with the same one line and exit code 2. Checked by what was imported, not by a clock."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import make_image

# Runs the CLI in a fresh interpreter and says whether torch was imported by the time it returned.
PROBE = (
    "import sys; from pasture.cli import main; code = main(sys.argv[1:]);print('torch' in sys.modules); sys.exit(code)"
)


def run_cli(*arguments: str) -> tuple[int, bool, str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *arguments], capture_output=True, text=True)
    return done.returncode, done.stdout.strip().endswith("True"), done.stderr.strip()


@pytest.fixture
def finished_run(tmp_path):
    """A folder that looks like a finished run to the early checks (they read no weights)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.json").write_text("{}")
    return run


def test_a_missing_data_folder_answers_without_importing_torch(tmp_path):
    code, imported, err = run_cli("train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"))
    assert code == 2 and not imported
    assert (
        err == f"pasture: error: {tmp_path / 'nowhere'}: no such folder; give a folder of photos (DATA/<class>/*.jpg)"
    )
    assert not (tmp_path / "r").exists()


def test_predict_on_a_file_that_is_no_image_answers_without_importing_torch(finished_run, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# not a photo")
    code, imported, err = run_cli("predict", str(finished_run), str(readme))
    assert code == 2 and not imported and "README.md: is not an image Pillow can read" in err
    photo = tmp_path / "cow.png"
    make_image("cow", 0).save(photo)
    code, imported, err = run_cli("predict", str(finished_run), str(photo), str(tmp_path / "missing.jpg"))
    assert code == 2 and not imported and "missing.jpg: no such file or folder" in err


@pytest.mark.parametrize(
    "arguments, said",
    [
        (["evaluate", "{tmp}/no-run", "{tmp}"], "not a pasture run folder (no config.json)"),
        (["export", "{tmp}/no-run"], "not a pasture run folder (no config.json)"),
        (["explain", "{tmp}/no-run", "{tmp}", "--out", "{tmp}/why"], "not a pasture run folder"),
        (["doctor", "{tmp}/nowhere"], "no such folder"),
        (["predict", "{tmp}/model.onnx", "{tmp}"], "model.onnx: no such file"),
        (["evaluate", "{run}", "{tmp}", "--others", "{tmp}/nowhere"], "--others"),
    ],
)
def test_every_command_checks_its_paths_before_torch(tmp_path, finished_run, arguments, said):
    code, imported, err = run_cli(*(a.format(tmp=tmp_path, run=finished_run) for a in arguments))
    assert code == 2 and not imported and said in err and len(err.splitlines()) == 1, err


def test_an_unfinished_run_is_said_before_torch(tmp_path):
    run = tmp_path / "half"
    run.mkdir()
    (run / "config.json").write_text("{}")
    code, imported, err = run_cli("export", str(run))
    assert code == 2 and not imported and "has not finished" in err


def test_reading_photos_and_features_show_progress_unless_quiet(tmp_path, capsys):
    """No silent minutes: train, evaluate and predict show bars for reading photos and for the backbone's
    features (at 32 photos or more); --quiet and small jobs show none."""
    from conftest import write_class_folders

    from pasture.cli import main

    data = write_class_folders(tmp_path / "photos", {"cow": 40, "horse": 40})
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", str(data), "--out", str(run), "--recipe", "probe", "--image-size", "48"]) == 0
    err = capsys.readouterr().err
    assert "reading photos" in err and "features" in err
    assert (
        main(["train", str(data), "--out", str(tmp_path / "q"), "--recipe", "probe", "--image-size", "48", "--quiet"])
        == 0
    )
    err = capsys.readouterr().err
    assert "reading photos" not in err and "features" not in err
    assert main(["predict", str(run), str(data), "--json"]) == 0
    assert "features" in capsys.readouterr().err
    assert main(["predict", str(run), str(data / "cow" / "cow_000.png")]) == 0  # one photo: no bar
    assert "features" not in capsys.readouterr().err
