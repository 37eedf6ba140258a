"""Training envs stepped together, for the rollout (run/loop/collect.py): a population's members,
or one run's envs (a population of one: the same code path).

Each member's envs take their own step; then the members' bookkeeping - episode returns,
reward scaling, observation normalisation - runs once over [S, N] arrays, compiled
(``run/envs/bookkeeping.py``), with each member's own statistics, so member k's numbers are those of
its envs stepped alone (tests/run/envs/test_lockstep.py). The state is taken from the members'
``TrainingEnvs`` when a rollout starts and handed back when it ends (``release``): between
rollouts - checkpoints, evaluation - each member's own objects hold it.
"""
from __future__ import annotations

import numpy as np

from .bookkeeping import BookkeepingState, step_bookkeeping
from .training import TrainingEnvs


class LockstepEnvs:
    def __init__(self, members: list[TrainingEnvs]):
        self.members = members
        first = members[0]
        self.obs = np.stack([m.obs for m in members])  # [S, N, obs], normalised
        self.next_is_reset = np.stack([m.next_is_reset for m in members])
        scalers, obs_stats = [m.reward_scaler for m in members], [m.obs_norm.stats for m in members]
        self.stats = BookkeepingState(  # the switches and clips are shared; the statistics are not
            returns=[m.episodes.returns for m in members], lengths=[m.episodes.lengths for m in members],
            discounted=[s.discounted for s in scalers], gamma=[s.gamma for s in scalers],  # gamma is a member key
            reward_stats=[[getattr(s.stats, a) for s in scalers] for a in ("mean", "var", "count")],
            reward_clip=first.reward_scaler.clip, reward_enabled=first.reward_scaler.enabled,
            obs_stats=[[getattr(s, a) for s in obs_stats] for a in ("mean", "var", "count")],
            obs_clip=first.obs_norm.clip, obs_enabled=first.obs_norm.enabled)

        self.image = first.image  # uint8 frames: stored as they come, outside the bookkeeping
        self.sign_reward = first.cfg.sign_reward
        self.last_lives = np.stack([m.last_lives for m in members]) if first.cfg.episodic_life else None

        self.shared = shared_pool_of(members)  # the members' envs as rows of one EnvPool (run/envs/shared_pool.py)
        self._into = None  # (raw obs, rewards, terminated, truncated) [S, N, ...], if every member's envs step_into
        if self.shared is None and all(hasattr(m.envs, "step_into") for m in members):
            S, N, space = len(members), first.num_envs, first.single_observation_space
            self._into = (np.zeros((S, N, *space.shape), space.dtype), np.zeros((S, N)), np.zeros((S, N), bool),
                          np.zeros((S, N), bool))

    def step(self, actions: np.ndarray):
        """``actions`` [S, N, ...]; returns TrainingEnvs.step's tuple with a leading member axis
        (finished episodes: one list per member). ``terminated`` is what learning takes as
        terminal: with episodic life also the step that lost a life (the game goes on)."""
        valid = ~self.next_is_reset
        env_actions = self.members[0].actions(actions)  # the members share the env, so its bounds
        raw_obs, rewards, terminated, truncated = self._step_envs(env_actions)
        episode_end = terminated | truncated
        S, N = episode_end.shape
        scaled = np.empty((S, N), np.float32)
        if self.image:  # frames go to the rollout as uint8; the bookkeeping sees no observation
            obs = raw_obs.copy()
            raw_obs, flat_obs = np.empty((S, N, 0)), np.empty((S, N, 0), np.float32)
        else:
            if raw_obs.dtype.kind != "f":  # e.g. a Discrete observation's integers
                raw_obs = raw_obs.astype(np.float64)
            obs = np.empty((S, N, *raw_obs.shape[2:]), np.float32)
            raw_obs, flat_obs = raw_obs.reshape(S, N, -1), obs.reshape(S, N, -1)
        step_bookkeeping(raw_obs, np.asarray(rewards, np.float64), episode_end, valid, self.stats, flat_obs, scaled,
                         compiled=self.members[0].compiled)
        if self.sign_reward:  # learn from the reward's sign; the episode returns above stay raw
            np.sign(rewards, out=scaled, casting="unsafe")
        if self.last_lives is not None:
            terminated = terminated | self._lost_a_life(valid, episode_end)
        finished = self._finish(episode_end) if episode_end.any() else [[] for _ in self.members]
        self.obs, self.next_is_reset = obs, episode_end
        return obs, scaled, terminated, truncated, valid, finished

    def _lost_a_life(self, valid: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
        """[S, N]: the steps on which a game went on with fewer lives."""
        lives = np.stack([m.lives() for m in self.members])
        lost = (lives < self.last_lives) & valid & ~episode_end
        self.last_lives = lives
        return lost

    def _step_envs(self, env_actions: np.ndarray):
        """Each member's envs step: (raw obs, rewards, terminated, truncated), each [S, N, ...]. Our
        own vector envs write into rows of arrays kept for the rollout (used before the next step:
        the collector copies what it keeps); others' results are stacked. Rows of one shared
        EnvPool step in one call."""
        if self.shared is not None:
            return self.shared.step([m.envs.row for m in self.members], env_actions)
        if self._into is None:
            stepped = [m.envs.step(env_actions[k]) for k, m in enumerate(self.members)]
            return tuple(np.ascontiguousarray(np.stack([s[i] for s in stepped])) for i in range(4))
        for k, m in enumerate(self.members):
            m.envs.step_into(env_actions[k], *(a[k] for a in self._into))
        return self._into

    def _finish(self, episode_end) -> list[list[tuple[float, int]]]:
        """(return, length) of the episodes that just ended, per member; their counters restart."""
        returns, lengths = self.stats.returns, self.stats.lengths
        finished = [[] for _ in self.members]
        for k, i in zip(*np.nonzero(episode_end)):
            finished[k].append((float(returns[k, i]), int(lengths[k, i])))
        returns[episode_end] = 0.0
        lengths[episode_end] = 0
        return finished

    def release(self) -> None:
        """Hand each member its state back (its TrainingEnvs holds it between rollouts)."""
        st = self.stats
        for k, m in enumerate(self.members):
            m.obs = self.obs[k].copy()
            m.next_is_reset = self.next_is_reset[k].copy()
            if self.last_lives is not None:
                m.last_lives = self.last_lives[k].copy()
            m.episodes.returns, m.episodes.lengths = st.returns[k].copy(), st.lengths[k].copy()
            stats = m.obs_norm.stats
            shape = stats.mean.shape
            stats.mean, stats.var = st.obs_mean[k].reshape(shape).copy(), st.obs_var[k].reshape(shape).copy()
            stats.count = float(st.obs_count[k])
            scaler = m.reward_scaler
            scaler.discounted = st.discounted[k].copy()
            scaler.stats.mean, scaler.stats.var = np.float64(st.reward_mean[k]), np.float64(st.reward_var[k])
            scaler.stats.count = float(st.reward_count[k])


def shared_pool_of(members: list[TrainingEnvs]):
    """The shared pool every member's envs are rows of, or None if none is."""
    pools = {id(getattr(m.envs, "shared", None)): getattr(m.envs, "shared", None) for m in members}
    if len(pools) > 1:
        raise RuntimeError("some members' envs are rows of a shared EnvPool and some are not: they cannot step together")
    return next(iter(pools.values()))


def step_alone(envs: TrainingEnvs, actions: np.ndarray):
    """One step of ``envs`` alone: (next_obs, scaled_reward, terminated, truncated, valid,
    finished_episodes), as a population of one steps."""
    together = LockstepEnvs([envs])
    try:
        stepped = together.step(np.asarray(actions)[None])
    finally:
        together.release()
    *arrays, finished = stepped
    return (*(a[0].copy() for a in arrays), finished[0])
