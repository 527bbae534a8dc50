"""Brief training on the real cowhorse-dev photos beside the checkout (skipped when they are absent)."""

import pytest
from conftest import SHARED_DEV

from pasture import api
from pasture.core.stats import wilson_interval

pytestmark = pytest.mark.skipif(
    not SHARED_DEV.is_dir(), reason=f"{SHARED_DEV} not found (shared dev photos live beside the checkout)"
)


def test_train_evaluate_predict_on_dev_photos(tmp_path):
    run = tmp_path / "dev"
    metrics = api.train(SHARED_DEV, run, recipe="scratch", epochs=2, seed=0, quiet=True)
    assert metrics["n_train"] == 100 and metrics["n_test"] == 100
    assert metrics["classes"] == ["cow", "horse"]
    assert metrics["test_accuracy"] == metrics["test_correct"] / 100
    assert metrics["test_ci95"] == pytest.approx(list(wilson_interval(metrics["test_correct"], 100)))
    assert sum(map(sum, metrics["confusion"])) == 100 and {row["n"] for row in metrics["per_class"].values()} == {50}
    assert len(metrics["history"]) == 2
    report = api.evaluate(run, SHARED_DEV)
    assert report["n"] == 100 and report["correct"] == metrics["test_correct"]  # the same model, the same images
    rows = api.predict(run, [SHARED_DEV / "test" / "cow"])
    assert len(rows) == 50 and {row["label"] for row in rows} <= {"cow", "horse"}


def test_export_of_a_dev_run_matches_it_on_the_real_test_photos(tmp_path):
    pytest.importorskip("onnxruntime", reason='the export extra is not installed (pip install -e ".[export]")')
    run = tmp_path / "dev"
    api.train(SHARED_DEV, run, recipe="scratch", epochs=1, seed=0, quiet=True)
    info = api.export(run)
    assert info["checked_on"] == "32 of the run's 100 test images" and info["parity_max_abs"] < 1e-4
