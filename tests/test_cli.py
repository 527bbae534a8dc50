import argparse
import json
import subprocess
import sys

import pytest
from conftest import make_image, write_class_folders

from pasture.cli import command_parsers, main

TRAIN = ["--recipe", "scratch", "--epochs", "2", "--batch-size", "4", "--image-size", "16", "--quiet"]


@pytest.fixture
def trained_run(split_data, tmp_path):
    run = tmp_path / "run"
    assert main(["train", str(split_data), "--out", str(run), *TRAIN]) == 0
    return run


def test_train_prints_accuracy_with_interval_and_n(split_data, tmp_path, capsys):
    assert main(["train", str(split_data), "--out", str(tmp_path / "r"), *TRAIN]) == 0
    out = capsys.readouterr().out
    assert "test accuracy:" in out and "95% CI" in out and "n=12" in out


def test_evaluate_json_has_exactly_the_contract_keys(trained_run, split_data, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(trained_run), str(split_data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # exactly one JSON object
    assert set(report) == {"accuracy", "ci95", "n", "per_class", "confusion", "classes", "calibration"}
    assert 0 <= report["calibration"]["ece"] <= 1 and report["calibration"]["n"] == 12  # a probe run adds familiarity
    assert report["n"] == 12 and report["classes"] == ["cow", "horse"]
    assert sum(map(sum, report["confusion"])) == 12
    assert report["ci95"][0] <= report["accuracy"] <= report["ci95"][1]


def test_evaluate_text(trained_run, split_data, capsys):
    assert main(["evaluate", str(trained_run), str(split_data)]) == 0
    out = capsys.readouterr().out
    assert "accuracy:" in out and "n=12" in out and "confusion" in out


def test_evaluate_matches_classes_by_name_not_position(tmp_path, split_data, capsys):
    run = tmp_path / "swapped"
    assert main(["train", str(split_data), "--out", str(run), "--classes", "horse,cow", *TRAIN]) == 0
    only_cows = write_class_folders(tmp_path / "cows_only", {"cow": 5}, start=200)
    capsys.readouterr()
    assert main(["evaluate", str(run), str(only_cows), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == ["horse", "cow"]
    assert report["n"] == 5
    # every image is a cow, i.e. row 1 of the model's class order, whatever the folder order was
    assert sum(report["confusion"][1]) == 5 and sum(report["confusion"][0]) == 0
    assert list(report["per_class"]) == ["cow"]


def test_evaluate_rejects_an_unknown_class(trained_run, tmp_path, capsys):
    data = write_class_folders(tmp_path / "other", {"cow": 2, "sheep": 2})
    assert main(["evaluate", str(trained_run), str(data)]) == 2
    err = capsys.readouterr().err
    assert "sheep" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_predict_json(trained_run, tmp_path, capsys):
    folder = tmp_path / "new"
    folder.mkdir()
    make_image("cow", 500).save(folder / "a.png")
    make_image("horse", 501).save(folder / "b.jpg")
    (folder / "notes.txt").write_text("ignored")
    capsys.readouterr()
    assert main(["predict", str(trained_run), str(folder), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["file"].rsplit("/", 1)[1] for row in rows] == ["a.png", "b.jpg"]
    for row in rows:
        assert row["label"] in ("cow", "horse")
        assert sum(row["probabilities"].values()) == pytest.approx(1.0)
        assert row["probability"] == max(row["probabilities"].values())


def test_predict_bad_file_is_a_one_line_error(trained_run, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    assert main(["predict", str(trained_run), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.jpg" in err and len(err.strip().splitlines()) == 1


def test_existing_run_is_not_overwritten_without_force(trained_run, split_data, capsys):
    before = (trained_run / "metrics.json").read_text()
    assert main(["train", str(split_data), "--out", str(trained_run), *TRAIN, "--seed", "5"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (trained_run / "metrics.json").read_text() == before
    assert main(["train", str(split_data), "--out", str(trained_run), *TRAIN, "--seed", "5", "--resume"]) == 2
    assert "differs in seed" in capsys.readouterr().err
    assert main(["train", str(split_data), "--out", str(trained_run), *TRAIN, "--seed", "5", "--force"]) == 0
    assert json.loads((trained_run / "config.json").read_text())["seed"] == 5


def test_force_keeps_the_users_own_files(trained_run, split_data):
    (trained_run / "my_notes.txt").write_text("keep me")
    assert main(["train", str(split_data), "--out", str(trained_run), *TRAIN, "--force"]) == 0
    assert (trained_run / "my_notes.txt").read_text() == "keep me"


def test_non_run_folder_is_refused(split_data, tmp_path, capsys):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "thesis.tex").write_text("x")
    assert main(["train", str(split_data), "--out", str(tmp_path / "stuff"), *TRAIN]) == 2
    assert "not empty" in capsys.readouterr().err


def test_unwritable_output_leaves_nothing(split_data, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where a folder should be")
    assert main(["train", str(split_data), "--out", str(blocker / "run"), *TRAIN]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "--out" in err


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--image-size", "8"], "--image-size 8"),
        (["--model", "nope"], "--model nope"),
        (["--augment", "wild"], "--augment wild"),
        (["--classes", "horse,sheep"], "--classes"),
    ],
)
def test_bad_options_are_one_line_errors_and_write_nothing(split_data, tmp_path, capsys, args, fragment):
    out = tmp_path / "never"
    assert (
        main(["train", str(split_data), "--out", str(out), "--recipe", "scratch", "--epochs", "1", "--quiet", *args])
        == 2
    )
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_data_errors_exit_2(tmp_path, capsys):
    write_class_folders(tmp_path / "one", {"cow": 3})
    assert main(["train", str(tmp_path / "one"), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "at least two" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_argparse_rejects_impossible_numbers(split_data, tmp_path):
    with pytest.raises(SystemExit) as stop:
        main(["train", str(split_data), "--out", str(tmp_path / "r"), "--epochs", "0"])
    assert stop.value.code == 2


def test_evaluate_on_unfinished_or_missing_run(tmp_path, split_data, capsys):
    assert main(["evaluate", str(tmp_path / "nothing"), str(split_data)]) == 2
    assert "not a pasture run" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"]])
def test_help_for_every_command_has_examples(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*command, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "usage: pasture" in out
    if command:
        assert "examples:" in out


def test_every_option_of_every_command_says_what_it_does_and_its_default_once():
    """--help is the reference (the docs' CLI page is generated from it): no option without help, no
    "(default: None)" on a required option, never "default" twice in one option's help."""
    commands = dict(command_parsers())
    assert {"pasture train", "pasture gan sample", "pasture app", "pasture tune"} <= set(commands)
    for name, parser in commands.items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help"
            shown = formatter._expand_help(action) if action.help else ""
            assert shown.lower().count("default") <= 1, (name, action.option_strings, shown)
            if action.required:
                assert "(default:" not in shown, (name, action.option_strings, shown)
    app_help = commands["pasture app"].format_help()
    assert "--port PORT" in app_help and "(default: 7860)" in app_help
    assert "(default: 0)" in " ".join(commands["pasture train"].format_help().split())  # --seed: 0 is a value


def test_every_command_has_its_handler_beside_its_parser():
    """No second table of command names to keep in step: each parser names its own handler."""
    for name, parser in command_parsers():
        if name == "pasture" or name.startswith("pasture gan "):
            continue  # the top level has no handler; gan's subcommands share `gan`'s
        assert callable(parser.get_default("command_handler")), name


def test_version_and_help_do_not_import_torch():
    code = (
        "import sys; from pasture.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    version = subprocess.run([sys.executable, "-m", "pasture.cli", "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("pasture 0.")


def test_every_run_gets_a_model_card_with_its_honest_figures(split_data, tmp_path):
    run = tmp_path / "run"
    argv = ["train", str(split_data), "--out", str(run), *TRAIN]
    assert main(argv) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    card = (run / "MODEL_CARD.md").read_text()
    low, high = metrics["test_ci95"]
    assert f"Test accuracy: {metrics['test_accuracy']:.1%} (95% CI {low:.1%}-{high:.1%}, n=12)" in card
    for name in ("cow", "horse"):
        row = metrics["per_class"][name]
        assert f"- {name}: {row['accuracy']:.1%}" in card and "| cow | 8 | 6 |" in card
    assert "never saw" in card and "pasture evaluate RUN NEW_PHOTOS/" in card  # the source caveat, in words
    assert " ".join(["pasture", *argv]) in card  # how to reproduce it


def test_no_help_text_shows_an_escaped_percent_sign():
    """argparse %-formats option help but prints descriptions as written: `evaluate --help` said
    "95%% interval" for years."""
    from pasture.cli import command_parsers

    shown = {name: parser.format_help() for name, parser in command_parsers()}
    assert len(shown) > 10 and not [name for name, text in shown.items() if "%%" in text]
    assert "95% interval" in shown["pasture evaluate"]


def test_a_reader_that_stops_early_is_not_a_bug():
    """`pasture recipes | head -1`: the closed pipe ends the command quietly with 141 (128 + SIGPIPE), as
    a shell's own tools do; it was a traceback and "this is a bug in pasture"."""
    import os

    reader, writer = os.pipe()
    os.close(reader)  # the reader has gone before pasture writes: every write meets a closed pipe
    command = subprocess.Popen([sys.executable, "-m", "pasture.cli", "recipes"], stdout=writer, stderr=subprocess.PIPE)
    os.close(writer)
    assert command.stderr is not None
    error = command.stderr.read().decode()
    assert command.wait(timeout=60) == 141, error
    assert "bug" not in error and "Traceback" not in error
