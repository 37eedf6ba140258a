"""Running moments: the mean and variance of a stream of batches (Chan et al.'s parallel update),
as observation normalisation and reward scaling keep them. Spelled out with numpy's own
operations, bit for bit, without their Python wrappers: they run every env step."""
from __future__ import annotations

import numpy as np


def clip(x: np.ndarray, low, high) -> np.ndarray:
    """np.clip's result for finite values, without its Python wrapper (called every env step)."""
    return np.minimum(np.maximum(x, low), high)


def batch_moments(batch: np.ndarray, axis: int):
    """(mean, sum of squared deviations) of ``batch`` along ``axis``; None for the second when
    there is one sample. Called every env step, so numpy's mean and var are spelled out: the
    same operations, bit for bit, without their Python wrappers."""
    n = batch.shape[axis]
    if n == 1:
        return np.take(batch, 0, axis), None
    b_mean = np.add.reduce(batch, axis) / n
    centred = batch - np.expand_dims(b_mean, axis)
    return b_mean, np.add.reduce(centred * centred, axis) / n * n


def merge_moments(mean, var, count, b_mean, b_m2, n):
    """(mean, var, count) after merging a batch of n samples with mean ``b_mean`` and sum of
    squared deviations ``b_m2`` (None for one sample). Elementwise, so it serves one set of
    statistics or a population's stacked ones (count broadcastable against mean)."""
    delta = b_mean - mean
    total = count + n
    m2 = var * count + delta * delta * (count * n / total)
    if b_m2 is not None:
        m2 += b_m2
    return mean + delta * (n / total), m2 / total, total


class RunningMeanStd:
    """Running mean and variance (parallel-batch update of Chan et al.)."""

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4

    def update(self, batch: np.ndarray) -> None:
        b_mean, b_m2 = batch_moments(batch, 0)
        self.mean, self.var, self.count = merge_moments(self.mean, self.var, self.count, b_mean, b_m2,
                                                        batch.shape[0])

    def state_dict(self) -> dict:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        shape = self.mean.shape  # checkpoints written before 0-d arrays were kept 0-d hold a scalar's as (1,)
        mean, var = np.asarray(state["mean"], np.float64), np.asarray(state["var"], np.float64)
        if mean.shape != shape and mean.size == var.size == max(1, int(np.prod(shape))):
            mean, var = mean.reshape(shape), var.reshape(shape)
        self.mean, self.var, self.count = mean, var, float(state["count"])


