"""The statistics every results tool uses: aggregates over runs, bootstrap intervals, normalised scores.

One definition each, shared by the ablation report, the paper table and the Optuna study
objective, so a number named "IQM" or "normalised" means the same thing in every table.

- ``aggregate(values, how)``: ``mean``, ``median`` or ``iqm`` (interquartile mean: the mean of
  the middle half, dropping floor(n/4) values at each end; Agarwal et al. 2021);
- ``bootstrap_ci(values, how)``: the percentile bootstrap interval of an aggregate over the
  first axis (runs or seeds); a 2-D array gives a band per column (a learning curve);
- ``normalize_score(score, random, reference)``: ``(score - random) / (reference - random)``,
  so a random policy scores 0 and the reference 1.

scipy is not a dependency, so the bootstrap is numpy's (seeded: the same input always gives
the same interval).
"""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np

AGGREGATES = ("mean", "median", "iqm")


def iqm(values, axis: int = 0) -> Union[float, np.ndarray]:
    """Interquartile mean along ``axis``: the mean of the middle half (drops floor(n/4) from each end)."""
    x = np.sort(np.asarray(values, float), axis=axis)
    n = x.shape[axis]
    cut = n // 4
    middle = np.take(x, np.arange(cut, n - cut), axis=axis).mean(axis=axis)
    return float(middle) if np.ndim(middle) == 0 else middle


def aggregate(values, how: str = "mean", axis: int = 0) -> Union[float, np.ndarray]:
    """``mean``, ``median`` or ``iqm`` of ``values`` along ``axis`` (a float for 1-D input)."""
    if how not in AGGREGATES:
        raise ValueError(f"aggregate {how!r}: expected one of {', '.join(AGGREGATES)}")
    x = np.asarray(values, float)
    if x.shape[axis] == 0:
        raise ValueError("aggregate of no values")
    if how == "iqm":
        return iqm(x, axis)
    result = x.mean(axis=axis) if how == "mean" else np.median(x, axis=axis)
    return float(result) if np.ndim(result) == 0 else result


def bootstrap_ci(values, how: str = "mean", n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple:
    """Percentile bootstrap interval of ``aggregate(values, how)``, resampling the first axis.

    1-D input gives ``(low, high)`` floats; with one value the interval is that value. A 2-D
    array (runs x steps) gives two arrays: a band per column, the runs resampled together.
    """
    x = np.asarray(values, float)
    if len(x) < 2:
        first = x[0] if len(x) else math.nan
        return (float(first), float(first)) if np.ndim(first) == 0 else (first, first)
    resamples = x[np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))]
    stats = aggregate(resamples, how, axis=1)  # (n_boot, ...)
    low, high = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return (float(low), float(high)) if np.ndim(low) == 0 else (low, high)


def normalize_score(score: float, random: Optional[float], reference: Optional[float]) -> float:
    """``(score - random) / (reference - random)``: random policy = 0, reference = 1; nan when
    either is missing or they are equal (no scale)."""
    if random is None or reference is None or reference == random:
        return math.nan
    return (float(score) - random) / (reference - random)
