"""Advantage estimators. Each class is one `advantage=` option.

All work on [T, N] arrays (time, env) laid out as gymnasium's NEXT_STEP autoreset produces them:

- ``next_values[t]`` is V of the observation returned by step t. For an episode cut by its time
  limit that observation is the final one, so a truncated episode is bootstrapped with
  V(final obs); a terminated one is not (``terminated[t]`` zeroes the bootstrap).
- ``episode_end[t]`` (terminated or truncated) stops the backward recursion, so no estimate
  reaches across an episode boundary.
- ``valid[t]`` is False on the reset step that follows an episode end: its action was ignored
  and its reward is 0. Its advantage is 0 and the trainer drops it from every loss.
- The last step of the rollout is bootstrapped from V(obs_T), like a truncation.

Value targets are ``returns = advantages + values`` for every estimator.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from ..errors import ConfigError


class AdvantageEstimator(Protocol):
    gamma: float

    def __call__(self, rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray,
                 terminated: np.ndarray, episode_end: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Advantages, [T, N]."""
        ...


def _check_gamma(gamma: float) -> None:
    if not 0.0 < gamma <= 1.0:
        raise ConfigError("advantage.gamma", gamma, "a value in (0, 1]")


class GAE:
    """Generalised advantage estimation: A_t = sum_k (gamma lambda)^k delta_{t+k}."""

    def __init__(self, gamma: float = 0.99, lam: float = 0.95):
        _check_gamma(gamma)
        if not 0.0 <= lam <= 1.0:
            raise ConfigError("advantage.lam", lam, "a value in [0, 1]")
        self.gamma, self.lam = gamma, lam

    def __call__(self, rewards, values, next_values, terminated, episode_end, valid):
        deltas = rewards + self.gamma * (1.0 - terminated) * next_values - values
        decay = self.gamma * self.lam * (1.0 - episode_end)
        advantages = np.zeros_like(deltas)
        running = np.zeros_like(deltas[0])
        for t in reversed(range(len(deltas))):
            running = deltas[t] + decay[t] * running
            advantages[t] = running
        return np.where(valid, advantages, 0.0).astype(np.float32)


class MonteCarlo:
    """Rewards-to-go minus the value baseline: A_t = R_t - V(s_t).

    R_t sums discounted rewards to the end of the episode with no bootstrap inside it. Where
    the segment is cut before the episode terminates (time-limit truncation, or the end of
    the rollout horizon), R_t is bootstrapped from V at the cut. Equals GAE with lambda = 1.
    """

    def __init__(self, gamma: float = 0.99):
        _check_gamma(gamma)
        self.gamma = gamma

    def __call__(self, rewards, values, next_values, terminated, episode_end, valid):
        returns = np.zeros_like(rewards)
        # Past the end of the segment, or at a truncation, the tail is V(next obs).
        tail = next_values[-1]
        for t in reversed(range(len(rewards))):
            cut = episode_end[t] > 0
            bootstrap = np.where(terminated[t] > 0, 0.0, next_values[t])
            tail = np.where(cut, bootstrap, tail)
            returns[t] = rewards[t] + self.gamma * tail
            tail = returns[t]
        return np.where(valid, returns - values, 0.0).astype(np.float32)


class NStepTD:
    """n-step TD advantage: sum_{k<m} gamma^k r_{t+k} + gamma^m V(s_{t+m}) - V(s_t).

    m = n, or fewer where the episode or the rollout ends first (then the bootstrap is the
    value at that cut, zero after a termination). n = 1 is the TD(0) residual, GAE lambda = 0.
    """

    def __init__(self, gamma: float = 0.99, n: int = 1):
        _check_gamma(gamma)
        if n < 1:
            raise ConfigError("advantage.n", n, "an integer >= 1")
        self.gamma, self.n = gamma, n

    def __call__(self, rewards, values, next_values, terminated, episode_end, valid):
        T = len(rewards)
        targets = np.zeros_like(rewards)
        for t in range(T):
            total = np.zeros_like(rewards[0])
            discount = np.ones_like(rewards[0])
            open_ = np.ones_like(rewards[0], dtype=bool)  # episode still running from t
            bootstrap = np.zeros_like(rewards[0])
            for k in range(min(self.n, T - t)):
                s = t + k
                total += np.where(open_, discount * rewards[s], 0.0)
                discount = np.where(open_, discount * self.gamma, discount)
                last = (k == self.n - 1) or (s == T - 1)
                stop = open_ & ((episode_end[s] > 0) | last)
                bootstrap = np.where(stop, np.where(terminated[s] > 0, 0.0, next_values[s]), bootstrap)
                open_ &= ~stop
            targets[t] = total + discount * bootstrap
        return np.where(valid, targets - values, 0.0).astype(np.float32)


class AdvantageRefresh:
    """A rollout's advantages and value targets re-estimated with the current value function.

    ``algo.recompute_advantages``: the update calls this at the start of every epoch after the
    first (the first epoch's advantages were just computed with the same network). V is
    re-evaluated on every stored observation and on the observation after the rollout
    (``last_obs``), so next_values and the bootstraps of truncated episodes use the current V
    too; the estimator then runs as in step 2. Returns the valid samples' (advantages, returns =
    advantages + V_current), flattened in ``Batch.from_rollout``'s order (time-major, then env).
    """

    def __init__(self, estimator: AdvantageEstimator, rollout, last_obs: np.ndarray, policy):
        self.estimator, self.rollout, self.policy = estimator, rollout, policy
        self.last_obs = np.array(last_obs, dtype=np.float32, copy=True)  # obs_T, fixed during the update

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        """V_current of the stored observations [T, N] and of obs_T [N]."""
        r = self.rollout
        T, N = r.values.shape
        obs = np.concatenate([r.obs.reshape(T * N, *r.obs.shape[2:]), self.last_obs])
        with torch.no_grad():
            v = self.policy.value(torch.from_numpy(obs).to(self.policy.device)).cpu().numpy()
        return v[:T * N].reshape(T, N), v[T * N:]

    def advantages(self) -> tuple[np.ndarray, np.ndarray]:
        """[T, N] advantages and values, both with the current value function."""
        r = self.rollout
        values, last = self.values()
        next_values = np.concatenate([values[1:], last[None]], axis=0)
        return self.estimator(r.rewards, values, next_values, r.terminated, r.episode_end, r.valid), values

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        advantages, values = self.advantages()
        valid = self.rollout.valid
        adv = advantages[valid]
        device = self.policy.device
        return torch.from_numpy(adv).to(device), torch.from_numpy((adv + values[valid]).astype(np.float32)).to(device)
