"""The training envs' per-step bookkeeping: episode returns, reward scaling and observation
normalisation for S members x N envs in one call (run/envs/lockstep.py calls it).

Two implementations of one step, with the same numbers bit for bit (tests/run/envs/test_bookkeeping.py):

- ``numpy_step``: the formulas in numpy's array operations. Each is ~1 us of call overhead on
  arrays of a few numbers, ~60 us per step on HalfCheetah, close to the simulation's own cost.
- the compiled kernel (``run/envs/bookkeeping_kernel.py``, numba): ~3 us. Its arithmetic is numpy's,
  operation for operation and in numpy's order (pairwise summation along a contiguous row,
  sequential across rows, float32 observations summed in float32).

The kernel is used when numba is installed (the ``fast`` extra, part of ``dev``),
``algo.fast_paths`` is true and the run is long enough to pay for loading it
(``worth_compiling``); otherwise the numpy step. Its first call compiles (a few seconds);
the machine code is cached beside the kernel's file (or in numba's user cache when that is
read-only), so later processes load it instead.
"""
from __future__ import annotations

import importlib.util
import math

import numpy as np

from .moments import batch_moments, clip, merge_moments

#: Loading the kernel costs ~0.5 s a process (numba's import and its cached machine code); it saves
#: ~1 us a step without normalisation and ~23 us with it (measured per vector step, S=1, N=1-4).
#: Below this many vector steps a run is over sooner in numpy, whatever its settings.
COMPILE_FROM_STEPS = 20_000

_kernel = None
_prepared: set = set()  # observation dtypes the kernel has been compiled or loaded for


def compiled_available() -> bool:
    """Whether numba is installed (the compiled kernel can be used)."""

    return importlib.util.find_spec("numba") is not None


def worth_compiling(vector_steps: int) -> bool:
    """Whether a run of ``vector_steps`` env steps (per env) should load the kernel: the same
    numbers either way, so this only decides which is sooner."""
    return vector_steps >= COMPILE_FROM_STEPS


def prepare(obs_dtype) -> None:
    """Import numba (~0.5 s) and compile the kernel for observations of ``obs_dtype``, or load it
    from the cache, with one call on dummy arrays. The training envs call this when they are
    made, so that a run's first rollout is not charged for it (the trainer holds Ctrl-C back
    meanwhile: a KeyboardInterrupt inside numba's compiler would be dropped)."""
    global _kernel
    dtype = np.dtype(obs_dtype) if np.dtype(obs_dtype).kind == "f" else np.dtype(np.float64)
    if _kernel is not None and dtype in _prepared:
        return
    if _kernel is None:
        from .bookkeeping_kernel import kernel as _kernel
    one = np.zeros((1, 1))
    state = BookkeepingState(one, one, one, [0.0], ([0.0], [1.0], [1.0]), None, True, (one, one, [1.0]), None, True)
    step_bookkeeping(np.zeros((1, 1, 1), dtype), one, one.astype(bool), one.astype(bool), state,
                     np.empty((1, 1, 1), np.float32), np.empty((1, 1), np.float32))
    _prepared.add(dtype)


def numpy_step(raw_obs, rewards, episode_end, valid, state, obs_out, scaled_out) -> None:
    """``step_bookkeeping`` in numpy's array operations (no numba needed; the same numbers)."""
    s = state
    s.returns += np.where(valid, rewards, 0.0)
    s.lengths += valid
    if math.isnan(s.reward_clip):  # reward scaling off
        scaled_out[...] = rewards
    else:  # the running std of the discounted return, over valid steps only
        s.discounted *= s.gamma[:, None]
        s.discounted += rewards
        for k in range(len(s.gamma)):
            rows = s.discounted[k][valid[k]]
            if len(rows):
                s.reward_mean[k], s.reward_var[k], s.reward_count[k] = merge_moments(
                    s.reward_mean[k], s.reward_var[k], float(s.reward_count[k]), *batch_moments(rows, 0), len(rows))
        s.discounted[episode_end] = 0.0
        scaled_out[...] = clip(rewards / np.sqrt(s.reward_var + 1e-8)[:, None], -s.reward_clip, s.reward_clip)
    if math.isnan(s.obs_clip):  # observation normalisation off
        obs_out[...] = raw_obs
        return
    mean, var, count = merge_moments(s.obs_mean, s.obs_var, s.obs_count[:, None], *batch_moments(raw_obs, 1),
                                     raw_obs.shape[1])
    s.obs_mean[...], s.obs_var[...], s.obs_count[...] = mean, var, count[:, 0]
    obs = (raw_obs - s.obs_mean[:, None]) / np.sqrt(s.obs_var[:, None] + 1e-8)
    obs_out[...] = clip(obs, -s.obs_clip, s.obs_clip)


def step_bookkeeping(raw_obs, rewards, episode_end, valid, state, obs_out, scaled_out, compiled: bool = True) -> None:
    """One env step's bookkeeping for every member, in place. ``raw_obs`` [S, N, D] (float32 or
    float64), ``rewards`` [S, N] float64, ``episode_end``/``valid`` [S, N] bool; ``state`` the
    ``BookkeepingState``; writes ``obs_out`` [S, N, D] and ``scaled_out`` [S, N] (float32).
    ``compiled``: the numba kernel (else ``numpy_step``)."""
    if not compiled:
        numpy_step(raw_obs, rewards, episode_end, valid, state, obs_out, scaled_out)
        return
    if _kernel is None:
        prepare(raw_obs.dtype)
    s = state
    consts = s.consts.get(raw_obs.dtype)
    if consts is None:  # N and -0.0 in the observations' dtype
        consts = s.consts[raw_obs.dtype] = np.array([raw_obs.shape[1], -0.0], raw_obs.dtype)
    _kernel(raw_obs, rewards, episode_end, valid, consts, s.returns, s.lengths, s.discounted, s.gamma, s.reward_mean,
            s.reward_var, s.reward_count, s.reward_clip, s.obs_mean, s.obs_var, s.obs_count, s.obs_clip, s.scratch,
            obs_out, scaled_out)


class BookkeepingState:
    """The members' running statistics as the kernel updates them: contiguous [S, ...] arrays.

    A clip of None is stored as +inf, a disabled normaliser as NaN (the kernel passes values
    through, as float32)."""

    def __init__(self, returns, lengths, discounted, gamma, reward_stats, reward_clip, reward_enabled, obs_stats,
                 obs_clip, obs_enabled):
        f64 = np.float64  # np.array copies: the kernel writes into these, never into the members' own
        self.returns = np.array(returns, f64)  # [S, N]
        self.lengths = np.array(lengths, np.int64)
        self.discounted = np.array(discounted, f64)
        self.gamma = np.array(gamma, f64).reshape(-1)  # [S]
        self.reward_mean, self.reward_var, self.reward_count = (np.array(a, f64).reshape(-1) for a in reward_stats)
        self.obs_mean, self.obs_var = (np.array(a, f64).reshape(len(self.gamma), -1) for a in obs_stats[:2])
        self.obs_count = np.array(obs_stats[2], f64).reshape(-1)
        self.reward_clip = _clip_value(reward_clip, reward_enabled)
        self.obs_clip = _clip_value(obs_clip, obs_enabled)
        self.scratch = np.empty((2, self.returns.shape[1]))
        self.consts: dict = {}


def _clip_value(clip, enabled: bool) -> float:
    return math.nan if not enabled else math.inf if clip is None else float(clip)
