"""The serial vector env is gymnasium's SyncVectorEnv (NEXT_STEP autoreset), step for step."""
import gymnasium as gym
import numpy as np
import pytest

from ppo_research.run.config.schema import EnvConfig
from ppo_research.run.envs.training import make_env
from ppo_research.run.envs.vector import SerialVectorEnv


@pytest.mark.parametrize("env_id,max_steps", [("CartPole-v1", 30), ("Pendulum-v1", 25), ("HalfCheetah-v5", 40)])
def test_serial_vector_env_matches_sync_vector_env(env_id, max_steps):
    cfg = EnvConfig(id=env_id, max_episode_steps=max_steps)  # short episodes: many autoresets
    make = lambda: make_env(cfg)  # noqa: E731
    ours = SerialVectorEnv(make, 3)
    theirs = gym.vector.SyncVectorEnv([make] * 3, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    seeds = [11, 12, 13]
    obs_a, _ = ours.reset(seed=seeds)
    obs_b, _ = theirs.reset(seed=seeds)
    np.testing.assert_array_equal(obs_a, obs_b)
    theirs.action_space.seed(5)
    resets = 0
    for _ in range(120):
        action = theirs.action_space.sample()
        a, b = ours.step(action)[:4], theirs.step(action)[:4]
        for x, y in zip(a, b):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
        resets += int(ours._autoreset_envs.sum())
    assert resets >= 6  # the autoreset path was taken
    ours.close()
    theirs.close()


def test_serial_vector_env_wants_one_seed_per_env():
    with pytest.raises(ValueError, match="2 seeds for 3 envs"):
        SerialVectorEnv(lambda: gym.make("CartPole-v1"), 3).reset(seed=[1, 2])
