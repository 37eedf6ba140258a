"""Step 1 of the algorithm: run pi_old in the training envs for T steps and store the rollout.

A population's members collect in lock step (``collect_together``): at each step one stacked
forward acts for every member, then each member's envs take their step. Each member stores,
steps and draws exactly what its solo ``collect`` would.
"""
from __future__ import annotations

import numpy as np
import torch

from ..algo.batch import Rollout
from ..algo.inference import StackedNumpyPolicy
from ..algo.networks import ActorCritic
from .envs import TrainingEnvs
from .lockstep import LockstepEnvs


def allocate_rollout(num_steps: int, envs: TrainingEnvs, policy: ActorCritic) -> Rollout:
    """Storage sized for ``envs`` and ``policy`` (its distribution's parameter count is probed)."""
    obs_shape = envs.single_observation_space.shape
    with torch.inference_mode():
        params = policy.distribution(torch.zeros(1, *obs_shape)).params().shape[-1]
    return Rollout.allocate(num_steps, envs.num_envs, obs_shape, envs.single_action_space.shape, params)


Collected = tuple[Rollout, list[tuple[float, int]]]  # the rollout, (return, length) of finished episodes


class RolloutCollector:
    def __init__(self, envs: TrainingEnvs, policy: ActorCritic, num_steps: int):
        self.envs, self.num_steps = envs, num_steps
        self.rollout = allocate_rollout(num_steps, envs, policy)
        self.finished: list[tuple[float, int]] = []

    def collect(self, actor) -> Collected:
        """Fill the rollout acting with ``actor`` (pi_old's inference path); return it and the
        (return, length) of the training episodes that finished."""
        self.finished = []
        for t in range(self.num_steps):
            obs = self.envs.obs
            acted = actor.act(obs)
            self.store(t, obs, *acted, self.envs.step(acted[0]))
        return self.end(actor.value(self.envs.obs))

    def store(self, t: int, obs: np.ndarray, action, log_prob, value, dist_params, stepped) -> None:
        """Step t: what pi_old did in ``obs``, and what the envs' step (``TrainingEnvs.step``) returned."""
        r = self.rollout
        r.obs[t], r.log_probs[t], r.values[t], r.dist_params[t] = obs, log_prob, value, dist_params
        r.actions[t] = np.reshape(action, r.actions[t].shape)
        _, reward, terminated, truncated, valid, done_episodes = stepped
        r.rewards[t] = reward
        r.terminated[t] = terminated
        r.episode_end[t] = terminated | truncated
        r.valid[t] = valid
        self.finished += done_episodes

    def end(self, last_value: np.ndarray) -> Collected:
        self.rollout.last_value[:] = last_value
        return self.rollout, self.finished


def collect_together(collectors: list[RolloutCollector], actor: StackedNumpyPolicy) -> list[Collected]:
    """Every member's rollout, in lock step; ``actor`` stacks the members' pi_old in order."""
    envs = LockstepEnvs([c.envs for c in collectors])
    for c in collectors:
        c.finished = []
    try:
        for t in range(collectors[0].num_steps):
            obs = envs.obs  # [S, N, obs]
            action, log_prob, value, dist_params = actor.act(obs)
            stepped = envs.step(action)
            for k, c in enumerate(collectors):
                c.store(t, obs[k], action[k], log_prob[k], value[k], dist_params[k],
                        (None, stepped[1][k], stepped[2][k], stepped[3][k], stepped[4][k], stepped[5][k]))
        last_values = actor.value(envs.obs)
    finally:
        envs.release()
    return [c.end(v) for c, v in zip(collectors, last_values)]
