"""NEXT_STEP autoreset handling on real gymnasium vector envs."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import build_trainer

from ppo_research.algo.batch import Batch
from ppo_research.algo.inference import rollout_policy
from ppo_research.algo.networks import MLPActorCritic
from ppo_research.run.config.schema import EnvConfig
from ppo_research.run.envs.training import TrainingEnvs
from ppo_research.run.loop.collect import RolloutCollector


class StepCounterEnv(gym.Env):
    """Observation = steps since reset, reward 1 per step; ends only by its time limit."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([float(self.t)], np.float32), 1.0, False, False, {}


gym.register("StepCounter-v0", entry_point=StepCounterEnv, max_episode_steps=5)


def collect(num_envs=2, num_steps=12):
    torch.manual_seed(0)
    envs = TrainingEnvs(EnvConfig(id="StepCounter-v0"), num_envs, gamma=0.9, seeds=list(range(num_envs)))
    policy = MLPActorCritic(envs.single_observation_space, envs.single_action_space)
    rollout, episodes = RolloutCollector(envs, policy, num_steps).collect(rollout_policy(policy))
    return rollout, episodes, policy


def test_reset_steps_are_marked_and_final_obs_kept():
    rollout, episodes, policy = collect()
    for n in range(2):
        np.testing.assert_array_equal(rollout.obs[:, n, 0], [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5])
        np.testing.assert_array_equal(rollout.valid[:, n], [1, 1, 1, 1, 1, 0] * 2)
        np.testing.assert_array_equal(rollout.episode_end[:, n], [0, 0, 0, 0, 1, 0] * 2)
        np.testing.assert_array_equal(rollout.terminated[:, n], 0)
        np.testing.assert_array_equal(rollout.rewards[:, n], [1, 1, 1, 1, 1, 0] * 2)
    assert episodes == [(5.0, 5)] * 4  # two episodes per env, 5 steps of reward 1
    # The truncated step is bootstrapped with V(final obs), not V(reset obs).
    with torch.no_grad():
        v_final = policy.value(torch.tensor([[5.0]])).item()
    assert rollout.next_values[4, 0] == pytest.approx(v_final, rel=1e-6)


def test_reset_transitions_never_reach_the_loss():
    rollout, _, _ = collect()
    advantages = np.random.default_rng(0).normal(size=rollout.rewards.shape).astype(np.float32)
    advantages[~rollout.valid] = 0.0
    batch = Batch.from_rollout(rollout, advantages)
    assert len(batch) == rollout.valid.sum() == 20
    # Poison everything stored at the reset steps: the batch the update sees is unchanged.
    for array in (rollout.actions, rollout.log_probs, rollout.dist_params, rollout.obs):
        array[~rollout.valid] = 1e9
    poisoned = Batch.from_rollout(rollout, advantages)
    for name in ("obs", "actions", "log_probs", "dist_params", "advantages", "returns"):
        assert torch.equal(getattr(batch, name), getattr(poisoned, name)), name


def test_time_limit_only_task_value_bootstraps(tmp_path):
    """Reward 1 forever, cut only by a time limit: V must approach 1/(1-gamma) = 10, not the
    ~6 a termination-style (no bootstrap) target would give."""
    class ConstantObsEnv(StepCounterEnv):
        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return np.array([0.0], np.float32), {}

        def step(self, action):
            return np.array([0.0], np.float32), 1.0, False, False, {}

    gym.register("ConstantReward-v0", entry_point=ConstantObsEnv, max_episode_steps=20)
    trainer = build_trainer(["env.id=ConstantReward-v0", "env.normalize_obs=false", "env.normalize_reward=false",
                          "advantage.gamma=0.9", "total_timesteps=16384", "algo.num_envs=2", "algo.num_steps=256",
                          "algo.minibatch_size=128", "algo.learning_rate=3e-3", "algo.anneal_lr=false",
                             "progress=false", "eval.every=0", "eval.episodes=1", "checkpoint.every=0"], tmp_path)
    try:
        trainer.train()
        with torch.no_grad():
            value = trainer.member.policy.value(torch.zeros(1, 1)).item()
    finally:
        trainer.close()
    assert value == pytest.approx(10.0, abs=0.6)
