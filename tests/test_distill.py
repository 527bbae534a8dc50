"""Distillation: the student sees the teacher's exact views, matches its outputs, the bank is cached and
reused, transfer images are labelled by the teacher only, and a student is an ordinary run."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_class_folders
from torch import nn

from pasture import api
from pasture.classify.distill import build_bank, distillation_loss, extra_views
from pasture.classify.recipes import get_recipe, with_overrides
from pasture.cli import main
from pasture.core.defaults import cache_root
from pasture.data import load_dataset


class ColourTeacher(nn.Module):
    """A rule, not a network: class 0 when an image is redder than it is blue."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        margin = images[:, 0].mean((1, 2)) - images[:, 2].mean((1, 2))
        return torch.stack([20 * margin, -20 * margin], 1)


def test_the_loss_is_zero_when_the_student_matches_the_teacher_and_labels_count_only_where_known():
    teacher = torch.log_softmax(torch.tensor([[2.0, -1.0], [0.0, 1.0]]), 1)
    nothing = torch.zeros(2, 2)
    assert float(distillation_loss(teacher.clone(), teacher, nothing, temperature=2.0, weight=1.0)) == pytest.approx(
        0, abs=1e-6
    )
    assert float(distillation_loss(-teacher, teacher, nothing, temperature=2.0, weight=1.0)) > 0.1
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    one_label = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # the second view has no label
    expected = -torch.log_softmax(logits, 1)[0, 0]
    assert float(distillation_loss(logits, teacher, one_label, 1.0, weight=0.0)) == pytest.approx(float(expected))


def test_the_bank_gives_teacher_and_student_the_same_views(tmp_path):
    write_class_folders(tmp_path / "data", {"cow": 6, "horse": 6}, size=48)
    pool = load_dataset(tmp_path / "data", 48, test_fraction=0.2).train
    labels = torch.cat([pool.labels[:6], torch.full((len(pool) - 6,), -1)])  # some photos without labels
    recipe = with_overrides(get_recipe("distill"), distill_views=5, image_size=16)
    bank = build_bank(ColourTeacher(), 48, pool.images, labels, 2, recipe, seed=0)
    assert len(bank) == 6 * 5 + (len(pool) - 6) * extra_views(5, 6, len(pool) - 6)
    assert bank.views.shape[1:] == (3, 16, 16) and bank.views.dtype == torch.uint8
    # The teacher's verdict on each view is the verdict on the very view the student gets.
    small = bank.views.float() / 255
    student_view_verdict = (small[:, 0].mean((1, 2)) < small[:, 2].mean((1, 2))).long()
    agreement = (bank.teacher_log_probs.argmax(1) == student_view_verdict).float().mean()
    assert agreement >= 0.97  # (resizing to 16 px can flip a near-tie)
    # A label target only where both mixed photos had labels; unlabelled views still have the teacher.
    assert 0 < int(bank.labelled.sum()) < len(bank)
    assert torch.allclose(bank.label_targets[bank.labelled].sum(1), torch.ones(int(bank.labelled.sum())))
    # Same inputs, same bank (seeded).
    again = build_bank(ColourTeacher(), 48, pool.images, labels, 2, recipe, seed=0)
    assert torch.equal(again.views, bank.views) and torch.equal(again.teacher_log_probs, bank.teacher_log_probs)


def test_the_bank_follows_the_students_class_order():
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    images[:2, 0] = 200  # red: the teacher's class 0
    images[2:, 2] = 200
    recipe = with_overrides(get_recipe("distill"), distill_views=1, image_size=8, augment="none", mixup_alpha=0.0)
    plain = build_bank(ColourTeacher(), 8, images, torch.tensor([0, 0, 1, 1]), 2, recipe)
    swapped = build_bank(
        ColourTeacher(), 8, images, torch.tensor([1, 1, 0, 0]), 2, recipe, class_order=torch.tensor([1, 0])
    )
    assert torch.equal(plain.teacher_log_probs, swapped.teacher_log_probs[:, [1, 0]])


@pytest.mark.slow
def test_a_student_is_an_ordinary_run_and_reuses_the_teachers_bank(split_data, tmp_path, capsys):
    api.train(split_data, tmp_path / "teacher", recipe="scratch", epochs=4, quiet=True)
    extra = tmp_path / "extra"
    write_class_folders(extra, {"any": 5}, size=24, start=300)
    assert (
        main(
            [
                "train",
                str(split_data),
                "--out",
                str(tmp_path / "student"),
                "--teacher",
                str(tmp_path / "teacher"),
                "--unlabeled",
                str(extra),
                "--epochs",
                "3",
                "--distill-views",
                "4",
                "--quiet",
            ]
        )
        == 0
    )
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["recipe"]["name"] == "distill" and config["model"] == "paper-cnn"
    teacher = config["teacher"]
    assert teacher["transfer"] == {"labelled": 16, "unlabeled": {"folder": str(extra.resolve()), "n": 5}}
    assert teacher["views"] == 16 * 4 + 5 * 13 and not teacher["bank_reused"]
    # A second student (another seed, another model) on the same teacher and images reuses the bank.
    metrics = api.train(
        split_data,
        tmp_path / "student2",
        teacher=tmp_path / "teacher",
        unlabeled=extra,
        epochs=2,
        distill_views=4,
        model="resnet-small",
        seed=5,
        quiet=True,
    )
    assert json.loads((tmp_path / "student2" / "config.json").read_text())["teacher"]["bank_reused"]
    assert metrics["n_test"] == 12
    # The student predicts and exports like any run.
    rows = api.predict(tmp_path / "student", [split_data / "test" / "cow"])
    assert len(rows) == 6 and {row["label"] for row in rows} <= {"cow", "horse"}
    capsys.readouterr()


def test_distillation_input_errors(split_data, tmp_path, capsys):
    assert main(["train", str(split_data), "--out", str(tmp_path / "a"), "--unlabeled", str(split_data)]) == 2
    assert "--unlabeled: needs --teacher" in capsys.readouterr().err
    assert main(["train", str(split_data), "--out", str(tmp_path / "b"), "--teacher", str(tmp_path / "nothing")]) == 2
    assert "not a pasture run folder" in capsys.readouterr().err
    api.train(split_data, tmp_path / "teacher", recipe="scratch", epochs=1, quiet=True, classes=["horse", "cow"])
    other = tmp_path / "other"
    write_class_folders(other, {"cow": 4, "sheep": 4})
    assert main(["train", str(other), "--out", str(tmp_path / "c"), "--teacher", str(tmp_path / "teacher")]) == 2
    assert "sheep" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                str(split_data),
                "--out",
                str(tmp_path / "d"),
                "--teacher",
                str(tmp_path / "teacher"),
                "--distill-weight",
                "1.5",
            ]
        )
        == 2
    )
    assert "--distill-weight 1.5" in capsys.readouterr().err
    # Someone else's folder is refused before the teacher scores anything.
    assert (
        main(
            [
                "train",
                str(split_data),
                "--out",
                str(other),
                "--teacher",
                str(tmp_path / "teacher"),
                "--classes",
                "horse,cow",
            ]
        )
        == 2
    )
    assert "holds no pasture run" in capsys.readouterr().err
    assert not (cache_root() / "distill").exists()


@pytest.mark.slow
def test_an_experiment_distils_from_a_teacher_trained_on_each_training_part(split_data, tmp_path):
    # On the default pool (--jobs auto: two workers here): two workers that reach the same teacher and
    # bank together build them once, the second waits for the first (core.store.build_once).
    results = api.experiment(
        split_data,
        tmp_path / "study",
        seeds=2,
        quiet=True,
        conditions=["base:recipe=default,epochs=2", "kd:recipe=distill,teacher=paper,epochs=2,distill_views=2"],
    )
    assert [row["condition"] for row in results["conditions"]] == ["base", "kd"]
    stored = [json.loads(path.read_text()) for path in (tmp_path / "study").glob("runs/*/result.json")]
    teachers = [row["teacher"] for row in stored if "teacher" in row]
    assert len(teachers) == 2 and all(row["recipe"] == "paper" and row["views"] == 32 for row in teachers)
    # Both seeds share the split, so the teacher (seeded by the split) and its bank are computed once.
    assert sorted(row["bank_reused"] for row in teachers) == [False, True]
    assert sorted(row["reused"] for row in teachers) == [False, True]  # the teacher is trained once, too
    assert len({row["seconds"] for row in teachers}) == 1  # the reused one reports the stored teacher's time


@pytest.mark.slow
def test_an_experiment_condition_can_add_unlabelled_photos_to_the_transfer_set(split_data, tmp_path, capsys):
    extra = tmp_path / "extra"
    write_class_folders(extra, {"any": 3}, size=24, start=400)
    api.experiment(
        split_data,
        tmp_path / "study",
        seeds=1,
        quiet=True,
        conditions=[
            "base:recipe=default,epochs=1",
            f"kd:recipe=distill,teacher=paper,epochs=1,distill_views=2,unlabeled={extra}",
        ],
    )
    stored = [json.loads(path.read_text()) for path in (tmp_path / "study").glob("runs/*/result.json")]
    teacher = next(row["teacher"] for row in stored if "teacher" in row)
    assert teacher["views"] == 16 * 2 + 3 * extra_views(2, 16, 3)
    assert (
        main(
            [
                "experiment",
                str(split_data),
                "--out",
                str(tmp_path / "bad"),
                "--conditions",
                f"x:recipe=default,unlabeled={extra}",
            ]
        )
        == 2
    )
    assert "unlabeled=DIR needs teacher=RECIPE" in capsys.readouterr().err
