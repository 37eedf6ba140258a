"""The statistics every results tool uses: aggregates over runs, confidence intervals, normalised
scores, and the aggregate statistics of Agarwal et al. 2021 ("Deep RL at the edge of the
statistical precipice").

One definition each, shared by the ablation report, the paper table and the Optuna study
objective, so a number named "IQM" or "normalised" means the same thing in every table.

Over the runs of one setting:

- ``aggregate(values, how)``: ``mean``, ``median`` or ``iqm`` (interquartile mean: the mean of
  the middle half, ``scipy.stats.trim_mean`` cutting floor(n/4) values at each end: none of 3
  values, 1 of 5, 2 of 10; a cut by count, no quantile is interpolated);
- ``confidence_interval(values, how)``: the interval the report gives an aggregate over seeds
  (``INTERVAL_METHOD``): the Student-t interval for the mean (``t_interval``), the percentile
  bootstrap for the median and the IQM (``bootstrap_ci``); a 2-D array gives a band per column;
- ``t_interval(values)``: mean ± t(n-1) x standard error, ``scipy.stats.ttest_1samp``'s
  ``confidence_interval``;
- ``bootstrap_ci(values, how)``: the percentile bootstrap interval of an aggregate over the
  first axis (runs or seeds), ``scipy.stats.bootstrap``; a 2-D array gives a band per column
  (a learning curve, the runs resampled together). Its ends are the 2.5% and 97.5% quantiles of
  the resampled statistics by ``scipy.stats.quantile``'s default ``linear`` method (numpy's
  default, Hyndman & Fan type 7);
- ``interval_label(n, how)``: what an interval over ``n`` seeds may be called: a CI needs at
  least ``MIN_SEEDS_FOR_CI`` (3) seeds; 2 seeds give their min–max, 1 seed no interval;
- ``normalize_score(score, random, reference)``: ``(score - random) / (reference - random)``,
  so a random policy scores 0 and the reference 1.

Over tasks (envs), each with its own runs (``tasks``: a list of 1-D arrays of run scores, one
per task; normalised scores when the tasks are different envs):

- ``stratified_mean(tasks)``: the mean of all runs of all tasks (the PPO paper's Table 1 score);
- ``pooled_iqm(tasks)``: the IQM of all runs of all tasks together;
- ``performance_profile(tasks, taus)``: the fraction of runs scoring above each threshold
  (each task's empirical survival function, ``scipy.stats.ecdf``, averaged over tasks);
- ``probability_of_improvement(x_tasks, y_tasks)``: P(a run of X beats a run of Y on the same
  task, ties count half), the Mann–Whitney U statistic over n*m (``scipy.stats.mannwhitneyu``),
  averaged over tasks;
- ``*_ci`` versions of the four: the stratified percentile bootstrap interval, each task's
  runs resampled on their own (``scipy.stats.bootstrap`` with one sample per task,
  ``paired=False``), so every resample keeps each task's number of runs.

**What a nominal 95% interval covers at few seeds.** ``COVERAGE`` holds the measured coverage
of each interval method on synthetic data whose true value is known (normal data, and skewed
lognormal data for the mean), at 3, 5 and 10 seeds (runs per task);
``tests/tools/test_stats.py`` measures every number again (fixed seeds, deterministic) and fails
if one moves. The percentile bootstrap is too narrow at few seeds: 0.74 at 3 seeds and 0.84 at 5
for a mean of normal data. At 3 seeds its interval of the mean, the median or the IQM is the
min–max of the three values (each extreme is resampled three times with chance 1/27, more than
2.5%), which misses the centre with chance 2/8. BCa is no better at these sizes. The t-interval
holds 0.95 for normal data at every n (and 0.81-0.85 on the skewed data, where the percentile
bootstrap gives 0.64-0.81), so the mean over seeds gets the t-interval; the median and the IQM
(no t-interval) and the statistics over tasks keep the percentile bootstrap, and every table
says how much it covers (``coverage_text``).

``rliable`` (the paper's library) is not used: it pulls arch, statsmodels, pandas and seaborn
into the install; its three statistics are the scipy calls above. Every bootstrap is seeded: the
same input always gives the same interval.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Optional, Sequence, Union

import numpy as np
from scipy import stats as sps

AGGREGATES = ("mean", "median", "iqm")
#: fewer seeds than this get no "95% CI": 2 seeds show their min–max, 1 seed no interval
MIN_SEEDS_FOR_CI = 3
LEVEL = 0.95
#: the interval ``confidence_interval`` gives each aggregate over seeds: ``t`` (Student-t) or a
#: ``scipy.stats.bootstrap`` method (``percentile``)
INTERVAL_METHOD = {"mean": "t", "median": "percentile", "iqm": "percentile"}
METHOD_NAMES = {"t": "Student-t interval", "percentile": "percentile bootstrap", "BCa": "BCa bootstrap"}

#: Measured coverage of the nominal 95% intervals: (statistic, method, data) -> {n: the fraction
#: of intervals that held the true value}. n is the number of seeds (runs per task for the
#: statistics over tasks). Data: ``normal`` N(0, 1) draws, ``lognormal`` exp(N(0, 1)) (skewed,
#: true mean e^0.5); over tasks, normal tasks of means -1..1 (spread evenly) and standard
#: deviations 0.5 + |mean|/2, X one half standard deviation above Y for P(X > Y). Measured by
#: tests/tools/test_stats.py (numpy seed 2026; 2000 draws per cell, 1000 over tasks, 400 for
#: P(X > Y); a Monte Carlo error of about ±0.01, ±0.015 for P(X > Y)):
#: test_coverage_of_the_intervals_at_few_seeds checks every number but P(X > Y)'s, which the
#: slow test_coverage_of_the_probability_of_improvement checks. Command, commit and date:
#: docs/logging.md.
COVERAGE: dict[tuple[str, str, str], dict[int, float]] = {
    ("mean", "t", "normal"): {3: 0.947, 5: 0.947, 10: 0.951},
    ("mean", "t", "lognormal"): {3: 0.829, 5: 0.807, 10: 0.848},
    ("mean", "percentile", "normal"): {3: 0.741, 5: 0.836, 10: 0.900},
    ("mean", "percentile", "lognormal"): {3: 0.638, 5: 0.708, 10: 0.810},
    ("mean", "BCa", "normal"): {3: 0.716, 5: 0.836, 10: 0.896},
    ("median", "percentile", "normal"): {3: 0.741, 5: 0.932, 10: 0.938},
    ("iqm", "percentile", "normal"): {3: 0.741, 5: 0.897, 10: 0.934},
    ("iqm", "BCa", "normal"): {3: 0.715, 5: 0.889, 10: 0.934},
    ("mean over 7 tasks", "percentile", "normal"): {3: 0.867, 5: 0.894, 10: 0.932},
    ("mean over 7 tasks", "BCa", "normal"): {3: 0.860, 5: 0.897, 10: 0.933},
    ("IQM over 5 tasks", "percentile", "normal"): {3: 0.875, 5: 0.916, 10: 0.947},
    ("P(X > Y) over 5 tasks", "percentile", "normal"): {3: 0.908, 5: 0.945, 10: 0.970},
}


def coverage_text(statistic: str, method: str, data: str = "normal", unit: str = "seeds") -> str:
    """``"measured coverage 0.76 / 0.83 / 0.90 at 3 / 5 / 10 seeds (normal data)"``, from
    ``COVERAGE``; "coverage not measured" for a combination it lacks."""
    measured = COVERAGE.get((statistic, method, data))
    if not measured:
        return "coverage not measured"
    ns = sorted(measured)
    return (f"measured coverage {' / '.join(f'{measured[n]:.2f}' for n in ns)} at "
            f"{' / '.join(map(str, ns))} {unit} ({data} data)")


def _scalar(value) -> Union[float, np.ndarray]:
    return float(value) if np.ndim(value) == 0 else np.asarray(value)


def iqm(values, axis: int = 0) -> Union[float, np.ndarray]:
    """Interquartile mean along ``axis``: ``scipy.stats.trim_mean`` cutting 25% at each end
    (floor(n/4) values)."""
    return _scalar(sps.trim_mean(np.asarray(values, float), 0.25, axis=axis))


def aggregate(values, how: str = "mean", axis: int = 0) -> Union[float, np.ndarray]:
    """``mean``, ``median`` or ``iqm`` of ``values`` along ``axis`` (a float for 1-D input)."""
    if how not in AGGREGATES:
        raise ValueError(f"aggregate {how!r}: expected one of {', '.join(AGGREGATES)}")
    x = np.asarray(values, float)
    if x.shape[axis] == 0:
        raise ValueError("aggregate of no values")
    if how == "iqm":
        return iqm(x, axis)
    return _scalar(x.mean(axis=axis) if how == "mean" else np.median(x, axis=axis))


def interval_label(n: int, how: str = "mean", level: float = LEVEL) -> Optional[str]:
    """What an interval of ``aggregate(x, how)`` over ``n`` seeds is: ``"95% t-interval"`` (the
    mean) or ``"95% bootstrap CI"`` (median, IQM) from ``MIN_SEEDS_FOR_CI`` seeds on,
    ``"min–max of 2 seeds"`` for two, None (no interval) for one."""
    if n >= MIN_SEEDS_FOR_CI:
        return f"{level:.0%} {'t-interval' if INTERVAL_METHOD[how] == 't' else 'bootstrap CI'}"
    return "min–max of 2 seeds" if n == 2 else None


def _bootstrap(statistic: Callable, samples: Sequence[np.ndarray], n_boot: int, level: float, seed: int,
               method: str = "percentile"):
    """``scipy.stats.bootstrap`` interval (``percentile`` or ``BCa``) over the first axis; each
    sample resampled on its own."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        result = sps.bootstrap(tuple(samples), statistic, n_resamples=n_boot, confidence_level=level,
                               method=method, vectorized=True, paired=False, axis=0,
                               rng=np.random.default_rng(seed))
    return _scalar(result.confidence_interval.low), _scalar(result.confidence_interval.high)


def _degenerate(x: np.ndarray) -> Optional[tuple]:
    """The interval of fewer than 2 values, or of identical ones: the value itself."""
    if len(x) < 2:
        first = x[0] if len(x) else math.nan
        return (_scalar(first), _scalar(first))
    if np.all(x == x[0]):  # nothing to resample (scipy would warn of degenerate data)
        return (_scalar(x[0]), _scalar(x[0]))
    return None


def bootstrap_ci(values, how: str = "mean", n_boot: int = 2000, level: float = LEVEL,
                 seed: int = 0, method: str = "percentile") -> tuple:
    """Bootstrap interval (percentile unless ``method="BCa"``) of ``aggregate(values, how)``,
    resampling the first axis (``scipy.stats.bootstrap``).

    1-D input gives ``(low, high)`` floats; with one value the interval is that value. A 2-D
    array (runs x steps) gives two arrays: a band per column, the runs resampled together.
    Whether an interval over few seeds may be called a CI is ``interval_label``'s business.
    """
    x = np.asarray(values, float)
    degenerate = _degenerate(x)
    if degenerate is not None:
        return degenerate
    return _bootstrap(lambda s, axis: aggregate(s, how, axis=axis), [x], n_boot, level, seed, method)


def t_interval(values, level: float = LEVEL) -> tuple:
    """Student-t interval of the mean over the first axis: mean ± t(level, n-1) x s/sqrt(n)
    (``scipy.stats.ttest_1samp(...).confidence_interval``). A 2-D array gives a band per column;
    one value, or identical values, give that value."""
    x = np.asarray(values, float)
    degenerate = _degenerate(x)
    if degenerate is not None:
        return degenerate
    with warnings.catch_warnings():  # a column of identical values: standard error 0, interval = the value
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = sps.ttest_1samp(x, 0.0, axis=0).confidence_interval(level)
    return _scalar(ci.low), _scalar(ci.high)


def confidence_interval(values, how: str = "mean", n_boot: int = 2000, level: float = LEVEL,
                        seed: int = 0) -> tuple:
    """The interval the report gives ``aggregate(values, how)`` over seeds, by
    ``INTERVAL_METHOD``: the t-interval for the mean, the percentile bootstrap for the median
    and the IQM. Shapes as ``bootstrap_ci``."""
    if INTERVAL_METHOD[how] == "t":
        return t_interval(values, level)
    return bootstrap_ci(values, how, n_boot, level, seed, INTERVAL_METHOD[how])


def normalize_score(score: float, random: Optional[float], reference: Optional[float]) -> float:
    """``(score - random) / (reference - random)``: random policy = 0, reference = 1; nan when
    either is missing or they are equal (no scale)."""
    if random is None or reference is None or reference == random:
        return math.nan
    return (float(score) - random) / (reference - random)


# -- over tasks (Agarwal et al. 2021; the PPO paper's Table 1 score) ------------------------------

def _tasks(tasks, batched: bool = False) -> list[np.ndarray]:
    """Each task's runs as an array; ``batched``: a task may be 2-D (runs x columns), one
    statistic per column."""
    out = [np.asarray(t, float) if batched else np.asarray(t, float).ravel() for t in tasks]
    if not out or any(len(t) == 0 for t in out):
        raise ValueError("every task needs at least one run")
    return out


def _check_resamplable(tasks: list[np.ndarray]) -> None:
    if min(len(t) for t in tasks) < 2:
        raise ValueError("a stratified bootstrap needs at least 2 runs per task")


def _pooled_mean(*samples, axis):
    return np.concatenate(samples, axis=axis).mean(axis=axis)


def stratified_mean(tasks) -> Union[float, np.ndarray]:
    """The mean of all runs of all tasks (equal runs per task: the mean of the tasks' means)."""
    return _scalar(_pooled_mean(*_tasks(tasks, batched=True), axis=0))


def stratified_mean_ci(tasks, n_boot: int = 2000, level: float = LEVEL, seed: int = 0,
                       method: str = "percentile") -> tuple:
    """Stratified bootstrap interval of ``stratified_mean``: each task's runs resampled on their
    own, so every resample keeps each task's number of runs (and weight). A task may be 2-D (runs
    x columns): one interval per column."""
    tasks = _tasks(tasks, batched=True)
    _check_resamplable(tasks)
    return _bootstrap(_pooled_mean, tasks, n_boot, level, seed, method)


def pooled_iqm(tasks) -> float:
    """The IQM of all runs of all tasks together."""
    return iqm(np.concatenate(_tasks(tasks)))


def _pooled_iqm(*samples, axis):
    return sps.trim_mean(np.concatenate(samples, axis=axis), 0.25, axis=axis)


def pooled_iqm_ci(tasks, n_boot: int = 2000, level: float = LEVEL, seed: int = 0,
                  method: str = "percentile") -> tuple:
    """Stratified bootstrap interval of ``pooled_iqm``. A task may be 2-D (runs x columns): one
    interval per column."""
    tasks = _tasks(tasks, batched=True)
    _check_resamplable(tasks)
    return _bootstrap(_pooled_iqm, tasks, n_boot, level, seed, method)


def performance_profile(tasks, taus) -> np.ndarray:
    """For each threshold tau: the fraction of runs scoring above tau (> tau), per task from its
    empirical survival function, averaged over tasks."""
    taus = np.asarray(taus, float)
    return np.mean([sps.ecdf(t).sf.evaluate(taus) for t in _tasks(tasks)], axis=0)


def performance_profile_ci(tasks, taus, n_boot: int = 2000, level: float = LEVEL,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified percentile bootstrap band of ``performance_profile`` (one interval per tau)."""
    tasks, taus = _tasks(tasks), np.asarray(taus, float)
    _check_resamplable(tasks)

    def statistic(*samples, axis):  # each sample (..., runs) -> (taus, ...)
        fractions = [(np.moveaxis(s, axis, -1)[..., None] > taus).mean(axis=-2) for s in samples]
        return np.moveaxis(np.mean(fractions, axis=0), -1, 0)

    return _bootstrap(statistic, tasks, n_boot, level, seed)


def _u_fraction(x: np.ndarray, y: np.ndarray, axis: int = -1):
    """P(X > Y) + P(X = Y)/2 from the Mann–Whitney U statistic of x against y."""
    u = sps.mannwhitneyu(x, y, axis=axis, method="asymptotic").statistic
    return u / (x.shape[axis] * y.shape[axis])


def probability_of_improvement(x_tasks, y_tasks) -> float:
    """P(a run of X scores above a run of Y on the same task; ties count half), averaged over
    tasks; ``x_tasks`` and ``y_tasks`` list the same tasks in the same order."""
    xs, ys = _tasks(x_tasks), _tasks(y_tasks)
    if len(xs) != len(ys):
        raise ValueError(f"probability of improvement over different tasks ({len(xs)} vs {len(ys)})")
    return float(np.mean([_u_fraction(x, y) for x, y in zip(xs, ys)]))


def probability_of_improvement_ci(x_tasks, y_tasks, n_boot: int = 2000, level: float = LEVEL,
                                  seed: int = 0) -> tuple[float, float]:
    """Stratified percentile bootstrap interval of ``probability_of_improvement``: the runs of X
    and of Y on each task resampled on their own. A task may be 2-D (runs x columns): one interval
    per column."""
    xs, ys = _tasks(x_tasks, batched=True), _tasks(y_tasks, batched=True)
    if len(xs) != len(ys):
        raise ValueError(f"probability of improvement over different tasks ({len(xs)} vs {len(ys)})")
    _check_resamplable(xs + ys)

    def statistic(*samples, axis):
        pairs = zip(samples[0::2], samples[1::2])
        return np.mean([_u_fraction(x, y, axis) for x, y in pairs], axis=0)

    return _bootstrap(statistic, [s for pair in zip(xs, ys) for s in pair], n_boot, level, seed)
