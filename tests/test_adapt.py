"""Fitting a new camera (issue 43): label spreading follows a planted drift that the head gets wrong, the
guard keeps the original when the adaptation looks wrong, `ask` writes LABELS.csv and `adapt --labels`
reads it back, and bad rows are one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import make_image, write_split_data

from pasture import api
from pasture.classify.adapt import LABELS_ONLY, ask_order, guard, label_spreading, target_labels
from pasture.classify.familiarity import Familiarity
from pasture.classify.logistic import fit_logistic_head
from pasture.cli import main


def drifted(seed: int = 0):
    """Training photos of 2 classes at x0 = -1 / +1, and a target that drifts away from them in steps
    (a camera that changes bit by bit): at its far end, both classes have moved +1.6 along x0 and +6
    along x1, so a linear head fitted on the training photos calls the far cows horses; the graph of
    neighbours still leads back to the right class, step by step."""
    generator = torch.Generator().manual_seed(seed)
    dims = 8
    train_labels = torch.tensor([0] * 30 + [1] * 30)
    train = torch.zeros(60, dims)
    train[:, 0] = train_labels.float() * 2 - 1
    train += 0.15 * torch.randn(60, dims, generator=generator)
    steps = torch.linspace(0, 1, 40).repeat(2)
    target_labels = torch.tensor([0] * 40 + [1] * 40)
    target = torch.zeros(80, dims)
    target[:, 0] = target_labels.float() * 2 - 1 + 1.6 * steps
    target[:, 1] = 6 * steps
    target += 0.15 * torch.randn(80, dims, generator=generator)
    offset = torch.zeros(dims)
    offset[2] = 10.0  # features away from the origin, as pooled activations are (cosine distances need it)
    return train + offset, train_labels, target + offset, target_labels


def test_label_spreading_follows_a_drift_the_head_gets_wrong():
    train, train_labels, target, target_labels = drifted()
    head = fit_logistic_head(train, train_labels, 2, 1.0, True)
    with torch.no_grad():
        by_head = (head(target).argmax(1) == target_labels).float().mean()
    known = torch.cat([train_labels, torch.full((80,), -1)])
    spread = label_spreading(torch.cat([train, target]), known, 2)[60:]
    by_graph = (spread.argmax(1) == target_labels).float().mean()
    assert by_head < 0.85 and by_graph > by_head + 0.1
    assert torch.allclose(spread.sum(1), torch.ones(80))


def look_alikes(seed: int = 0):
    """A camera whose cows look like the training set's horses (as the breed-set cows, brown on grass,
    look like horses on grass): 10 target cows sit among the 30 training horses, far from the 6 training
    cows; the head (a stand-in's probabilities, 0.8 cow) is right about them, the graph is not."""
    generator = torch.Generator().manual_seed(seed)
    dims = 8
    train_labels = torch.tensor([0] * 6 + [1] * 30)
    train = torch.zeros(36, dims)
    train[:, 0] = train_labels.float() * 2 - 1
    target = torch.zeros(10, dims)
    target[:, 0] = 1.0  # where the horses are
    train, target = (
        train + 0.15 * torch.randn(36, dims, generator=generator),
        target + 0.15 * torch.randn(10, dims, generator=generator),
    )
    offset = torch.zeros(dims)
    offset[2] = 10.0
    head_probabilities = torch.tensor([[0.8, 0.2]]).repeat(10, 1)
    return train + offset, train_labels, target + offset, head_probabilities


def test_labels_that_show_spreading_wrong_make_it_step_aside():
    train, train_labels, target, head = look_alikes()
    spread, how = target_labels(train, train_labels, target, 2, {}, head)
    assert how == "spreading" and (spread == 1).all()  # the graph calls every one of these cows a horse
    chosen, how = target_labels(train, train_labels, target, 2, {0: 0, 3: 0}, head)
    assert how == LABELS_ONLY  # both labelled photos are cows: the head had them, spreading did not
    assert chosen.tolist() == [0, -1, -1, 0] + [-1] * 6  # only the labelled photos join
    # labels that agree with spreading (the head wrong on them) keep it
    chosen, how = target_labels(train, train_labels, target, 2, {0: 1, 3: 1}, head)
    assert how == "spreading" and (chosen == 1).all()


def test_the_guard_refuses_a_collapse_and_a_landslide_but_not_a_single_class_camera():
    classes = ["cow", "horse"]
    mixed = torch.tensor([0, 1] * 10)
    why, report = guard(mixed, torch.ones(20, dtype=torch.long), classes)  # all horse, where the original spread
    assert why is not None and "horse" in why and report["shares_after"]["horse"] == 1.0
    why, _ = guard(mixed, 1 - mixed, classes)  # every label flipped
    assert why is not None and "changes 100%" in why
    farm = torch.zeros(20, dtype=torch.long)  # a dairy farm's camera: cows, and the original said so
    farm[:1] = 1
    why, report = guard(farm, torch.zeros(20, dtype=torch.long), classes)
    assert why is None and report["changed"] == pytest.approx(0.05)


def test_ask_picks_the_uncertain_and_spreads_them():
    probabilities = torch.tensor([[0.5, 0.5]] * 5 + [[0.99, 0.01]] * 15)
    features = torch.eye(20) + 5.0
    features[1] = features[0]  # a copy of the most uncertain photo: one label would do for both
    order = ask_order(probabilities, features, 3)
    assert len(order) == 3 and all(index < 5 for index in order) and not {0, 1} <= set(order)


@pytest.fixture(scope="module")
def camera(tmp_path_factory):
    """A probe run on the generated cows and horses, and a new camera's folder of photos of both (any
    layout: two subfolders with meaningless names)."""
    root = tmp_path_factory.mktemp("camera")
    data = write_split_data(root / "data")
    run = root / "run"
    api.train(data, run, recipe="probe", image_size=48, quiet=True)
    photos = root / "new-camera"
    for folder, labels in (("day", ("cow", "horse")), ("night", ("horse",))):
        (photos / folder).mkdir(parents=True)
        for label in labels:
            for index in range(6):
                make_image(label, 500 + index).save(photos / folder / f"{label[0]}{index}.png")
    return run, photos


def test_adapt_makes_an_ordinary_run_that_records_what_it_did(camera, tmp_path, capsys):
    run, photos = camera
    assert main(["adapt", str(run), str(photos), "--out", str(tmp_path / "adapted"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "18 new photos: estimated classes cow 33%, horse 67%" in out and "adapted run:" in out
    config = json.loads((tmp_path / "adapted" / "config.json").read_text())
    assert config["adapted"]["n"] == 18 and config["adapted"]["from"] == str(run.resolve())
    assert config["identity"]["adapted"]["fingerprint"]
    rows = api.predict(tmp_path / "adapted", [photos])  # an ordinary run: predict needs nothing new
    assert len(rows) == 18 and sum(row["label"] == "horse" for row in rows) == 12
    # the new camera's photos join the familiarity bank: the adapted run knows them
    assert len(Familiarity.load(tmp_path / "adapted").bank) == 16 + 18
    before = sum(row["familiar"] for row in api.predict(run, [photos]))
    assert sum(row["familiar"] for row in rows) >= before and all(row["familiar"] for row in rows)


def test_ask_writes_labels_csv_and_adapt_reads_it_back(camera, tmp_path, capsys):
    run, photos = camera
    labels = tmp_path / "labels.csv"
    assert main(["ask", str(run), str(photos), "--k", "4", "--out", str(labels)]) == 0
    assert "label these 4 first" in capsys.readouterr().out and (tmp_path / "ask.png").is_file()
    with labels.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [list(row) for row in rows][0] == ["file", "label", "guess", "confidence"]
    assert len(rows) == 4 and all(row["label"] == "" and (photos / row["file"]).is_file() for row in rows)
    for row in rows:  # the user fills in the labels: the truth, from the file names
        row["label"] = "cow" if row["file"].split("/")[-1].startswith("c") else "horse"
    with labels.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["file", "label", "guess", "confidence"])
        writer.writeheader()
        writer.writerows(rows)
    result = api.adapt(run, photos, tmp_path / "adapted", labels=labels)
    assert result["labelled"] == 4 and not result["kept_original"]


def test_adapt_with_labels_only_adds_just_the_labelled_photos(camera, tmp_path, monkeypatch):
    from pasture.classify import new_camera

    run, photos = camera
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\nday/c0.png,cow\nnight/h1.png,horse\n")
    said = []

    def spreading_refuted(train, train_labels, target, classes, labelled, head):
        chosen = torch.full((len(target),), -1)
        chosen[list(labelled)] = torch.tensor(list(labelled.values()))
        return chosen, LABELS_ONLY

    monkeypatch.setattr(new_camera, "target_labels", spreading_refuted)
    result = api.adapt(run, photos, tmp_path / "adapted", labels=labels, warn=said.append)
    assert not result["kept_original"] and result["method"] == new_camera.METHOD_LABELS_ONLY
    assert any("labelled photos only" in line for line in said)
    assert len(Familiarity.load(tmp_path / "adapted").bank) == 16 + 2  # the 2 labelled photos join, not all 18
    config = json.loads((tmp_path / "adapted" / "config.json").read_text())
    assert config["adapted"]["method"] == new_camera.METHOD_LABELS_ONLY and config["adapted"]["labelled"] == 2


@pytest.mark.parametrize(
    "row, said",
    [
        ("day/missing.png,cow", "row 2: no photo 'day/missing.png'"),
        ("day/c0.png,zebra", "row 2: 'zebra' is not a class"),
    ],
)
def test_a_bad_labels_row_is_one_line_naming_the_row(camera, tmp_path, capsys, row, said):
    run, photos = camera
    labels = tmp_path / "labels.csv"
    labels.write_text(f"file,label\n{row}\n")
    assert main(["adapt", str(run), str(photos), "--labels", str(labels), "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err.strip()
    assert said in err and len(err.splitlines()) == 1 and not (tmp_path / "new").exists()


def test_the_guard_keeps_the_original_and_writes_nothing(camera, tmp_path, capsys, monkeypatch):
    run, photos = camera

    def everything_is_a_cow(features, known, num_classes, k=10, prior=None):
        scores = torch.zeros(len(features), num_classes)
        scores[:, 0] = 1.0
        return scores

    monkeypatch.setattr("pasture.classify.adapt.label_spreading", everything_is_a_cow)
    assert main(["adapt", str(run), str(photos), "--out", str(tmp_path / "new"), "--quiet"]) == 1
    assert "not adapted: it" in capsys.readouterr().out and not (tmp_path / "new").exists()


def test_adapt_refuses_a_run_that_is_not_a_probe(split_data, tmp_path, capsys):
    api.train(split_data, tmp_path / "cnn", recipe="scratch", epochs=1, image_size=16, quiet=True)
    assert main(["adapt", str(tmp_path / "cnn"), str(split_data), "--out", str(tmp_path / "new")]) == 2
    assert "works on probe and finetune runs" in capsys.readouterr().err


def test_target_photos_start_from_the_heads_probabilities():
    """A cluster of target photos that no training photo is near: spread from nothing it gets no class
    (uniform scores); started from the head's probabilities it keeps the head's word."""
    generator = torch.Generator().manual_seed(0)
    base = torch.zeros(3, 6)
    base[0, 0], base[1, 1], base[2, 2] = 5.0, 5.0, 5.0  # three directions: cows, horses, the new camera
    labels = torch.tensor([0] * 12 + [1] * 12)
    train = base[labels] + 0.1 * torch.randn(24, 6, generator=generator)
    target = base[2] + 0.1 * torch.randn(12, 6, generator=generator)  # 12: each one's 10 nearest are its own
    from pasture.classify.adapt import spread_to_target

    plain = spread_to_target(train, labels, target, 2)
    head = torch.tensor([[0.3, 0.7]]).repeat(12, 1)
    started = spread_to_target(train, labels, target, 2, head_probabilities=head)
    assert torch.allclose(plain, torch.full((12, 2), 0.5))
    assert (started.argmax(1) == 1).all()


def test_an_interrupted_adapt_says_how_to_go_on(camera, tmp_path, monkeypatch):
    """Ctrl-C inside adapt's work is Interrupted naming what to do (core.runs.opened_run: the one place a
    run folder's life is written, for train, gan train and adapt); the folder stays unfinished, and
    --force starts the adaptation over (which a held lock would refuse)."""
    from pasture.classify import new_camera
    from pasture.core.errors import Interrupted

    run, photos = camera
    real = new_camera.finish_run

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(new_camera, "finish_run", stopped)
    with pytest.raises(Interrupted, match="run the same command with --force"):
        api.adapt(run, photos, tmp_path / "cut")
    assert (tmp_path / "cut" / "config.json").is_file() and not (tmp_path / "cut" / "metrics.json").exists()
    monkeypatch.setattr(new_camera, "finish_run", real)
    result = api.adapt(run, photos, tmp_path / "cut", force=True)
    assert not result["kept_original"] and (tmp_path / "cut" / "metrics.json").is_file()


# ------------------------------------------------------------------ a fine-tuned run: self-training


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A fine-tuned run (EfficientNet-Lite0 end to end, 32 px, one epoch) and a folder of new photos."""
    from conftest import write_class_folders

    root = tmp_path_factory.mktemp("finetuned")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PASTURE_CACHE_DIR", str(root / "cache"))
        data = write_split_data(root / "data")
        api.train(data, root / "run", recipe="finetune", image_size=32, epochs=1, quiet=True)
    photos = write_class_folders(root / "new-camera" / "any-layout", {"a": 3, "b": 3}, size=40, start=70)
    return root / "run", photos.parent


def _count_train(run) -> int:
    return json.loads((run / "metrics.json").read_text())["n_train"]


def test_a_finetuned_run_is_trained_again_with_the_photos_it_labels_surely(finetuned, tmp_path, monkeypatch):
    from pasture.classify import self_training

    run, photos = finetuned
    monkeypatch.setattr(self_training, "CONFIDENT", 0.0)  # every new photo counts as sure
    monkeypatch.setattr(self_training, "guard", lambda before, after, classes: guard(before, before, classes))
    result = api.adapt(run, photos, tmp_path / "adapted")
    assert not result["kept_original"] and result["confident"] == 6 and result["method"] == self_training.METHOD
    adapted = tmp_path / "adapted"
    assert _count_train(adapted) == _count_train(run) + 6  # the 16 training photos and the 6 new ones
    config = json.loads((adapted / "config.json").read_text())
    assert config["adapted"]["confident"] == 6 and config["recipe"]["pretrained"] == "finetune"
    assert len(api.predict(adapted, [photos])) == 6  # an ordinary run
    assert "0% of the original's labels" in (adapted / "MODEL_CARD.md").read_text()  # the guard's report


def test_a_finetuned_run_with_no_sure_label_keeps_the_original_unless_photos_are_labelled(
    finetuned, tmp_path, monkeypatch, capsys
):
    from pasture.classify import self_training

    run, photos = finetuned
    monkeypatch.setattr(self_training, "CONFIDENT", 1.01)  # no probability reaches it
    assert main(["adapt", str(run), str(photos), "--out", str(tmp_path / "none"), "--quiet"]) == 1
    assert "labels none of these photos" in capsys.readouterr().out and not (tmp_path / "none").exists()
    names = sorted(path.relative_to(photos).as_posix() for path in photos.rglob("*.png"))
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n" + f"{names[0]},cow\n{names[-1]},horse\n{names[1]},\n")
    monkeypatch.setattr(self_training, "guard", lambda before, after, classes: guard(before, before, classes))
    result = api.adapt(run, photos, tmp_path / "labelled", labels=labels)
    assert result["labelled"] == 2 and result["confident"] == 0
    assert _count_train(tmp_path / "labelled") == _count_train(run) + 2


def test_the_guard_leaves_no_adapted_finetuned_run(finetuned, tmp_path, monkeypatch):
    from pasture.classify import self_training

    run, photos = finetuned
    monkeypatch.setattr(self_training, "CONFIDENT", 0.0)
    monkeypatch.setattr(self_training, "guard", lambda before, after, classes: ("it changes too much", {"n": 6}))
    result = api.adapt(run, photos, tmp_path / "refused")
    assert result["kept_original"] and result["why"] == "it changes too much"
    assert not (tmp_path / "refused").exists()


def test_a_student_is_not_adapted_and_is_told_the_route(split_data, tmp_path, capsys):
    api.train(split_data, tmp_path / "teacher", recipe="scratch", epochs=1, image_size=16, quiet=True)
    api.train(split_data, tmp_path / "student", teacher=tmp_path / "teacher", epochs=1, quiet=True)
    assert main(["adapt", str(tmp_path / "student"), str(split_data), "--out", str(tmp_path / "new")]) == 2
    error = capsys.readouterr().err
    assert "learns from a teacher" in error and "--teacher ADAPTED --unlabeled" in error


def test_ask_orders_a_finetuned_runs_photos_by_its_own_doubt(finetuned, tmp_path):
    run, photos = finetuned
    asked = api.ask(run, photos, 3, tmp_path / "labels.csv")
    assert len(asked["rows"]) == 3 and len({row["file"] for row in asked["rows"]}) == 3
    assert (tmp_path / "ask.png").is_file()
    by_file = {Path(row["file"]).resolve(): row for row in api.predict(run, [photos])}
    first = by_file[(photos / asked["rows"][0]["file"]).resolve()]
    # the first to label is the photo the run is least sure of (two classes: the lowest top probability)
    assert first["probability"] == pytest.approx(min(row["probability"] for row in by_file.values()), abs=1e-6)
    assert asked["rows"][0]["guess"] == first["label"]
    assert asked["rows"][0]["confidence"] == pytest.approx(first["probability"], abs=1e-5)
