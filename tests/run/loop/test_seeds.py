"""Every stream of a run comes from its seed through SeedSequence: different seeds share none."""
from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest

from ppo_research.run.config.schema import EnvConfig
from ppo_research.run.envs.training import TrainingEnvs
from ppo_research.run.loop.evaluation import Evaluator
from ppo_research.run.loop.seeds import env_seeds, eval_episode_seed, restart_env_seeds, stream_seed

SEEDS, ENVS, EPISODES = range(10), 8, 10


def start_states(env_id: str, seeds_of_run) -> dict:
    """(run seed, index) -> the first observation of that stream."""
    env = gym.make(env_id)
    try:
        return {(s, i): env.reset(seed=seed)[0] for s in SEEDS for i, seed in enumerate(seeds_of_run(s))}
    finally:
        env.close()


def shared(states: dict) -> list:
    """Pairs from different runs that start from the same state."""
    return [(a, b) for (a, x), (b, y) in itertools.combinations(states.items(), 2)
            if a[0] != b[0] and np.array_equal(x, y)]


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_independent_seed_streams(env_id):
    """Seeds 0..9 with 8 training envs and 10 evaluation episodes each: no two training envs and
    no two evaluation episodes of different runs start from the same state (the old scheme,
    seed + i, fails this: env i+1 of seed s is env i of seed s+1)."""
    train = start_states(env_id, lambda s: env_seeds(s, ENVS))
    evaluation = start_states(env_id, lambda s: [eval_episode_seed(s, j) for j in range(EPISODES)])
    assert len(train) == len(SEEDS) * ENVS and shared(train) == []
    assert len(evaluation) == len(SEEDS) * EPISODES and shared(evaluation) == []
    assert shared({**{("train", k): v for k, v in train.items()}, **{("eval", k): v for k, v in evaluation.items()}}) == []
    old = start_states(env_id, lambda s: [s + i for i in range(ENVS)])
    assert len(shared(old)) > 0  # the test can fail: consecutive seeds used to share start states


def test_independent_seed_streams_reach_the_envs_a_run_builds():
    """TrainingEnvs and Evaluator start from the streams above (not from seed + i)."""
    cfg = EnvConfig(id="CartPole-v1")
    envs = TrainingEnvs(cfg, ENVS, 0.99, env_seeds(3, ENVS))
    try:
        expected = start_states("CartPole-v1", lambda s: env_seeds(s, ENVS))
        for i in range(ENVS):
            np.testing.assert_array_equal(envs.obs[i], expected[(3, i)].astype(np.float32))
    finally:
        envs.close()
    evaluator = Evaluator(cfg, EPISODES, seed=3)
    try:
        assert [evaluator.episode_seed(j) for j in range(EPISODES)] == [eval_episode_seed(3, j) for j in range(EPISODES)]
    finally:
        evaluator.close()


def test_streams_are_distinct_and_accept_any_non_negative_seed():
    keys = [(0, i) for i in range(8)] + [(1, j) for j in range(8)] + [(2,), (3,)]
    for seed in (0, 1, 2**32 - 1, 2**32, 99999999999999999999):
        values = [stream_seed(seed, *k) for k in keys] + restart_env_seeds(seed, 1, 8)
        assert len(set(values)) == len(values)
        assert all(0 <= v < 2**64 for v in values)
