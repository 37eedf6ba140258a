"""A population's training envs stepped together, for the lock-step rollout (run/collect.py).

Each member's envs take their own step; then the members' bookkeeping - observation
normalisation, reward scaling, episode returns - runs once over [S, N] arrays instead of once
per member over [N]. Per member it is ``TrainingEnvs.step``'s arithmetic, operation for
operation, so member k's numbers are bit for bit those of its own envs stepped alone
(tests/test_lockstep.py). The state is taken from the members' ``TrainingEnvs`` when a rollout
starts and handed back when it ends (``release``): between rollouts - checkpoints, evaluation -
each member's own objects hold it.
"""
from __future__ import annotations

import numpy as np

from .envs import TrainingEnvs, _clip, batch_moments, merge_moments


class LockstepEnvs:
    def __init__(self, members: list[TrainingEnvs]):
        self.members = members
        first = members[0]
        self.obs = np.stack([m.obs for m in members])  # [S, N, obs], normalised
        self.next_is_reset = np.stack([m.next_is_reset for m in members])
        self.returns = np.stack([m.episodes.returns for m in members])
        self.lengths = np.stack([m.episodes.lengths for m in members])

        self.obs_norm = first.obs_norm  # the switches and the clip are shared; the statistics are not
        stats = [m.obs_norm.stats for m in members]
        self.obs_mean = np.stack([s.mean for s in stats])  # [S, *shape]
        self.obs_var = np.stack([s.var for s in stats])
        self.obs_count = np.array([s.count for s in stats]).reshape(-1, *[1] * (self.obs_mean.ndim - 1))

        self.scaler = first.reward_scaler
        scalers = [m.reward_scaler for m in members]
        self.gamma = np.array([s.gamma for s in scalers])[:, None]  # advantage.gamma is a member key
        self.discounted = np.stack([s.discounted for s in scalers])  # [S, N]
        self.reward_mean = np.array([s.stats.mean for s in scalers], np.float64)  # [S]
        self.reward_var = np.array([s.stats.var for s in scalers], np.float64)
        self.reward_count = np.array([s.stats.count for s in scalers], np.float64)

        self._into = None  # (raw obs, rewards, terminated, truncated) [S, N, ...], if every member's envs step_into
        if all(hasattr(m.envs, "step_into") for m in members):
            S, N, space = len(members), first.num_envs, first.single_observation_space
            self._into = (np.zeros((S, N, *space.shape), space.dtype), np.zeros((S, N)), np.zeros((S, N), bool),
                          np.zeros((S, N), bool))

    def step(self, actions: np.ndarray):
        """``actions`` [S, N, ...]; returns TrainingEnvs.step's tuple with a leading member axis
        (finished episodes: one list per member)."""
        valid = ~self.next_is_reset
        env_actions = self.members[0].actions(actions)  # the members share the env, so its bounds
        raw_obs, rewards, terminated, truncated = self._step_envs(env_actions)
        episode_end = terminated | truncated
        finished = self._track(rewards, episode_end, valid)
        scaled = self._scale(rewards, episode_end, valid)
        self.obs = self._normalise(raw_obs)
        self.next_is_reset = episode_end
        return self.obs, scaled, terminated, truncated, valid, finished

    def _step_envs(self, env_actions: np.ndarray):
        """Each member's envs step: (raw obs, rewards, terminated, truncated), each [S, N, ...]. Our
        own vector envs write into rows of arrays kept for the rollout (used before the next step:
        the collector copies what it keeps); others' results are stacked."""
        if self._into is None:
            stepped = [m.envs.step(env_actions[k]) for k, m in enumerate(self.members)]
            return tuple(np.stack([s[i] for s in stepped]) for i in range(4))
        for k, m in enumerate(self.members):
            m.envs.step_into(env_actions[k], *(a[k] for a in self._into))
        return self._into

    # -- TrainingEnvs.step's bookkeeping over [S, N] ---------------------------------------------

    def _track(self, rewards, episode_end, valid) -> list[list[tuple[float, int]]]:  # EpisodeTracker.step
        self.returns += np.where(valid, rewards, 0.0)
        self.lengths += valid
        finished = [[] for _ in self.members]
        if not episode_end.any():
            return finished
        for k, i in zip(*np.nonzero(episode_end)):
            finished[k].append((float(self.returns[k, i]), int(self.lengths[k, i])))
        self.returns[episode_end] = 0.0
        self.lengths[episode_end] = 0
        return finished

    def _scale(self, rewards, episode_end, valid) -> np.ndarray:  # RewardScaler.__call__
        if not self.scaler.enabled:
            return rewards.astype(np.float32)
        self.discounted = self.discounted * self.gamma + rewards
        if valid.all():
            self.reward_mean, self.reward_var, self.reward_count = merge_moments(
                self.reward_mean, self.reward_var, self.reward_count, *batch_moments(self.discounted, 1),
                self.discounted.shape[1])
        else:  # reset steps: the solo arithmetic on each member's valid rows (rare; sums must not see the gaps)
            for k in range(len(self.members)):
                rows = self.discounted[k][valid[k]]
                if len(rows):
                    self.reward_mean[k], self.reward_var[k], self.reward_count[k] = merge_moments(
                        self.reward_mean[k], self.reward_var[k], float(self.reward_count[k]), *batch_moments(rows, 0),
                        len(rows))
        self.discounted[episode_end] = 0.0
        out = rewards / np.sqrt(self.reward_var + 1e-8)[:, None]
        if self.scaler.clip is not None:
            out = _clip(out, -self.scaler.clip, self.scaler.clip)
        return out.astype(np.float32)

    def _normalise(self, raw_obs: np.ndarray) -> np.ndarray:  # ObsNormalizer.__call__ with update
        norm = self.obs_norm
        if not norm.enabled:
            return raw_obs.astype(np.float32)
        self.obs_mean, self.obs_var, self.obs_count = merge_moments(
            self.obs_mean, self.obs_var, self.obs_count, *batch_moments(raw_obs, 1), raw_obs.shape[1])
        out = (raw_obs - self.obs_mean[:, None]) / np.sqrt(self.obs_var[:, None] + 1e-8)
        if norm.clip is not None:
            out = _clip(out, -norm.clip, norm.clip)
        return out.astype(np.float32)

    def release(self) -> None:
        """Hand each member its state back (its TrainingEnvs holds it between rollouts)."""
        for k, m in enumerate(self.members):
            m.obs = self.obs[k].copy()
            m.next_is_reset = self.next_is_reset[k].copy()
            m.episodes.returns, m.episodes.lengths = self.returns[k].copy(), self.lengths[k].copy()
            stats = m.obs_norm.stats
            stats.mean, stats.var, stats.count = self.obs_mean[k].copy(), self.obs_var[k].copy(), float(
                self.obs_count[k].flat[0])
            scaler = m.reward_scaler
            scaler.discounted = self.discounted[k].copy()
            scaler.stats.mean, scaler.stats.var = np.float64(self.reward_mean[k]), np.float64(self.reward_var[k])
            scaler.stats.count = float(self.reward_count[k])
