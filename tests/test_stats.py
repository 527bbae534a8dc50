import math

import pytest

from pasture.core.stats import mean_interval, wilson_interval


def test_wilson_matches_hand_computed_values():
    # 5/10: centre 0.5, half-width 1.96*sqrt(.025+.0096)/1.384 -> (0.2366, 0.7634)
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    # 0/10 keeps a non-zero upper bound (the normal approximation would give 0-0)
    low, high = wilson_interval(0, 10)
    assert low == 0 and high == pytest.approx(0.2775, abs=1e-4)
    # 41 images at 55%: the interval is wide enough to contain 60% and 45%
    low, high = wilson_interval(round(0.55 * 82), 82)
    assert low < 0.45 and high > 0.60


def test_wilson_interval_shrinks_with_n():
    assert (lambda a, b: (b[1] - b[0]) < (a[1] - a[0]))(wilson_interval(20, 40), wilson_interval(200, 400))


def test_wilson_contains_the_observed_proportion_at_the_extremes():
    for n in range(1, 60):
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_mean_interval_uses_t_quantile():
    summary = mean_interval([0.5, 0.6, 0.7])
    assert summary["mean"] == pytest.approx(0.6)
    assert summary["std"] == pytest.approx(0.1)
    assert summary["ci95"][1] - 0.6 == pytest.approx(4.303 * 0.1 / math.sqrt(3), rel=1e-3)


def test_mean_interval_of_accuracies_stays_within_0_and_1():
    # The demo's train accuracies gave ci95 [0.63, 1.04] before the interval was bounded.
    high_end = mean_interval([1.0, 1.0, 0.6])
    assert 0.25 < high_end["ci95"][0] < 0.35 and high_end["ci95"][1] == 1.0
    assert 0.0 <= mean_interval([0.0, 0.0, 0.4])["ci95"][0] == 0.0
    # an unbounded quantity keeps its symmetric t-interval
    free = mean_interval([1.0, 1.0, 0.6], bounds=None)
    assert free["ci95"][1] > 1.0 and free["ci95"][1] - free["mean"] == pytest.approx(free["mean"] - free["ci95"][0])
