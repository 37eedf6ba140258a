"""tools.stats: the one definition of IQM, the bootstrap intervals and score normalisation (the
statistics tests of the report and the sweep objective live here)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ppo_research.tools.stats import AGGREGATES, aggregate, bootstrap_ci, iqm, normalize_score


def test_aggregates_by_hand():
    assert aggregate([1.0, 2.0, 3.0], "mean") == 2.0
    assert aggregate([5.0, 1.0, 100.0, 2.0], "median") == 3.5
    # IQM of 8 values drops the 2 lowest and 2 highest; of 3 values drops none
    assert aggregate([-100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1000.0], "iqm") == 3.5
    assert aggregate([1.0, 2.0, 30.0], "iqm") == 11.0
    assert iqm([1.0, 2.0, 3.0, 100.0]) == pytest.approx(2.5) and iqm([5.0]) == 5.0
    assert set(AGGREGATES) == {"mean", "median", "iqm"}
    with pytest.raises(ValueError, match="expected one of"):
        aggregate([1.0], "max")


def test_aggregates_along_an_axis_match_each_column():
    x = np.random.default_rng(1).normal(size=(9, 4))
    for how in AGGREGATES:
        assert np.allclose(aggregate(x, how, axis=0), [aggregate(x[:, j], how) for j in range(4)])
    assert np.allclose(iqm(x, axis=1), [iqm(row) for row in x])


def test_bootstrap_intervals():
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert bootstrap_ci([4.0]) == (4.0, 4.0)
    low, high = bootstrap_ci(np.arange(20.0))
    assert low < 9.5 < high and high - low < 10
    assert bootstrap_ci(np.arange(20.0)) == (low, high)  # seeded: the same input, the same interval
    outlier = [*range(19), 1000.0]
    assert bootstrap_ci(outlier, "iqm")[1] < 19 < bootstrap_ci(outlier, "mean")[1]  # IQM ignores the outlier


def test_bootstrap_band_of_curves_resamples_runs_together():
    curves = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0], [4.0, 5.0, 6.0]])  # 3 runs x 3 steps, parallel
    low, high = bootstrap_ci(curves, n_boot=500)
    assert low.shape == high.shape == (3,)
    assert np.allclose(high - low, (high - low)[0])  # runs resampled as wholes: the band keeps its width
    assert (low <= curves.mean(axis=0)).all() and (curves.mean(axis=0) <= high).all()
    one_low, one_high = bootstrap_ci(curves[:1])
    assert np.array_equal(one_low, curves[0]) and np.array_equal(one_high, curves[0])


def test_normalised_scores():
    assert normalize_score(110.0, 10.0, 210.0) == pytest.approx(0.5)
    assert normalize_score(-300.0, -1300.0, -300.0) == 1.0
    assert math.isnan(normalize_score(5.0, None, 10.0))
    assert math.isnan(normalize_score(5.0, 1.0, 1.0))
