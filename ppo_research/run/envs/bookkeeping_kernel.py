"""The compiled step of run/envs/bookkeeping.py (imported on first use: importing numba takes ~0.5 s).

Module-level functions, so that numba's on-disk cache finds them again in the next process.
"""
import math

import numpy as np
from numba import njit

from ..console import write_line

_told = False  # jit's warning, once per process


def jit(function):
    """Compiled, and cached on disk where numba finds a writable place: next to this file
    (``__pycache__``), else the user's cache directory. A read-only install with no writable cache
    directory (a container image, say) still runs; each process then compiles for itself."""
    try:
        return njit(cache=True, nogil=True)(function)
    except RuntimeError as err:  # numba: "cannot cache function ...: no locator available ..."
        if "no locator available" not in str(err):
            raise
        global _told
        if not _told:
            write_line("warning: numba finds no writable cache directory (set NUMBA_CACHE_DIR to one): the rollout's "
                  "bookkeeping is compiled in every process, about 5 s each")
            _told = True
        return njit(nogil=True)(function)


@jit
def pairwise_sum(x, n, zero):
    """numpy's pairwise summation of x[:n] (a contiguous row); ``zero`` is -0.0 in x's dtype."""
    if n < 8:
        res = zero
        for i in range(n):
            res += x[i]
        return res
    if n <= 128:
        r0, r1, r2, r3, r4, r5, r6, r7 = x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]
        i = 8
        while i < n - n % 8:
            r0 += x[i]
            r1 += x[i + 1]
            r2 += x[i + 2]
            r3 += x[i + 3]
            r4 += x[i + 4]
            r5 += x[i + 5]
            r6 += x[i + 6]
            r7 += x[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += x[i]
            i += 1
        return res
    half = n // 2
    half -= half % 8
    return pairwise_sum(x[:half], half, zero) + pairwise_sum(x[half:], n - half, zero)

@jit
def clip(x, bound):
    if x < -bound:
        return -bound
    if x > bound:
        return bound
    return x

@jit
def kernel(raw, rewards, episode_end, valid, consts, returns, lengths, discounted, gamma, r_mean, r_var,
           r_count, r_clip, o_mean, o_var, o_count, o_clip, scratch, obs_out, scaled_out):
    S, N, D = raw.shape
    n_obs, zero_obs = consts[0], consts[1]
    column = np.empty(N, raw.dtype)
    for k in range(S):
        # EpisodeTracker: returns += where(valid, rewards, 0); lengths += valid
        for i in range(N):
            returns[k, i] += rewards[k, i] if valid[k, i] else 0.0
            lengths[k, i] += valid[k, i]

        # RewardScaler: the running std of the discounted return, over valid steps only
        if math.isnan(r_clip):
            for i in range(N):
                scaled_out[k, i] = rewards[k, i]
        else:
            n = 0
            for i in range(N):
                discounted[k, i] = discounted[k, i] * gamma[k] + rewards[k, i]
                if valid[k, i]:
                    scratch[0, n] = discounted[k, i]
                    n += 1
            if n == 1:
                delta = scratch[0, 0] - r_mean[k]
                total = r_count[k] + 1
                m2 = r_var[k] * r_count[k] + delta * delta * (r_count[k] * 1 / total)
                r_mean[k], r_var[k], r_count[k] = r_mean[k] + delta * (1 / total), m2 / total, total
            elif n > 1:
                b_mean = pairwise_sum(scratch[0], n, -0.0) / n
                for j in range(n):
                    c = scratch[0, j] - b_mean
                    scratch[1, j] = c * c
                b_m2 = pairwise_sum(scratch[1], n, -0.0) / n * n
                delta = b_mean - r_mean[k]
                total = r_count[k] + n
                m2 = r_var[k] * r_count[k] + delta * delta * (r_count[k] * n / total)
                m2 += b_m2
                r_mean[k], r_var[k], r_count[k] = r_mean[k] + delta * (n / total), m2 / total, total
            for i in range(N):
                if episode_end[k, i]:
                    discounted[k, i] = 0.0
            std = np.sqrt(r_var[k] + 1e-8)
            for i in range(N):
                scaled_out[k, i] = clip(rewards[k, i] / std, r_clip)

        # ObsNormalizer: merge this step's batch of N observations, then normalise them
        if math.isnan(o_clip):
            for i in range(N):
                for d in range(D):
                    obs_out[k, i, d] = raw[k, i, d]
            continue
        total = o_count[k] + N
        for d in range(D):
            if N == 1:
                delta = raw[k, 0, d] - o_mean[k, d]
                m2 = o_var[k, d] * o_count[k] + delta * delta * (o_count[k] * N / total)
            else:
                # numpy sums a row that is contiguous (D = 1) pairwise, across rows sequentially
                if D == 1:
                    for i in range(N):
                        column[i] = raw[k, i, 0]
                    b_sum = pairwise_sum(column, N, zero_obs)
                else:
                    b_sum = raw[k, 0, d]
                    for i in range(1, N):
                        b_sum += raw[k, i, d]
                b_mean = b_sum / n_obs
                for i in range(N):
                    c = raw[k, i, d] - b_mean
                    column[i] = c * c
                if D == 1:
                    sq_sum = pairwise_sum(column, N, zero_obs)
                else:
                    sq_sum = column[0]
                    for i in range(1, N):
                        sq_sum += column[i]
                b_m2 = sq_sum / n_obs * n_obs
                delta = b_mean - o_mean[k, d]
                m2 = o_var[k, d] * o_count[k] + delta * delta * (o_count[k] * N / total)
                m2 += b_m2
            o_mean[k, d] = o_mean[k, d] + delta * (N / total)
            o_var[k, d] = m2 / total
            std = np.sqrt(o_var[k, d] + 1e-8)
            for i in range(N):
                obs_out[k, i, d] = clip((raw[k, i, d] - o_mean[k, d]) / std, o_clip)
        o_count[k] = total
