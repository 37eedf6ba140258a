"""Rollout storage and collection: T steps from N envs with the current policy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .envs import TrainingEnvs
from ..algo.inference import rollout_policy
from ..algo.networks import ActorCritic


@dataclass
class Rollout:
    """[T, N, ...] arrays of one rollout, preallocated once and refilled every iteration."""

    obs: np.ndarray
    actions: np.ndarray
    log_probs: np.ndarray
    dist_params: np.ndarray  # pi_old's parameters, for the analytic KL
    values: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    episode_end: np.ndarray
    valid: np.ndarray  # False on NEXT_STEP reset steps
    last_value: np.ndarray  # V(obs_T), [N]

    @classmethod
    def allocate(cls, num_steps: int, envs: TrainingEnvs, policy: ActorCritic) -> "Rollout":
        T, N = num_steps, envs.num_envs
        obs_shape = envs.single_observation_space.shape
        act_shape = envs.single_action_space.shape
        with torch.inference_mode():
            probe = policy.distribution(torch.zeros(1, *obs_shape)).params().shape[-1]
        f32 = lambda *shape: np.zeros((T, N, *shape), np.float32)  # noqa: E731
        return cls(obs=f32(*obs_shape), actions=f32(*act_shape), log_probs=f32(), dist_params=f32(probe),
                   values=f32(), rewards=f32(), terminated=f32(), episode_end=f32(),
                   valid=np.zeros((T, N), bool), last_value=np.zeros(N, np.float32))

    @property
    def next_values(self) -> np.ndarray:
        """V of the observation each step returned (a truncated episode's final obs included)."""
        return np.concatenate([self.values[1:], self.last_value[None]], axis=0)


class RolloutCollector:
    def __init__(self, envs: TrainingEnvs, policy: ActorCritic, num_steps: int):
        self.envs, self.num_steps = envs, num_steps
        self.actor = rollout_policy(policy)
        self.rollout = Rollout.allocate(num_steps, envs, policy)

    def collect(self) -> tuple[Rollout, list[tuple[float, int]]]:
        """Fill the rollout with pi_old; return it and the (return, length) of finished episodes."""
        r, envs, actor = self.rollout, self.envs, self.actor
        actor.sync()
        finished: list[tuple[float, int]] = []
        for t in range(self.num_steps):
            obs = envs.obs
            action, r.log_probs[t], r.values[t], r.dist_params[t] = actor.act(obs)
            r.obs[t] = obs
            r.actions[t] = action.reshape(r.actions[t].shape)
            _, reward, terminated, truncated, valid, done_episodes = envs.step(action)
            r.rewards[t] = reward
            r.terminated[t] = terminated
            r.episode_end[t] = terminated | truncated
            r.valid[t] = valid
            finished += done_episodes
        r.last_value[:] = actor.value(envs.obs)
        return r, finished
