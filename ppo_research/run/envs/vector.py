"""N gymnasium envs stepped one after another in this process, as the training envs.

The semantics are those of ``gymnasium.vector.SyncVectorEnv`` in NEXT_STEP autoreset mode (the
step after an episode ends resets that env: its action is ignored, its reward is 0, and it is
neither terminated nor truncated), step for step and bit for bit (tests/run/envs/test_vector.py checks
this against gymnasium's own). What it leaves out is what the trainer never needs: iterating
the batched action space, merging the per-env ``info`` dicts, the defensive copies - about 60 us
per step on HalfCheetah, a fifth of a solo run's rollout step. The envs themselves are
``gym.make``'s, wrappers included.
"""
from __future__ import annotations

from typing import Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space


class SerialVectorEnv:
    def __init__(self, make: Callable[[], gym.Env], num_envs: int):
        self.envs = [make() for _ in range(num_envs)]
        self.num_envs = num_envs
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        # the batched spaces, as a vector env offers them (their RNGs are checkpointed)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        space = self.single_observation_space
        self._obs = np.zeros((num_envs, *space.shape), space.dtype)
        self._autoreset_envs = np.zeros(num_envs, bool)  # the name SyncVectorEnv gives this state

    def reset(self, seed: Sequence[int]) -> tuple[np.ndarray, dict]:
        if len(seed) != self.num_envs:
            raise ValueError(f"{len(seed)} seeds for {self.num_envs} envs")
        for i, (env, s) in enumerate(zip(self.envs, seed)):
            self._obs[i] = env.reset(seed=s)[0]
        self._autoreset_envs = np.zeros(self.num_envs, bool)
        return self._obs.copy(), {}

    def step(self, actions: np.ndarray):
        """(obs, rewards, terminated, truncated, {}) as new arrays; ``actions`` has one row per env."""
        n = self.num_envs
        rewards, terminated, truncated = np.zeros(n), np.zeros(n, bool), np.zeros(n, bool)
        self.step_into(actions, self._obs, rewards, terminated, truncated)
        return self._obs.copy(), rewards, terminated, truncated, {}

    def step_into(self, actions: np.ndarray, obs: np.ndarray, rewards: np.ndarray, terminated: np.ndarray,
                  truncated: np.ndarray) -> None:
        """``step``, writing into the caller's arrays (a population's [S, N] rows: no new arrays
        per step). An env on its reset step gets reward 0 and neither flag."""
        for i, env in enumerate(self.envs):
            if self._autoreset_envs[i]:
                obs[i] = env.reset()[0]
                rewards[i], terminated[i], truncated[i] = 0.0, False, False
            else:
                obs[i], rewards[i], terminated[i], truncated[i], _ = env.step(actions[i])
        self._autoreset_envs = terminated | truncated

    def close(self) -> None:
        for env in self.envs:
            env.close()
