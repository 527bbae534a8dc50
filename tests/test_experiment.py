"""Experiments: paired statistics, resumable store, k-fold splits, GAN isolation, reports, the demo."""

import json
import os
import random

import pytest
import torch
from conftest import interrupt_on_call

from pasture import api
from pasture.cli import main
from pasture.core.errors import UserError
from pasture.core.stats import bootstrap_interval, paired_comparison, sign_flip_p_value
from pasture.data import fold_dataset, load_pool, stratified_folds
from pasture.study.conditions import parse_condition

QUICK = "recipe=default,epochs=2,image_size=16,batch_size=8"


def test_sign_flip_p_value_by_hand():
    # 4 positive differences: only the all-plus and all-minus patterns are as extreme: 2/16
    assert sign_flip_p_value([0.1, 0.2, 0.1, 0.3]) == pytest.approx(2 / 16)
    # symmetric differences: every pattern is at least as extreme as |sum| = 0
    assert sign_flip_p_value([0.1, -0.1]) == 1.0


def test_a_known_difference_is_detected():
    baseline = [0.60, 0.62, 0.58, 0.61, 0.59, 0.63, 0.60, 0.61]
    better = [value + 0.10 + 0.01 * (i % 3) for i, value in enumerate(baseline)]
    result = paired_comparison(better, baseline)
    assert result["verdict"] == "helps" and result["p_value"] <= 0.01
    assert 0.10 <= result["mean_difference"] <= 0.12
    assert paired_comparison(baseline, better)["verdict"] == "hurts"


def test_identical_conditions_give_no_detectable_difference():
    runs = [0.55, 0.6, 0.5, 0.65, 0.58, 0.61]
    result = paired_comparison(runs, runs)
    assert result["verdict"].startswith("no detectable difference") and result["p_value"] == 1.0


def test_too_few_pairs_can_never_be_significant():
    result = paired_comparison([0.9, 0.9, 0.9], [0.5, 0.5, 0.5])
    assert result["verdict"].startswith("no detectable difference") and "at least 6" in result["verdict"]


def test_bootstrap_interval_covers_the_truth_in_simulation():
    rng = random.Random(1)
    truth, covered = 0.05, 0
    for trial in range(200):
        differences = [rng.gauss(truth, 0.04) for _ in range(10)]
        low, high = bootstrap_interval(differences, samples=2000, seed=trial)
        covered += low <= truth <= high
    # a 95% percentile bootstrap with n=10 under-covers a little; far below 85% would be a bug
    assert covered / 200 >= 0.85


def test_kfold_splits_are_stratified_disjoint_and_complete():
    labels = torch.tensor([0] * 10 + [1] * 7)
    folds = stratified_folds(labels, 3, seed=4)
    everything = torch.cat(folds).tolist()
    assert sorted(everything) == list(range(17))  # disjoint and covering
    for fold in folds:
        counts = torch.bincount(labels[fold], minlength=2).tolist()
        assert counts[0] in (3, 4) and counts[1] in (2, 3)
    assert [f.tolist() for f in stratified_folds(labels, 3, seed=4)] == [f.tolist() for f in folds]
    assert [f.tolist() for f in stratified_folds(labels, 3, seed=5)] != [f.tolist() for f in folds]


def test_fold_dataset_separates_train_and_test(flat_data):
    pool = load_pool(flat_data, 16)
    folds = stratified_folds(pool.train.labels, 4, seed=0)
    dataset = fold_dataset(pool, folds[1])
    assert not set(dataset.train.files) & set(dataset.test.files)
    assert len(dataset.train) + len(dataset.test) == 20 and dataset.train.split == "train"


def test_experiment_recipe_and_model_apply_to_written_conditions_only():
    written = parse_condition("aug:augment=strong", recipe="small-data", model="paper-cnn")
    assert written.recipe == "small-data" and dict(written.overrides) == {"augment": "strong", "model": "paper-cnn"}
    own = parse_condition("mine:recipe=paper,model=resnet-small", recipe="small-data", model="paper-cnn")
    assert own.recipe == "paper" and dict(own.overrides) == {"model": "resnet-small"}
    assert parse_condition("paper", recipe="small-data").recipe == "paper"


@pytest.mark.slow
def test_parallel_jobs_give_the_same_numbers_as_one_job(split_data, tmp_path):
    conditions = [f"a:{QUICK}", f"b:{QUICK},augment=paper"]
    # torch's thread count changes float summation order; each of 2 jobs gets cores // 2 threads, so
    # the serial run uses the same count, and then every number must be equal, not merely close.
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    try:
        serial = api.experiment(split_data, tmp_path / "one", conditions=conditions, seeds=2, quiet=True, jobs=1)
        serial_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads_before)
    parallel = api.experiment(split_data, tmp_path / "two", conditions=conditions, seeds=2, quiet=True, jobs=2)
    assert parallel["runs_computed"] == 4
    # each study records the threads its runs had (so that --jobs auto can keep them when it grows)
    recorded = [
        json.loads((tmp_path / name / "experiment.json").read_text())["threads_per_run"] for name in ("one", "two")
    ]
    assert recorded == [serial_threads, max(1, (os.cpu_count() or 1) // 2)]
    for one, two in zip(serial["conditions"], parallel["conditions"]):
        assert one["runs"] == two["runs"] == 2
        assert one["accuracies"] == two["accuracies"]
    for name in ("one", "two"):
        assert count_runs(tmp_path / name) == 4
    losses = [
        sorted(
            json.loads(path.read_text())["record"]["final_train_loss"]
            for path in (tmp_path / name / "runs").glob("*/result.json")
        )
        for name in ("one", "two")
    ]
    assert losses[0] == losses[1]


def test_parallel_runs_start_the_gans_first_and_need_no_gan_to_wait(monkeypatch):
    # The order in which the local pool is given the runs (a synchronous stand-in for the process
    # pool records it): the first run of each GAN first, then the runs that need no GAN, and the other
    # runs of a GAN only once its first run (which trains and stores it) has finished.
    from concurrent.futures import Future

    import pasture.study.engines as engines
    from pasture.study.conditions import Condition
    from pasture.study.design import Replicate, RunTask

    order = []

    class RecordingPool:
        def __init__(self, max_workers, mp_context):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, function, task):
            order.append(task.key)
            future = Future()
            future.set_result({"key": task.key})
            return future

    monkeypatch.setattr(engines, "ProcessPoolExecutor", RecordingPool)

    def task(key, gan=None, repeat=0):
        replicate = Replicate(index=repeat, seed=0, repeat=repeat)
        return RunTask(
            key=key, data="d", out="o", layout="classes", condition=Condition(key, gan_preset=gan), replicate=replicate
        )

    todo = [
        task("plain0"),
        task("gan0", "default", 0),
        task("gan1", "default", 0),
        task("paper_gan0", "paper", 0),
        task("plain1"),
        task("gan_other_split", "default", 1),
        task("gan2", "default", 0),
    ]
    finished = []
    engines.LocalEngine(jobs=2).run(todo, lambda stored, remaining: finished.append(stored["key"]))
    leaders = ["gan0", "paper_gan0", "gan_other_split"]
    assert order[:3] == leaders and order[3:5] == ["plain0", "plain1"]
    assert sorted(order[5:]) == ["gan1", "gan2"]  # queued after gan0 finished, never before
    assert sorted(finished) == sorted(t.key for t in todo)


def test_parse_condition():
    condition = parse_condition("mine:recipe=paper,augment=paper,epochs=3,gan=default,iterations=5,ratio=0.2")
    assert condition.recipe == "paper" and dict(condition.overrides) == {"augment": "paper", "epochs": 3}
    assert condition.gan_preset == "default" and dict(condition.gan_overrides) == {"iterations": 5}
    assert condition.synthetic_ratio == 0.2
    assert parse_condition("paper+dcgan").gan_preset == "paper"
    ssl = parse_condition("ssl:recipe=small-data,selfsup_epochs=50")
    assert dict(ssl.overrides) == {"selfsup_epochs": 50}
    with pytest.raises(UserError, match="unknown key"):
        parse_condition("x:colour=red")
    with pytest.raises(UserError, match="unknown condition"):
        parse_condition("nonsense")


def count_runs(folder):
    return len(list((folder / "runs").glob("*/result.json")))


@pytest.mark.slow
def test_resume_skips_finished_runs_and_adding_a_condition_runs_only_it(split_data, tmp_path):
    out = tmp_path / "study"
    first = api.experiment(split_data, out, conditions=[f"a:{QUICK}", f"b:{QUICK},augment=paper"], seeds=2, quiet=True)
    assert first["runs_computed"] == 4 and count_runs(out) == 4
    again = api.experiment(split_data, out, conditions=[f"a:{QUICK}", f"b:{QUICK},augment=paper"], seeds=2, quiet=True)
    assert again["runs_computed"] == 0
    assert again["conditions"][0]["accuracies"] == first["conditions"][0]["accuracies"]
    more = api.experiment(
        split_data,
        out,
        conditions=[f"a:{QUICK}", f"b:{QUICK},augment=paper", f"c:{QUICK},lr=0.003"],
        seeds=2,
        quiet=True,
    )
    assert more["runs_computed"] == 2 and count_runs(out) == 6
    pairs = {(c["condition"], c["baseline"]) for c in more["comparisons"]}
    assert pairs == {("b", "a"), ("c", "a"), ("c", "b")}
    assert "Every other pair" in (out / "report.md").read_text()


@pytest.mark.slow
def test_interrupted_experiment_keeps_finished_runs(split_data, tmp_path, monkeypatch):
    import pasture.study.engines as engines
    from pasture.core.errors import Interrupted

    restore = interrupt_on_call(monkeypatch, engines, "execute_run", 3)
    with pytest.raises(Interrupted, match="again"):
        api.experiment(
            split_data, tmp_path / "s", conditions=[f"a:{QUICK}", f"b:{QUICK},lr=0.002"], seeds=2, quiet=True, jobs=1
        )  # the interruption is patched into this process
    assert count_runs(tmp_path / "s") == 2
    restore()
    done = api.experiment(
        split_data, tmp_path / "s", conditions=[f"a:{QUICK}", f"b:{QUICK},lr=0.002"], seeds=2, quiet=True, jobs=1
    )
    assert done["runs_computed"] == 2


def test_two_names_for_the_same_settings_share_their_runs(split_data, tmp_path):
    results = api.experiment(
        split_data, tmp_path / "same", conditions=[f"a:{QUICK}", f"b:{QUICK}"], seeds=2, quiet=True
    )
    assert results["runs_computed"] == 2
    assert [row["condition"] for row in results["conditions"]] == ["a", "b"]
    assert results["comparisons"][0]["mean_difference"] == 0


@pytest.mark.slow
def test_kfold_experiment_gan_never_sees_the_folds_test_part(flat_data, tmp_path, monkeypatch):
    import pasture.study.gan_store as gan_store

    seen = []
    real = gan_store.train_gan

    def spy(train, *args, **kwargs):
        seen.append(set(train.files))
        return real(train, *args, **kwargs)

    monkeypatch.setattr(gan_store, "train_gan", spy)
    condition = f"g:{QUICK},gan=default,image_size_gan=16,iterations=3,ngf=4,ndf=4,per_class=4"
    results = api.experiment(
        flat_data, tmp_path / "cv", conditions=[f"base:{QUICK}", condition], seeds=1, folds=3, quiet=True, jobs=1
    )  # the spy lives in this process
    assert results["replicates"] == 3 and len(seen) == 3
    pool = load_pool(flat_data, 16)
    folds = stratified_folds(pool.train.labels, 3, seed=0)
    for fold, gan_files in zip(folds, seen):
        test_files = {pool.train.files[i] for i in fold.tolist()}
        assert gan_files and not gan_files & test_files
        assert gan_files | test_files == set(pool.train.files)


@pytest.mark.slow
def test_report_files_hold_the_table(split_data, tmp_path, capsys):
    out = tmp_path / "rep"
    assert (
        main(
            [
                "experiment",
                str(split_data),
                "--out",
                str(out),
                "--seeds",
                "2",
                "--quiet",
                "--conditions",
                f"base:{QUICK}",
                f"aug:{QUICK},augment=paper",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "aug vs base" in printed and "report.html" in printed
    markdown = (out / "report.md").read_text()
    assert "| base |" in markdown and "| aug |" in markdown and "Against base (paired)" in markdown
    page = (out / "report.html").read_text()
    assert "<td>aug</td>" in page and "data:image/png;base64," in page and "src='figures" not in page
    # Each condition's first run shows its top losses (the run wrote them while it still had the model).
    assert "top losses: base" in page and "top losses: aug" in page
    assert len(list(out.glob("runs/*/top_losses.png"))) == 4
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("condition,replicate") and len(rows) == 5
    results = json.loads((out / "results.json").read_text())
    assert [row["condition"] for row in results["conditions"]] == ["base", "aug"]
    assert results["comparisons"][0]["n_pairs"] == 2 and len(results["comparisons"]) == 1


def test_experiment_input_errors(split_data, tmp_path, capsys):
    assert (
        main(
            ["experiment", str(split_data), "--out", str(tmp_path / "x"), "--folds", "3", "--conditions", f"a:{QUICK}"]
        )
        == 2
    )
    assert "--folds" in capsys.readouterr().err
    assert main(["experiment", "paper", "too", "many", "--out", str(tmp_path / "y")]) == 2
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("x")
    assert main(["experiment", str(split_data), "--out", str(tmp_path / "busy"), "--conditions", f"a:{QUICK}"]) == 2
    assert "holds no pasture experiment" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quick", "--seeds", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "report.html" in printed and "gan vs baseline" in printed
    assert (tmp_path / "demo" / "report" / "report.html").is_file()
    assert len(list((tmp_path / "demo" / "data" / "train" / "stripes").glob("*.png"))) == 24


@pytest.mark.slow
def test_experiment_eval_every_thins_the_curves_only(split_data, tmp_path):
    conditions = [f"a:{QUICK},epochs=4"]
    every = api.experiment(split_data, tmp_path / "every", conditions=conditions, seeds=1, quiet=True)
    sparse = api.experiment(split_data, tmp_path / "sparse", conditions=conditions, seeds=1, quiet=True, eval_every=3)
    assert every["conditions"][0]["accuracies"] == sparse["conditions"][0]["accuracies"]
    [result_file] = (tmp_path / "sparse" / "runs").glob("*/result.json")
    history = json.loads(result_file.read_text())["record"]["history"]
    assert [row["epoch"] for row in history if "test_accuracy" in row] == [1, 3, 4]
    with pytest.raises(UserError, match="--eval-every 0"):
        api.experiment(split_data, tmp_path / "bad", conditions=conditions, seeds=1, quiet=True, eval_every=0)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit) as exit_info:  # argparse rejects it before anything runs
        main(["experiment", str(split_data), "--out", str(tmp_path / "bad"), "--eval-every", "0"])
    assert exit_info.value.code == 2


@pytest.mark.real_auto_jobs
def test_jobs_auto_runs_one_thread_per_core_and_keeps_a_studys_threads(tmp_path, monkeypatch):
    from pasture.study.engines import AUTO_JOBS_MAX, LocalEngine, auto_jobs

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)  # 4 usable cores
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)  # what one run at a time uses there
    assert auto_jobs("cpu") == 4 and LocalEngine(4).threads_per_run() == 1
    assert auto_jobs("mps") == 1
    # a CUDA GPU is shared by up to one run per 4 GiB of its memory
    for gib, expected in ((80, 4), (8, 2), (3, 1)):
        monkeypatch.setattr(
            torch.cuda,
            "get_device_properties",
            lambda device, gib=gib: type("Properties", (), {"total_memory": gib * 2**30})(),
        )
        assert auto_jobs("cuda:0") == expected
    study = tmp_path / "study"
    assert auto_jobs("cpu", study) == 4  # no folder yet
    study.mkdir()
    (study / "experiment.json").write_text(json.dumps({"threads_per_run": 4}))
    assert auto_jobs("cpu", study) == 4  # no stored runs: nothing to keep
    (study / "runs" / "k").mkdir(parents=True)
    (study / "runs" / "k" / "result.json").write_text("{}")
    assert auto_jobs("cpu", study) == 1  # its runs had all 4 threads: one at a time
    (study / "experiment.json").write_text(json.dumps({"threads_per_run": 2}))
    assert auto_jobs("cpu", study) == 2
    (study / "experiment.json").write_text(json.dumps({"title": "made before threads were recorded"}))
    assert auto_jobs("cpu", study) == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    assert auto_jobs("cpu") == AUTO_JOBS_MAX
    engine = LocalEngine("auto")
    engine.settle("cpu", None)
    assert engine.jobs == AUTO_JOBS_MAX and engine.threads_per_run() == 64 // AUTO_JOBS_MAX
    with pytest.raises(UserError, match="--jobs 0"):
        LocalEngine(0)


def test_the_cli_runs_studies_with_jobs_auto_by_default(split_data, tmp_path, capsys):
    out = tmp_path / "study"
    arguments = ["experiment", str(split_data), "--out", str(out), "--conditions", f"a:{QUICK}", "--seeds", "2"]
    assert main([*arguments, "--jobs", "1", "--quiet", "--device", "cpu"]) == 0
    threads = json.loads((out / "experiment.json").read_text())["threads_per_run"]
    assert threads == torch.get_num_threads()
    # grown without --jobs: auto keeps the stored runs' threads, so the study still runs one at a time;
    # a new study runs one single-threaded run per core
    grown = api.experiment(split_data, out, conditions=[f"a:{QUICK}"], seeds=3, dry_run=True, device="cpu")
    fresh = api.experiment(
        split_data, tmp_path / "fresh", conditions=[f"a:{QUICK}"], seeds=3, dry_run=True, device="cpu"
    )
    assert grown["plan"]["parallel"] == 1
    assert fresh["plan"]["parallel"] == min(torch.get_num_threads(), 8)
    with pytest.raises(SystemExit) as stop:
        main(["experiment", str(split_data), "--out", str(out), "--jobs", "none"])
    assert stop.value.code == 2 and "--jobs" in capsys.readouterr().err


def test_a_run_in_this_process_gives_back_its_thread_count(split_data, tmp_path):
    # A pool's only (or last) run runs in the calling process with the pool's share of threads; a
    # notebook must get its own thread count back afterwards.
    threads_before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        results = api.experiment(split_data, tmp_path / "one", conditions=[f"a:{QUICK}"], seeds=1, quiet=True, jobs=64)
        assert results["runs_computed"] == 1
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads_before)
