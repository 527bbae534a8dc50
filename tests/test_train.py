import json
import os
import pickle

import pytest
import torch
from conftest import interrupt_on_call

import pasture.classify.fit as train_module
from pasture import api
from pasture.classify.fit import train_classifier
from pasture.classify.recipes import get_recipe, lr_factor, with_overrides
from pasture.core.device import cpu_has_native_bf16, effective_precision
from pasture.core.errors import Interrupted, UserError
from pasture.core.runs import atomic_torch_save, load_checkpoint
from pasture.core.stats import wilson_interval
from pasture.data import load_dataset

QUICK = dict(recipe="scratch", epochs=3, batch_size=4, image_size=16, quiet=True)


def test_same_seed_same_numbers(split_data, tmp_path):
    first = api.train(split_data, tmp_path / "a", seed=7, **QUICK)
    second = api.train(split_data, tmp_path / "b", seed=7, **QUICK)
    history_a = (tmp_path / "a" / "history.jsonl").read_text().splitlines()
    history_b = (tmp_path / "b" / "history.jsonl").read_text().splitlines()

    def strip(line):
        return {k: v for k, v in json.loads(line).items() if k != "seconds"}

    assert [strip(line) for line in history_a] == [strip(line) for line in history_b]
    assert first["test_accuracy"] == second["test_accuracy"]
    weights_a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["members"][0]
    weights_b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["members"][0]
    assert all(torch.equal(weights_a[key], weights_b[key]) for key in weights_a)


def test_different_seed_different_weights(split_data):
    dataset = load_dataset(split_data, 16)
    recipe = with_overrides(get_recipe("scratch"), epochs=1, image_size=16)
    one = train_classifier(dataset, recipe, seed=1).model.state_dict()
    two = train_classifier(dataset, recipe, seed=2).model.state_dict()
    assert not torch.equal(one["net.classifier.0.weight"], two["net.classifier.0.weight"])


def test_resume_equals_uninterrupted(split_data, tmp_path, monkeypatch):
    settings = dict(recipe="scratch", augment="paper", epochs=4, batch_size=4, image_size=16, seed=3, quiet=True)
    whole = api.train(split_data, tmp_path / "whole", **settings)

    restore = interrupt_on_call(monkeypatch, train_module, "evaluate_model", 3)  # in the third epoch
    with pytest.raises(Interrupted, match="--resume"):
        api.train(split_data, tmp_path / "cut", **settings)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 2
    assert not (tmp_path / "cut" / "metrics.json").exists()

    restore()
    with pytest.raises(UserError, match="--resume"):  # no silent restart over an interrupted run
        api.train(split_data, tmp_path / "cut", **settings)
    resumed = api.train(split_data, tmp_path / "cut", resume=True, **settings)
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    assert resumed["final_train_loss"] == whole["final_train_loss"]
    weights_whole = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["members"][0]
    weights_resumed = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["members"][0]
    assert all(torch.equal(weights_whole[key], weights_resumed[key]) for key in weights_whole)
    assert len((tmp_path / "cut" / "history.jsonl").read_text().splitlines()) == 4


def test_run_folder_records_everything(split_data, tmp_path):
    metrics = api.train(split_data, tmp_path / "run", seed=1, **QUICK)
    for name in (
        "config.json",
        "history.jsonl",
        "metrics.json",
        "checkpoint.pt",
        "curves.png",
        "confusion.png",
        "top_losses.png",
    ):
        assert (tmp_path / "run" / name).is_file(), name
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["seed"] == 1 and config["recipe"]["epochs"] == 3
    assert config["versions"]["torch"] == torch.__version__
    assert config["data_summary"]["train_counts"] == {"cow": 8, "horse": 8}
    for key in ("train_accuracy", "test_accuracy", "test_ci95", "n_test", "classes", "confusion"):
        assert key in metrics
    assert metrics["n_test"] == 12 and sum(map(sum, metrics["confusion"])) == 12
    correct = sum(metrics["confusion"][i][i] for i in range(2))
    assert metrics["test_accuracy"] == correct / 12
    assert metrics["test_ci95"] == pytest.approx(list(wilson_interval(correct, 12)))  # the interval of those counts
    history = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert len(history) == 3 and {"train_loss", "train_accuracy", "test_accuracy"} <= set(json.loads(history[0]))


def test_learnable_data_is_learned(split_data, tmp_path):
    metrics = api.train(split_data, tmp_path / "run", recipe="scratch", epochs=25, image_size=16, seed=0, quiet=True)
    assert metrics["train_accuracy"] >= 0.9 and metrics["test_accuracy"] >= 0.75


def test_atomic_checkpoint_keeps_the_old_file_when_a_write_fails(tmp_path):
    path = tmp_path / "checkpoint.pt"
    atomic_torch_save({"epoch": 1, "weights": torch.ones(3)}, path)
    with pytest.raises((pickle.PicklingError, AttributeError)):  # which one depends on how pickle meets the lambda
        atomic_torch_save({"epoch": 2, "bad": lambda: None}, path)  # lambdas cannot be saved
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left behind


def test_checkpoints_load_with_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": torch.nn.ReLU()}, path)  # a module is pickled code, refused by weights_only
    with pytest.raises(UserError, match="cannot be loaded"):
        load_checkpoint(path)


def test_lr_schedule_warmup_then_cosine_to_zero():
    recipe = with_overrides(get_recipe("scratch"), epochs=10, warmup_epochs=2)
    assert lr_factor(0, 5, recipe) == pytest.approx(0.1)
    assert lr_factor(9, 5, recipe) == pytest.approx(1.0)
    assert lr_factor(49, 5, recipe) < 0.01
    assert lr_factor(7, 5, get_recipe("paper")) == 1.0


def test_softmax_is_never_applied_before_the_loss(monkeypatch, split_data):
    seen = []

    class SpyFunctional:
        """torch.nn.functional as the training loop sees it, with cross_entropy watched. Only pasture's
        own reference is replaced: torch's shared module is never patched."""

        def __getattr__(self, name):
            return getattr(torch.nn.functional, name)

        @staticmethod
        def cross_entropy(logits, labels, **kwargs):
            seen.append(logits.detach())
            return torch.nn.functional.cross_entropy(logits, labels, **kwargs)

    monkeypatch.setattr(train_module, "F", SpyFunctional())
    dataset = load_dataset(split_data, 16)
    train_classifier(dataset, with_overrides(get_recipe("paper"), epochs=1, image_size=16), seed=0)
    assert len(seen) == 4  # 16 training images in batches of 4: the spy saw every step
    # probabilities would be in [0, 1] and sum to 1; logits are not
    assert not all(torch.allclose(batch.sum(1), torch.ones(batch.shape[0])) for batch in seen)


def test_bf16_precision_is_opt_in_and_trains(split_data, tmp_path):
    dataset = load_dataset(split_data, 16)
    recipe = with_overrides(get_recipe("scratch"), epochs=2, batch_size=4, image_size=16)
    assert recipe.precision == "fp32"  # never on unless asked
    fp32 = train_classifier(dataset, recipe, seed=0).model.state_dict()
    # precision= forces bf16 autocast even where the CPU only emulates it (tiny here): the arithmetic is
    # checked on every machine; which precision a CPU actually gets is checked below.
    bf16_result = train_classifier(dataset, with_overrides(recipe, precision="bf16"), seed=0, precision="bf16")
    bf16 = bf16_result.model.state_dict()
    assert all(value.dtype == torch.float32 for value in bf16.values() if value.is_floating_point())  # fp32 weights
    assert all(torch.isfinite(value).all() for value in bf16.values() if value.is_floating_point())
    assert not torch.equal(fp32["net.features.0.weight"], bf16["net.features.0.weight"])  # it did change rounding
    assert effective_precision("bf16", torch.device("cpu")) == ("bf16" if cpu_has_native_bf16() else "fp32")
    with pytest.raises(UserError, match="--precision fp16: choose one of fp32, bf16"):
        with_overrides(recipe, precision="fp16")
    api.train(split_data, tmp_path / "run", precision="bf16", **QUICK)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["recipe"]["precision"] == "bf16"


def test_class_weights_make_each_class_count_equally():
    from pasture.classify.steps import class_weights

    recipe = get_recipe("scratch")
    assert recipe.balance_classes and not get_recipe("paper").balance_classes  # the report's recipe stays exact
    labels = torch.tensor([0] * 30 + [1] * 10)
    weights = class_weights(labels, 3, recipe)  # class 2 has no images
    assert torch.allclose(weights, torch.tensor([40 / 90, 40 / 30, 1.0]))
    assert torch.allclose(weights[0] * 30, weights[1] * 10)  # equal total weight per class
    assert torch.equal(class_weights(torch.tensor([0, 1, 0, 1]), 2, recipe), torch.ones(2))
    assert class_weights(labels, 2, with_overrides(recipe, balance_classes=False)) is None


def test_balanced_loss_changes_training_only_when_classes_are_unequal(tmp_path):
    from conftest import write_class_folders

    recipe = with_overrides(get_recipe("scratch"), epochs=2, batch_size=4, image_size=16)
    assert recipe.balance_classes
    off = with_overrides(recipe, balance_classes=False)
    equal = load_dataset(write_class_folders(tmp_path / "equal", {"cow": 8, "horse": 8}), 16)
    skewed = load_dataset(write_class_folders(tmp_path / "skewed", {"cow": 14, "horse": 4}), 16)
    key = "net.classifier.5.weight"
    same_on = train_classifier(equal, recipe, seed=0).model.state_dict()[key]
    same_off = train_classifier(equal, off, seed=0).model.state_dict()[key]
    assert torch.allclose(same_on, same_off, atol=1e-6)  # weights of 1 change nothing
    skew_on = train_classifier(skewed, recipe, seed=0).model.state_dict()[key]
    skew_off = train_classifier(skewed, off, seed=0).model.state_dict()[key]
    assert not torch.allclose(skew_on, skew_off, atol=1e-4)


def test_balanced_probe_head_stops_ignoring_the_rare_class():
    from pasture.classify.logistic import fit_linear_head

    generator = torch.Generator().manual_seed(0)
    # Overlapping 1-D classes, 9:1 in training: an unweighted head mostly answers the common class.
    features = torch.cat([torch.randn(180, 1, generator=generator), 1.5 + torch.randn(20, 1, generator=generator)])
    labels = torch.tensor([0] * 180 + [1] * 20)
    test = torch.cat([torch.randn(500, 1, generator=generator), 1.5 + torch.randn(500, 1, generator=generator)])
    test_labels = torch.tensor([0] * 500 + [1] * 500)
    recipe = with_overrides(get_recipe("probe"), head_c=1.0)
    recalls = {}
    for balance in (False, True):
        head, _, _ = fit_linear_head(features, labels, 2, recipe.head_c, balance)
        predicted = head(test).argmax(1)
        recalls[balance] = [float((predicted[test_labels == c] == c).float().mean()) for c in (0, 1)]
    assert recalls[False][1] < 0.3  # the rare class is mostly missed
    assert recalls[True][1] > recalls[False][1] + 0.3
    assert sum(recalls[True]) / 2 > sum(recalls[False]) / 2  # balanced accuracy improves


def test_balance_classes_flag_is_recorded(split_data, tmp_path):
    from pasture.cli import main

    code = main(
        [
            "train",
            str(split_data),
            "--out",
            str(tmp_path / "run"),
            "--recipe",
            "scratch",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--image-size",
            "16",
            "--no-balance-classes",
            "--quiet",
        ]
    )
    assert code == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["recipe"]["balance_classes"] is False


def test_eval_every_scores_the_test_split_on_first_every_kth_and_last_epoch(split_data, tmp_path):
    from pasture.classify.fit import evaluate_after

    assert [e for e in range(1, 11) if evaluate_after(e, 10, 4)] == [1, 4, 8, 10]
    assert all(evaluate_after(e, 10, 1) for e in range(1, 11))
    sparse = api.train(split_data, tmp_path / "sparse", seed=3, eval_every=2, **{**QUICK, "epochs": 5})
    every = api.train(split_data, tmp_path / "every", seed=3, **{**QUICK, "epochs": 5})
    history = [json.loads(line) for line in (tmp_path / "sparse" / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history if "test_accuracy" in row] == [1, 2, 4, 5]
    assert sparse["test_accuracy"] == every["test_accuracy"]  # the same model; only the curve is sparser
    weights_sparse = load_checkpoint(tmp_path / "sparse" / "checkpoint.pt")["members"][0]
    weights_every = load_checkpoint(tmp_path / "every" / "checkpoint.pt")["members"][0]
    assert all(torch.equal(weights_sparse[key], weights_every[key]) for key in weights_every)
    assert (tmp_path / "sparse" / "curves.png").is_file()
    assert json.loads((tmp_path / "sparse" / "config.json").read_text())["eval_every"] == 2
    with pytest.raises(UserError, match="--eval-every 0"):
        api.train(split_data, tmp_path / "bad", eval_every=0, **QUICK)
    assert not (tmp_path / "bad").exists()
