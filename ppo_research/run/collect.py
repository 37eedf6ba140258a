"""Step 1 of the algorithm: run pi_old in the training envs for T steps and store the rollout."""
from __future__ import annotations

import numpy as np
import torch

from ..algo.batch import Rollout
from ..algo.networks import ActorCritic
from .envs import TrainingEnvs


def allocate_rollout(num_steps: int, envs: TrainingEnvs, policy: ActorCritic) -> Rollout:
    """Storage sized for ``envs`` and ``policy`` (its distribution's parameter count is probed)."""
    obs_shape = envs.single_observation_space.shape
    with torch.inference_mode():
        params = policy.distribution(torch.zeros(1, *obs_shape)).params().shape[-1]
    return Rollout.allocate(num_steps, envs.num_envs, obs_shape, envs.single_action_space.shape, params)


class RolloutCollector:
    def __init__(self, envs: TrainingEnvs, policy: ActorCritic, num_steps: int):
        self.envs, self.num_steps = envs, num_steps
        self.rollout = allocate_rollout(num_steps, envs, policy)

    def collect(self, actor) -> tuple[Rollout, list[tuple[float, int]]]:
        """Fill the rollout acting with ``actor`` (pi_old's inference path); return it and the
        (return, length) of the training episodes that finished."""
        r, envs = self.rollout, self.envs
        finished: list[tuple[float, int]] = []
        for t in range(self.num_steps):
            obs = envs.obs
            action, r.log_probs[t], r.values[t], r.dist_params[t] = actor.act(obs)
            r.obs[t] = obs
            r.actions[t] = np.reshape(action, r.actions[t].shape)
            _, reward, terminated, truncated, valid, done_episodes = envs.step(action)
            r.rewards[t] = reward
            r.terminated[t] = terminated
            r.episode_end[t] = terminated | truncated
            r.valid[t] = valid
            finished += done_episodes
        r.last_value[:] = actor.value(envs.obs)
        return r, finished
