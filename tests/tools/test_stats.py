"""tools.stats: the one definition of IQM, the intervals and score normalisation (the statistics
tests of the report, the paper table and the sweep objective live here), and the measured
coverage of the intervals at few seeds."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from ppo_research.tools.stats import (
    AGGREGATES,
    COVERAGE,
    INTERVAL_METHOD,
    MIN_SEEDS_FOR_CI,
    aggregate,
    bootstrap_ci,
    confidence_interval,
    coverage_text,
    interval_label,
    iqm,
    normalize_score,
    performance_profile,
    performance_profile_ci,
    pooled_iqm,
    pooled_iqm_ci,
    probability_of_improvement,
    probability_of_improvement_ci,
    stratified_mean,
    stratified_mean_ci,
    t_interval,
)


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


# -- the aggregate statistics of Agarwal et al. 2021 (stratified over tasks) ---------------------

def brute_stratified(tasks, statistic, n_boot=4000, seed=123, level=0.95):
    """Reference stratified percentile bootstrap: each task's runs resampled on their own."""
    rng = np.random.default_rng(seed)
    values = [statistic([t[rng.integers(0, len(t), len(t))] for t in tasks]) for _ in range(n_boot)]
    return np.percentile(values, [50 * (1 - level), 50 * (1 + level)], axis=0)


def brute_iqm(tasks):
    x = np.sort(np.concatenate(tasks))
    cut = len(x) // 4
    return x[cut:len(x) - cut].mean()


def brute_profile(tasks, taus):
    return np.mean([[np.mean(t > tau) for tau in taus] for t in tasks], axis=0)


def brute_improvement(xs, ys):
    """Every pair of runs compared (x > y counts 1, a tie 1/2), averaged per task, then over tasks."""
    return np.mean([np.mean((x[:, None] > y[None]) + 0.5 * (x[:, None] == y[None])) for x, y in zip(xs, ys)])


def test_interval_labels_need_three_seeds_for_a_ci():
    assert MIN_SEEDS_FOR_CI == 3
    assert interval_label(3) == interval_label(10) == "95% t-interval"  # the mean's
    assert interval_label(3, "iqm") == interval_label(10, "median") == "95% bootstrap CI"
    assert interval_label(2) == interval_label(2, "iqm") == "min–max of 2 seeds"
    assert interval_label(1) is None


def test_iqm_is_scipys_trimmed_mean():
    from scipy.stats import trim_mean

    for n in range(1, 13):
        x = np.random.default_rng(n).normal(size=n)
        assert iqm(x) == pytest.approx(trim_mean(x, 0.25)) == pytest.approx(brute_iqm([x]))


def test_aggregates_over_tasks_by_hand():
    tasks = [np.array([0.0, 1.0, 2.0]), np.array([10.0, 11.0, 12.0])]
    assert pooled_iqm(tasks) == pytest.approx(np.mean([1.0, 2.0, 10.0, 11.0]))  # 6 runs: one cut at each end
    assert performance_profile(tasks, [1.5, 11.0]) == pytest.approx([(1 / 3 + 1) / 2, (0 + 1 / 3) / 2])
    x, y = [np.array([1.0, 2.0, 3.0])], [np.array([0.0, 0.0, 5.0])]
    assert probability_of_improvement(x, y) == pytest.approx(6 / 9)
    assert probability_of_improvement([np.array([1.0, 2.0])], [np.array([1.0, 2.0])]) == 0.5  # ties count half
    two = ([np.array([1.0, 2.0]), np.array([5.0, 5.0])], [np.array([0.0, 3.0]), np.array([4.0, 6.0])])
    assert brute_improvement(*two) == pytest.approx(0.5)
    assert probability_of_improvement(*two) == pytest.approx((0.5 + 0.5) / 2)
    with pytest.raises(ValueError, match="different tasks"):
        probability_of_improvement([np.ones(2)], [np.ones(2), np.ones(2)])


def test_the_bootstrap_is_stratified_by_task():
    # every resample keeps 4 runs of each task, so the pooled IQM of 4 zeros and 4 ones is always
    # 0.5; a bootstrap over the pooled runs would draw 3 zeros and 5 ones and move
    tasks = [np.zeros(4), np.ones(4)]
    assert pooled_iqm_ci(tasks, n_boot=1000) == (0.5, 0.5)
    low, high = performance_profile_ci(tasks, [0.5], n_boot=1000)
    assert (low[0], high[0]) == (0.5, 0.5)
    with pytest.raises(ValueError, match="at least 2 runs per task"):
        pooled_iqm_ci([np.ones(1), np.ones(3)])


def test_stratified_intervals_match_a_brute_force_bootstrap():
    rng = np.random.default_rng(3)
    xs = [rng.normal(0.6, 0.3, 20), rng.normal(0.4, 0.2, 15), rng.normal(0.9, 0.5, 10)]
    ys = [rng.normal(0.5, 0.3, 20), rng.normal(0.4, 0.2, 15), rng.normal(0.6, 0.5, 10)]
    taus = np.linspace(-0.2, 1.6, 10)
    assert pooled_iqm(xs) == pytest.approx(brute_iqm(xs))
    assert performance_profile(xs, taus) == pytest.approx(brute_profile(xs, taus))
    assert probability_of_improvement(xs, ys) == pytest.approx(brute_improvement(xs, ys))
    # two independent Monte Carlo estimates of the same interval agree within their noise
    assert pooled_iqm_ci(xs, n_boot=4000) == pytest.approx(brute_stratified(xs, brute_iqm), abs=0.02)
    low, high = performance_profile_ci(xs, taus, n_boot=4000)
    ref_low, ref_high = brute_stratified(xs, lambda t: brute_profile(t, taus))
    assert np.abs(low - ref_low).max() <= 0.04 and np.abs(high - ref_high).max() <= 0.04
    ref = brute_stratified(xs + ys, lambda t: brute_improvement(t[:3], t[3:]), n_boot=1500)
    assert probability_of_improvement_ci(xs, ys, n_boot=4000) == pytest.approx(ref, abs=0.03)
    assert pooled_iqm_ci(xs, n_boot=500) == pooled_iqm_ci(xs, n_boot=500)  # seeded


# -- the t-interval and the stratified mean ---------------------------------------------------------

def test_t_interval_by_hand():
    x = np.array([1.0, 2.0, 4.0, 7.0])
    half = sps.t.ppf(0.975, 3) * x.std(ddof=1) / math.sqrt(4)
    assert t_interval(x) == pytest.approx((x.mean() - half, x.mean() + half))
    assert confidence_interval(x, "mean") == t_interval(x)
    assert confidence_interval(x, "iqm") == bootstrap_ci(x, "iqm")  # no t-interval for the IQM
    assert INTERVAL_METHOD == {"mean": "t", "median": "percentile", "iqm": "percentile"}
    assert t_interval([3.0, 3.0, 3.0]) == (3.0, 3.0) and t_interval([5.0]) == (5.0, 5.0)
    curves = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])  # a band per column; a constant column
    low, high = t_interval(curves)
    assert low == pytest.approx([2 - sps.t.ppf(0.975, 2) * 2 / math.sqrt(3), 1.0])
    assert high == pytest.approx([2 + sps.t.ppf(0.975, 2) * 2 / math.sqrt(3), 1.0])


def test_stratified_mean_resamples_each_task_on_its_own():
    tasks = [np.array([0.0, 1.0, 2.0]), np.array([10.0, 10.0, 10.0, 10.0])]
    assert stratified_mean(tasks) == pytest.approx(43 / 7)  # the mean of all runs
    # the second task never varies and keeps its 4 runs in every resample: the interval is the
    # first task's resampled mean, moved and weighted as 3/7 of the score
    low, high = stratified_mean_ci(tasks, n_boot=4000)
    ref = brute_stratified(tasks, lambda t: np.concatenate(t).mean())
    assert (low, high) == pytest.approx(tuple(ref), abs=0.02)
    assert 40 / 7 <= low and high <= 46 / 7  # the first task's runs sum to 0..6, the second's to 40
    pooled = bootstrap_ci(np.concatenate(tasks), "mean", method="percentile")  # runs drawn across tasks
    assert pooled[1] - pooled[0] > 2 * (high - low)
    assert stratified_mean_ci([np.zeros(3), np.ones(3)]) == (0.5, 0.5)
    with pytest.raises(ValueError, match="at least 2 runs per task"):
        stratified_mean_ci([np.ones(1), np.ones(3)])


# -- coverage: how often a nominal 95% interval holds the true value --------------------------------

COVERAGE_SEED = 2026
SEED_COUNTS = (3, 5, 10)


def _single_sample_coverage(how: str, method: str, data: str, n: int, draws: int = 2000, chunk: int = 250) -> float:
    """The fraction of ``draws`` data sets of ``n`` values whose interval holds the true value
    (0 for N(0, 1); e^0.5, the mean, for exp(N(0, 1))), each interval from the tools' own
    function; data sets are columns, ``chunk`` at a time (a band per column)."""
    rng = np.random.default_rng([COVERAGE_SEED, n, ("normal", "lognormal").index(data)])
    x, true = rng.normal(0.0, 1.0, (n, draws)), 0.0
    if data == "lognormal":
        x, true = np.exp(x), float(np.exp(0.5))
    hits = 0
    for j in range(0, draws, chunk):
        columns = x[:, j:j + chunk]
        low, high = t_interval(columns) if method == "t" else bootstrap_ci(columns, how, method=method)
        hits += int(np.sum((low <= true) & (true <= high)))
    return hits / draws


def _tasks_coverage(statistic: str, method: str, n: int, draws: int = 1000, chunk: int = 100) -> float:
    """Coverage over tasks: k normal tasks of means spread over -1..1 and standard deviations
    0.5 + |mean|/2, so their mixture is symmetric and the true pooled IQM and mean are 0; for
    P(X > Y) Y is X moved down half a standard deviation, true value Phi(0.5 / sqrt 2)."""
    k = 7 if statistic == "mean over 7 tasks" else 5
    rng = np.random.default_rng([COVERAGE_SEED, n, 7])
    means = np.linspace(-1.0, 1.0, k)
    sds = 0.5 + 0.5 * np.abs(means)
    xs = [rng.normal(m, s, (n, draws)) for m, s in zip(means, sds)]
    ys = [rng.normal(m, s, (n, draws)) - 0.5 * s for m, s in zip(means, sds)]
    true = float(sps.norm.cdf(0.5 / math.sqrt(2))) if statistic.startswith("P(") else 0.0
    hits = 0
    for j in range(0, draws, chunk):
        cut = [t[:, j:j + chunk] for t in xs]
        if statistic == "mean over 7 tasks":
            low, high = stratified_mean_ci(cut, method=method)
        elif statistic == "IQM over 5 tasks":
            low, high = pooled_iqm_ci(cut, method=method)
        else:
            low, high = probability_of_improvement_ci(cut, [t[:, j:j + chunk] for t in ys])
        hits += int(np.sum((low <= true) & (true <= high)))
    return hits / draws


def test_coverage_of_the_intervals_at_few_seeds():
    """Every coverage number the report and the paper table quote (stats.COVERAGE), measured
    again: fixed seeds, so the same numbers every time; a number that moves by more than its
    Monte Carlo error (about 0.01) fails the test."""
    measured = {}
    for key in COVERAGE:
        statistic, method, data = key
        if statistic.startswith("P("):
            continue  # the slow test below
        if "tasks" in statistic:
            measured[key] = {n: _tasks_coverage(statistic, method, n) for n in SEED_COUNTS}
        else:
            measured[key] = {n: _single_sample_coverage(statistic, method, data, n) for n in SEED_COUNTS}
    for key, got in measured.items():
        assert got == pytest.approx(COVERAGE[key], abs=0.015), (key, got)
    # What the numbers say: the interval the report gives a mean (the t-interval) holds 95% for
    # normal data from 3 seeds on; the percentile bootstrap falls short at 3 and 5 seeds, and
    # BCa does not help; the intervals over tasks (percentile, stratified) fall short at 3 runs.
    mean_method = INTERVAL_METHOD["mean"]
    assert all(0.93 <= c <= 0.97 for c in measured[("mean", mean_method, "normal")].values())
    assert measured[("mean", mean_method, "lognormal")][3] > measured[("mean", "percentile", "lognormal")][3] + 0.1
    for how in ("mean", "iqm", "median"):
        assert measured[(how, "percentile", "normal")][3] < 0.8
    assert measured[("mean", "BCa", "normal")][5] < 0.87 and measured[("iqm", "BCa", "normal")][5] < 0.92
    assert measured[("mean over 7 tasks", "percentile", "normal")][3] < 0.9
    assert coverage_text("mean over 7 tasks", "percentile", unit="runs per task") == (
        "measured coverage 0.87 / 0.89 / 0.93 at 3 / 5 / 10 runs per task (normal data)")


@pytest.mark.slow
def test_coverage_of_the_probability_of_improvement():
    """P(X > Y)'s stratified interval (Mann–Whitney in every resample: slow)."""
    key = ("P(X > Y) over 5 tasks", "percentile", "normal")
    got = {n: _tasks_coverage(key[0], key[1], n, draws=400) for n in SEED_COUNTS}
    assert got == pytest.approx(COVERAGE[key], abs=0.02), got
