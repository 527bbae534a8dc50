"""pasture tune: the search sees folds of the training split only, candidates are paired, the search
resumes to the same result, and its recipe file is what train and experiment accept."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import interrupt_on_call, write_split_data

import pasture.study.engines as engines
from pasture import api
from pasture.classify.recipes import get_recipe, read_recipe_file
from pasture.cli import main
from pasture.core.errors import Interrupted, UserError
from pasture.study.conditions import parse_condition
from pasture.study.inputs import RunInputs

pytest.importorskip("optuna", reason="the tune extra is not installed: pip install -e '.[tune]'")

SPACE = {"lr": {"low": 1e-3, "high": 1e-2, "log": True}, "epochs": {"low": 1, "high": 3}, "augment": ["paper", "none"]}
START = {"base": "scratch", "recipe": {"epochs": 2, "image_size": 16, "batch_size": 8}}  # a quick start


@pytest.fixture
def start_recipe(tmp_path) -> Path:
    """A quick starting recipe, as a recipe file (what a search starts from can be one)."""
    path = tmp_path / "quick.json"
    path.write_text(json.dumps(START))
    return path


@pytest.fixture
def space(tmp_path) -> Path:
    path = tmp_path / "space.json"
    path.write_text(json.dumps(SPACE))
    return path


def _tune(data, out, space, start_recipe, **options):
    return api.tune(data, out, space=space, recipe=str(start_recipe), trials=4, folds=2, seeds=2, quiet=True, **options)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One finished search, shared by the tests that only read it (a search is the costly part of this
    file): its data, space, start recipe, folder, result, and every file its runs loaded."""
    root = tmp_path_factory.mktemp("search")
    data = write_split_data(root / "data")
    space, start = root / "space.json", root / "quick.json"
    space.write_text(json.dumps(SPACE))
    start.write_text(json.dumps(START))
    seen = []
    real = RunInputs.replicate_dataset

    def spying(self, task, image_size):
        dataset = real(self, task, image_size)
        seen.extend(dataset.train.files + dataset.test.files)
        return dataset

    with pytest.MonkeyPatch.context() as patch:  # what the function-scoped autouse fixtures do for a test
        patch.setenv("PASTURE_CACHE_DIR", str(root / "cache"))
        patch.setattr(engines, "auto_jobs", lambda device, out=None: 1)
        patch.setattr(RunInputs, "replicate_dataset", spying)
        result = _tune(data, root / "tuned", space, start)
    return SimpleNamespace(data=data, space=space, start=start, out=root / "tuned", result=result, seen=seen)


@pytest.mark.slow
def test_every_run_of_a_search_sees_the_training_split_only(searched):
    seen, result = searched.seen, searched.result
    assert seen and all(Path(file).parts[0] == "train" or "/train/" in file for file in seen)
    assert not any("test" in Path(file).parts for file in seen)
    # 16 training photos in 2 folds: every run is scored on 8 of them
    assert result["n_train"] == 16 and all(trial["balanced"]["n"] == 4 for trial in result["trials"])
    assert len(result["trials"]) == 4


@pytest.mark.slow
def test_an_interrupted_search_resumes_to_the_same_result(searched, tmp_path, monkeypatch):
    split_data, space, start_recipe, straight = searched.data, searched.space, searched.start, searched.result
    restore = interrupt_on_call(monkeypatch, engines, "execute_run", 9)  # inside the second trial
    with pytest.raises(Interrupted):
        _tune(split_data, tmp_path / "resumed", space, start_recipe)
    restore()
    resumed = _tune(split_data, tmp_path / "resumed", space, start_recipe)
    assert [t["values"] for t in resumed["trials"]] == [t["values"] for t in straight["trials"]]
    assert [t["balanced"]["mean"] for t in resumed["trials"]] == [t["balanced"]["mean"] for t in straight["trials"]]
    assert resumed["best_vs_start_on_fresh_folds"] == straight["best_vs_start_on_fresh_folds"]
    # and once done, the same command computes nothing
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "resumed" / "runs").glob("*/result.json")}
    _tune(split_data, tmp_path / "resumed", space, start_recipe)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "resumed" / "runs").glob("*/result.json")} == stamps


def test_candidates_are_paired_and_the_best_is_checked_on_fresh_folds(searched):
    result = searched.result
    runs = [json.loads(p.read_text()) for p in (searched.out / "runs").glob("*/result.json")]
    replicates_of = {}
    for run in runs:
        replicates_of.setdefault(run["condition"], set()).add((run["replicate"]["repeat"], run["replicate"]["fold"]))
    search = {(r, f) for r in range(2) for f in range(2)}
    fresh = {(r, f) for r in range(2, 4) for f in range(2)}
    for name, replicates in replicates_of.items():
        if name.startswith("trial"):
            assert replicates == search, name  # every candidate on the same folds and seeds
    # the confirmation used repeats the search never saw, for the start and the best only (which share
    # their runs when the best is the start itself)
    confirming = [run for run in runs if run["replicate"]["repeat"] >= 2]
    assert {(run["replicate"]["repeat"], run["replicate"]["fold"]) for run in confirming} == fresh
    assert {run["condition"] for run in confirming} <= {"start", "best"}
    assert result["best_vs_start_on_fresh_folds"]["n_pairs"] == 4
    ranked = sorted(result["trials"], key=lambda t: (-t["balanced"]["mean"], t["trial"]))
    assert result["best"] == ranked[0]
    assert result["improved"] == (ranked[0]["balanced"]["mean"] > result["start"]["balanced"]["mean"])


def test_the_recipe_file_is_the_best_candidate_and_train_accepts_it(searched, tmp_path):
    result, split_data = searched.result, searched.data
    recipe = read_recipe_file(searched.out / "best_recipe.json")
    start = get_recipe(str(searched.start))
    expected = result["best"]["values"] if result["improved"] else {key: getattr(start, key) for key in SPACE}
    assert {key: getattr(recipe, key) for key in SPACE} == expected
    assert (recipe.image_size, recipe.batch_size) == (16, 8)  # the start's own fields are kept
    code = main(
        [
            "train",
            str(split_data),
            "--out",
            str(tmp_path / "run"),
            "--recipe",
            str(searched.out / "best_recipe.json"),
            "--quiet",
        ]
    )
    assert code == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["recipe"]["lr"] == recipe.lr and config["recipe"]["epochs"] == recipe.epochs


def test_a_recipe_file_in_a_condition_is_keyed_by_its_content(tmp_path, start_recipe):
    first = parse_condition(f"q:recipe={start_recipe}")
    assert first.recipe == "scratch" and dict(first.overrides) == {"epochs": 2, "image_size": 16, "batch_size": 8}
    written = parse_condition(f"q:epochs=5,recipe={start_recipe}")
    assert dict(written.overrides)["epochs"] == 5  # a field written in the condition wins over the file


@pytest.mark.parametrize(
    "space_text, message",
    [
        ('{"learning_rate": [0.1]}', "'learning_rate' is not a recipe field"),
        ('{"lr": {"low": 0.1, "high": 0.01}}', "low and high must be finite numbers with low < high"),
        ('{"epochs": {"low": 0, "high": 3}}', "epochs=0 is not a valid recipe"),
        ('{"augment": ["paper", "sideways"]}', "augment='sideways' is not a valid recipe"),
        ("[1, 2]", "give a JSON object"),
        ('{"lr": ', "not a readable search space (JSON)"),
    ],
)
def test_a_bad_space_is_a_one_line_error_naming_the_file(split_data, tmp_path, capsys, space_text, message):
    bad = tmp_path / "bad.json"
    bad.write_text(space_text)
    code = main(["tune", str(split_data), "--out", str(tmp_path / "tuned"), "--space", str(bad), "--quiet"])
    error = capsys.readouterr().err
    assert code == 2 and f"--space {bad}" in error and message in error and "Traceback" not in error
    assert not (tmp_path / "tuned").exists()


def test_a_bad_recipe_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text('{"base": "scratch", "recipe": {"epochs": 2, "speed": 9}}')
    with pytest.raises(UserError, match=r"r\.json: unknown recipe field\(s\) speed"):
        read_recipe_file(bad)
    bad.write_text('{"base": "scratch", "recipe": {"epochs": 0}}')
    with pytest.raises(UserError, match=r"r\.json: --epochs 0: must be at least 1"):
        read_recipe_file(bad)
    with pytest.raises(UserError, match="no such recipe file"):
        read_recipe_file(tmp_path / "missing.json")


def test_without_optuna_the_error_names_the_install_command(split_data, tmp_path, space, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "optuna", None)
    code = main(["tune", str(split_data), "--out", str(tmp_path / "tuned"), "--space", str(space), "--quiet"])
    assert code == 2 and 'pip install -e ".[tune]"' in capsys.readouterr().err
    assert not (tmp_path / "tuned").exists()


@pytest.mark.slow
def test_force_starts_a_search_again_and_keeps_the_users_files(searched, tmp_path):
    split_data, space, start_recipe = searched.data, searched.space, searched.start
    out = tmp_path / "tuned"
    shutil.copytree(searched.out, out)  # a finished search (a copy: the shared one stays as it is)
    (out / "notes.txt").write_text("mine")
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    _tune(split_data, out, space, start_recipe, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert all(p.stat().st_mtime_ns != stamp for p, stamp in stamps.items())  # every run computed again
