"""Groups (photo sources) in evaluation: per-group accuracy from a CSV or from sub-folders, and clear
errors for a table that does not fit the data."""

from __future__ import annotations

import json

import pytest
from conftest import make_image

from pasture import api
from pasture.cli import main

TRAIN = ["--recipe", "scratch", "--epochs", "2", "--batch-size", "4", "--image-size", "16", "--quiet"]


@pytest.fixture
def run(split_data, tmp_path):
    assert main(["train", str(split_data), "--out", str(tmp_path / "run"), *TRAIN]) == 0
    return tmp_path / "run"


@pytest.fixture
def sourced(tmp_path):
    """DATA/<class>/<source>/: cows from barn and field, horses from field and track."""
    root = tmp_path / "sourced"
    for label, sources in (("cow", ("barn", "field")), ("horse", ("field", "track"))):
        for number, source in enumerate(sources):
            folder = root / label / source
            folder.mkdir(parents=True)
            for index in range(3 + number):
                make_image(label, 300 + 10 * number + index).save(folder / f"{label}_{source}_{index}.png")
    return root


def test_per_group_accuracy_from_subfolders_adds_up(run, sourced, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(run), str(sourced), "--groups", "subfolders", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    groups = report["per_group"]
    assert sorted(groups) == ["barn", "field", "track"]
    assert {name: row["n"] for name, row in groups.items()} == {"barn": 3, "field": 4 + 3, "track": 4}
    assert sum(row["n"] for row in groups.values()) == report["n"] == 14
    correct = sum(round(row["accuracy"] * row["n"]) for row in groups.values())
    assert correct == round(report["accuracy"] * report["n"])
    assert set(groups["field"]["per_class"]) == {"cow", "horse"} and set(groups["barn"]["per_class"]) == {"cow"}
    for row in groups.values():
        assert row["ci95"][0] <= row["accuracy"] <= row["ci95"][1]


def test_per_group_accuracy_from_a_manifest_and_the_text_output(run, split_data, capsys):
    rows = ["file,label,source"]
    for split in ("train", "test"):
        for path in sorted((split_data / split).rglob("*.png")):
            relative = path.relative_to(split_data).as_posix()
            rows.append(f"{relative},{path.parent.name},{'cam-a' if int(path.stem[-3:]) % 2 else 'cam-b'}")
    (split_data / "MANIFEST.csv").write_text("\n".join(rows) + "\n")
    report = api.evaluate(run, split_data, groups=str(split_data / "MANIFEST.csv"), group_column="source")
    assert sorted(report["per_group"]) == ["cam-a", "cam-b"] and report["n"] == 12
    assert sum(row["n"] for row in report["per_group"].values()) == 12
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                str(run),
                str(split_data),
                "--groups",
                str(split_data / "MANIFEST.csv"),
                "--group-column",
                "source",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "per group (photo source):" in out and "cam-a (" in out and "95% CI" in out
    assert main(["evaluate", str(run), str(split_data), "--json"]) == 0
    assert "per_group" not in json.loads(capsys.readouterr().out)  # only when groups are given


@pytest.mark.parametrize(
    "table,column,fragment",
    [
        (None, "source", "no such file"),
        ("file,label,camera\n", "source", "needs the columns file and source"),
        ("file,label,source\ntest/cow/cow_100.png,cow,a\n", "source", "have no source there"),
    ],
)
@pytest.mark.slow
def test_a_group_table_that_does_not_fit_is_one_line(run, split_data, tmp_path, capsys, table, column, fragment):
    path = tmp_path / "groups.csv"
    if table is not None:
        path.write_text(table)
    capsys.readouterr()
    assert main(["evaluate", str(run), str(split_data), "--groups", str(path), "--group-column", column]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_subfolders_needs_the_class_group_layout(run, split_data, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(run), str(split_data), "--groups", "subfolders"]) == 2
    assert "DATA/<class>/<group>/" in capsys.readouterr().err


QUICK = "recipe=default,epochs=1,image_size=16,batch_size=8"


def test_leave_one_group_out_trains_without_the_group_it_tests_on(sourced, tmp_path, monkeypatch):
    import pasture.study.run as run_module

    seen = []
    real = run_module.train_classifier

    def spy(dataset, *args, **kwargs):
        seen.append(
            (
                {path.split("/")[-2] for path in dataset.train.files},
                {path.split("/")[-2] for path in dataset.test.files},
            )
        )
        return real(dataset, *args, **kwargs)

    monkeypatch.setattr(run_module, "train_classifier", spy)
    results = api.experiment(
        sourced,
        tmp_path / "logo",
        conditions=[f"a:{QUICK}"],
        seeds=1,
        folds="groups",
        groups="subfolders",
        quiet=True,
        jobs=1,
    )  # the spy lives in this process
    assert results["replicates"] == 3 and len(seen) == 3
    assert sorted(tuple(test) for _, test in seen) == [("barn",), ("field",), ("track",)]
    assert all(not train & test for train, test in seen)  # never trained on the group it is scored on
    row = results["conditions"][0]
    assert sorted(row["per_group"]) == ["barn", "field", "track"] and row["balanced"]["n"] == 3
    report = (tmp_path / "logo" / "report.md").read_text()
    assert "leave one group out" in report and "On groups the model never saw" in report


def test_leave_one_group_out_needs_groups(sourced, tmp_path, capsys):
    assert (
        main(
            [
                "experiment",
                str(sourced),
                "--out",
                str(tmp_path / "x"),
                "--folds",
                "groups",
                "--quiet",
                "--conditions",
                f"a:{QUICK}",
            ]
        )
        == 2
    )
    assert "--groups" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["experiment", str(sourced), "--out", str(tmp_path / "y"), "--folds", "sources"])


def test_group_split_keeps_every_group_on_one_side_and_every_class_on_both():
    import torch

    from pasture.core.errors import UserError
    from pasture.data.splits import group_split

    groups = ["a"] * 6 + ["b"] * 5 + ["c"] * 4 + ["d"] * 6 + ["e"] * 5 + ["f"] * 4
    labels = torch.tensor([0] * 15 + [1] * 15)
    for seed in range(5):
        train, test = group_split(labels, groups, 0.5, seed)
        assert not {groups[i] for i in train.tolist()} & {groups[i] for i in test.tolist()}
        assert len(train) + len(test) == 30
        for label in (0, 1):
            assert (labels[train] == label).any() and (labels[test] == label).any()
            assert int((labels[test] == label).sum()) <= 0.5 * 15 + 6  # at most the fraction, plus one forced group
    with pytest.raises(UserError, match="one group only"):
        group_split(torch.tensor([0, 0, 1, 1]), ["a", "a", "b", "c"], 0.5, 0)


def test_train_split_by_group_tests_on_sources_it_never_saw(sourced, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(sourced), "--out", str(run), *TRAIN, "--groups", "subfolders", "--split-by-group"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    unseen = config["data_summary"]["unseen_test_groups"]
    assert unseen and metrics["unseen"]["groups"] == unseen and metrics["unseen"]["n"] == metrics["n_test"]
    assert not set(config["data_summary"]["train_groups"]) & set(config["data_summary"]["test_groups"])
    assert "on sources the model never saw" in out and sorted(metrics["per_group"]) == sorted(unseen)


def _styled(folder, label, style, count, start):
    """Images of `label` drawn in the colours of `style` (cows reddish, horses bluish): a source whose
    look says the class, or contradicts it."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(start, start + count):
        make_image(style, index).save(folder / f"{label}_{style}_{index}.png")


def test_train_warns_when_unseen_sources_fall_below_the_seen_ones(tmp_path, capsys):
    data = tmp_path / "data"
    for split, start in (("train", 0), ("test", 100)):
        _styled(data / split / "cow" / "barn", "cow", "cow", 10 if split == "train" else 6, start)
        _styled(data / split / "horse" / "stable", "horse", "horse", 10 if split == "train" else 6, start)
    _styled(data / "test" / "cow" / "elsewhere", "cow", "horse", 8, 200)  # cows in horse colours
    _styled(data / "test" / "horse" / "elsewhere", "horse", "cow", 8, 200)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(data),
                "--out",
                str(run),
                "--recipe",
                "scratch",
                "--epochs",
                "15",
                "--image-size",
                "16",
                "--quiet",
                "--groups",
                "subfolders",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["unseen"]["groups"] == ["elsewhere"] and metrics["unseen"]["n"] == 16
    assert metrics["unseen"]["seen"]["n"] == 12 and metrics["unseen"]["gap_beyond_intervals"]
    assert "learned the photo sources" in captured.err
    assert "elsewhere" in (run / "MODEL_CARD.md").read_text()


def test_leave_one_group_out_intervals_and_pairs_are_over_groups_not_runs():
    from types import SimpleNamespace

    from pasture.study.design import Replicate
    from pasture.study.report import summarise

    groups = ["barn", "field", "track"]
    replicates = [
        Replicate(index=r * 3 + g, seed=r, repeat=r, fold=g, folds=3, group=name)
        for r in range(2)
        for g, name in enumerate(groups)
    ]
    # Condition b beats a by 10 points on every group; seeds move both by the same amount.
    accuracy = {"a": {"barn": 0.5, "field": 0.6, "track": 0.7}, "b": {"barn": 0.6, "field": 0.7, "track": 0.8}}

    def result(condition, replicate):
        value = accuracy[condition][replicate.group] + 0.02 * replicate.seed
        return {
            "condition": condition,
            "replicate": {"index": replicate.index, "group": replicate.group},
            "seconds": 1.0,
            "record": {
                "test_accuracy": value,
                "test_correct": 1,
                "n_test": 10,
                "train_accuracy": 1.0,
                "per_class": {"cow": {"accuracy": value}},
            },
        }

    conditions = [SimpleNamespace(name="a", description=""), SimpleNamespace(name="b", description="")]
    rows, comparisons = summarise(conditions, replicates, [result(c.name, r) for c in conditions for r in replicates])
    over_groups = rows[0]["balanced_over_groups"]
    assert over_groups["n"] == 3 and over_groups["mean"] == pytest.approx(0.61)
    assert rows[0]["group_means"] == pytest.approx([0.51, 0.61, 0.71])
    assert comparisons[0]["n_pairs"] == 3 and comparisons[0]["unit"].startswith("held-out group")
    assert comparisons[0]["mean_difference"] == pytest.approx(0.10)
