"""The statistics every results tool uses: aggregates over runs, bootstrap intervals, normalised
scores, and the aggregate statistics of Agarwal et al. 2021 ("Deep RL at the edge of the
statistical precipice").

One definition each, shared by the ablation report, the paper table and the Optuna study
objective, so a number named "IQM" or "normalised" means the same thing in every table.

Over the runs of one setting:

- ``aggregate(values, how)``: ``mean``, ``median`` or ``iqm`` (interquartile mean: the mean of
  the middle half, ``scipy.stats.trim_mean`` cutting 25% at each end);
- ``bootstrap_ci(values, how)``: the percentile bootstrap interval of an aggregate over the
  first axis (runs or seeds), ``scipy.stats.bootstrap``; a 2-D array gives a band per column
  (a learning curve, the runs resampled together);
- ``interval_label(n)``: what an interval over ``n`` seeds may be called: a bootstrap CI needs
  at least ``MIN_SEEDS_FOR_CI`` (3) seeds; 2 seeds give their min–max, 1 seed no interval;
- ``normalize_score(score, random, reference)``: ``(score - random) / (reference - random)``,
  so a random policy scores 0 and the reference 1.

Over tasks (envs), each with its own runs (``tasks``: a list of 1-D arrays of run scores, one
per task; normalised scores when the tasks are different envs):

- ``pooled_iqm(tasks)``: the IQM of all runs of all tasks;
- ``performance_profile(tasks, taus)``: the fraction of runs scoring above each threshold
  (each task's empirical survival function, ``scipy.stats.ecdf``, averaged over tasks);
- ``probability_of_improvement(x_tasks, y_tasks)``: P(a run of X beats a run of Y on the same
  task, ties count half), the Mann–Whitney U statistic over n*m (``scipy.stats.mannwhitneyu``),
  averaged over tasks;
- ``*_ci`` versions of the three: the stratified percentile bootstrap interval, each task's
  runs resampled on their own (``scipy.stats.bootstrap`` with one sample per task,
  ``paired=False``), so every resample keeps each task's number of runs.

``rliable`` (the paper's library) is not used: it pulls arch, statsmodels, pandas and seaborn
into the install; its three statistics are the scipy calls above. Every bootstrap is seeded: the
same input always gives the same interval.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import numpy as np
from scipy import stats as sps

AGGREGATES = ("mean", "median", "iqm")
#: fewer seeds than this get no "95% CI": 2 seeds show their min–max, 1 seed no interval
MIN_SEEDS_FOR_CI = 3
LEVEL = 0.95


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


def interval_label(n: int, level: float = LEVEL) -> Optional[str]:
    """What an interval over ``n`` seeds is: ``"95% bootstrap CI"`` from ``MIN_SEEDS_FOR_CI``
    seeds on, ``"min–max of 2 seeds"`` for two, None (no interval) for one."""
    if n >= MIN_SEEDS_FOR_CI:
        return f"{level:.0%} bootstrap CI"
    return "min–max of 2 seeds" if n == 2 else None


def _bootstrap(statistic: Callable, samples: Sequence[np.ndarray], n_boot: int, level: float, seed: int):
    """``scipy.stats.bootstrap`` percentile interval; each sample resampled on its own."""
    with np.errstate(invalid="ignore"):
        result = sps.bootstrap(tuple(samples), statistic, n_resamples=n_boot, confidence_level=level,
                               method="percentile", vectorized=True, paired=False, axis=0,
                               rng=np.random.default_rng(seed))
    return _scalar(result.confidence_interval.low), _scalar(result.confidence_interval.high)


def bootstrap_ci(values, how: str = "mean", n_boot: int = 2000, level: float = LEVEL,
                 seed: int = 0) -> tuple:
    """Percentile bootstrap interval of ``aggregate(values, how)``, resampling the first axis
    (``scipy.stats.bootstrap``).

    1-D input gives ``(low, high)`` floats; with one value the interval is that value. A 2-D
    array (runs x steps) gives two arrays: a band per column, the runs resampled together.
    Whether an interval over few seeds may be called a CI is ``interval_label``'s business.
    """
    x = np.asarray(values, float)
    if len(x) < 2:
        first = x[0] if len(x) else math.nan
        return (_scalar(first), _scalar(first))
    if np.all(x == x[0]):  # nothing to resample (scipy would warn of degenerate data)
        return (_scalar(x[0]), _scalar(x[0]))
    return _bootstrap(lambda s, axis: aggregate(s, how, axis=axis), [x], n_boot, level, seed)


def normalize_score(score: float, random: Optional[float], reference: Optional[float]) -> float:
    """``(score - random) / (reference - random)``: random policy = 0, reference = 1; nan when
    either is missing or they are equal (no scale)."""
    if random is None or reference is None or reference == random:
        return math.nan
    return (float(score) - random) / (reference - random)


# -- over tasks (Agarwal et al. 2021) -------------------------------------------------------------

def _tasks(tasks) -> list[np.ndarray]:
    out = [np.asarray(t, float).ravel() for t in tasks]
    if not out or any(len(t) == 0 for t in out):
        raise ValueError("every task needs at least one run")
    return out


def _check_resamplable(tasks: list[np.ndarray]) -> None:
    if min(len(t) for t in tasks) < 2:
        raise ValueError("a stratified bootstrap needs at least 2 runs per task")


def pooled_iqm(tasks) -> float:
    """The IQM of all runs of all tasks together."""
    return iqm(np.concatenate(_tasks(tasks)))


def pooled_iqm_ci(tasks, n_boot: int = 2000, level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """Stratified percentile bootstrap interval of ``pooled_iqm``."""
    tasks = _tasks(tasks)
    _check_resamplable(tasks)

    def statistic(*samples, axis):
        return sps.trim_mean(np.concatenate(samples, axis=axis), 0.25, axis=axis)

    return _bootstrap(statistic, tasks, n_boot, level, seed)


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
    and of Y on each task resampled on their own."""
    xs, ys = _tasks(x_tasks), _tasks(y_tasks)
    if len(xs) != len(ys):
        raise ValueError(f"probability of improvement over different tasks ({len(xs)} vs {len(ys)})")
    _check_resamplable(xs + ys)

    def statistic(*samples, axis):
        pairs = zip(samples[0::2], samples[1::2])
        return np.mean([_u_fraction(x, y, axis) for x, y in pairs], axis=0)

    return _bootstrap(statistic, [s for pair in zip(xs, ys) for s in pair], n_boot, level, seed)
