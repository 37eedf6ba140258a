"""Step 1 of the algorithm: run pi_old in the training envs for T steps and store the rollout.

A population's members collect in lock step (``LockstepCollector``): at each step one stacked
forward acts for every member, then each member's envs take their step. Each member stores,
steps and draws exactly what its solo ``collect`` would.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ...algo.batch import Rollout
from ...algo.inference import StackedNumpyPolicy
from ...algo.networks import ActorCritic
from ..envs.lockstep import LockstepEnvs
from ..envs.training import TrainingEnvs


def allocate_rollout(num_steps: int, envs: TrainingEnvs, policy: ActorCritic) -> Rollout:
    """Storage sized for ``envs`` and ``policy`` (its distribution's parameter count is probed)."""
    obs_shape, obs_dtype = envs.single_observation_space.shape, envs.obs.dtype  # float32, or uint8 images
    with torch.inference_mode():
        probe = torch.from_numpy(np.zeros((1, *obs_shape), obs_dtype)).to(policy.device)
        params = policy.distribution(probe).params().shape[-1]
    return Rollout.allocate(num_steps, envs.num_envs, obs_shape, envs.single_action_space.shape, params, obs_dtype)


Collected = tuple[Rollout, list[tuple[float, int]]]  # the rollout, (return, length) of finished episodes


class RolloutCollector:
    def __init__(self, envs: TrainingEnvs, policy: ActorCritic, num_steps: int):
        self.envs, self.num_steps = envs, num_steps
        self.rollout = allocate_rollout(num_steps, envs, policy)

    def collect(self, actor) -> Collected:
        """Fill the rollout acting with ``actor`` (pi_old's inference path); return it and the
        (return, length) of the training episodes that finished. The envs step as a population
        of one (``LockstepEnvs``): a population's members step with the very same code."""
        envs = LockstepEnvs([self.envs])
        finished: list[tuple[float, int]] = []
        try:
            actor.begin_rollout(self.num_steps, envs.obs.shape[1:2])
            for t in range(self.num_steps):
                obs = envs.obs[0]
                acted = actor.act(obs)
                stepped = envs.step(acted[0][None])
                finished += store_step(self.rollout, t, obs, *acted, [x[0] for x in stepped])
            self.rollout.last_value[:] = actor.value(envs.obs[0])
        finally:
            envs.release()
        return self.rollout, finished


def store_step(r: Rollout, at, obs, action, log_prob, value, dist_params, stepped) -> list:
    """Write step ``at`` (t, or ``(slice(None), t)`` for a population's stacked rollout) from
    what pi_old did in ``obs`` and what the envs' step returned; return the episodes it finished."""
    r.obs[at], r.log_probs[at], r.values[at], r.dist_params[at] = obs, log_prob, value, dist_params
    r.actions[at] = np.reshape(action, r.actions[at].shape)
    _, reward, terminated, truncated, valid, done_episodes = stepped
    r.rewards[at] = reward
    r.terminated[at] = terminated
    r.episode_end[at] = terminated | truncated
    r.valid[at] = valid
    return done_episodes


class LockstepCollector:
    """The members' collectors in lock step: their rollouts become rows of one stacked rollout
    ([S, T, N, ...]), so a step is stored with one write per field for all members."""

    def __init__(self, collectors: list[RolloutCollector]):
        self.collectors = collectors
        first = collectors[0].rollout
        self.rollout = Rollout(*(np.zeros((len(collectors), *a.shape), a.dtype) for a in _fields(first)))
        for k, c in enumerate(collectors):
            c.rollout = Rollout(*(a[k] for a in _fields(self.rollout)))

    def collect(self, actor: StackedNumpyPolicy) -> list[Collected]:
        """Every member's rollout; ``actor`` stacks the members' pi_old in order."""
        envs = LockstepEnvs([c.envs for c in self.collectors])
        finished = [[] for _ in self.collectors]
        try:
            actor.begin_rollout(self.collectors[0].num_steps, envs.obs.shape[:2])
            for t in range(self.collectors[0].num_steps):
                obs = envs.obs  # [S, N, obs]
                acted = actor.act(obs)
                stepped = envs.step(acted[0])
                for k, episodes in enumerate(store_step(self.rollout, (slice(None), t), obs, *acted, stepped)):
                    finished[k] += episodes
            self.rollout.last_value[:] = actor.value(envs.obs)
        finally:
            envs.release()
        return [(c.rollout, f) for c, f in zip(self.collectors, finished)]


def _fields(r: Rollout) -> list[np.ndarray]:
    return [getattr(r, f.name) for f in dataclasses.fields(r)]
