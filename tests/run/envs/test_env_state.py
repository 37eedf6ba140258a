"""The sub-envs' state in a checkpoint (run/envs/env_state.py): classic control and MuJoCo envs
continue bit for bit mid-episode; async envs restart with fresh episodes."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from ppo_research.run.config.schema import EnvConfig
from ppo_research.run.envs.lockstep import step_alone
from ppo_research.run.envs.training import TrainingEnvs
from ppo_research.run.rundir import checkpoint


def _random_actions(space: gym.Space, n: int, steps: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if isinstance(space, gym.spaces.Discrete):
        return [rng.integers(space.n, size=n) for _ in range(steps)]
    return [rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(np.float32) for _ in range(steps)]


def _rollout(envs: TrainingEnvs, actions) -> list:
    out = []
    for a in actions:
        obs, reward, terminated, truncated, valid, finished = step_alone(envs, a)
        out.append((obs.copy(), reward.copy(), terminated.copy(), truncated.copy(), valid.copy(), finished))
    return out


@pytest.mark.parametrize("env_id,kwargs", [("CartPole-v1", {}), ("Pendulum-v1", {"max_episode_steps": 30}),
                                           ("Hopper-v5", {"max_episode_steps": 40})])
def test_env_state_restores_exactly_mid_episode(env_id, kwargs):
    cfg = EnvConfig(id=env_id, normalize_obs=True, normalize_reward=True, **kwargs)
    original = TrainingEnvs(cfg, 3, 0.99, seeds=[1, 2, 3])
    actions = _random_actions(original.single_action_space, 3, 160, seed=2)
    _rollout(original, actions[:77])  # several episodes end and restart; others are mid-way
    state = checkpoint._from_storable(checkpoint._to_storable(original.state_dict()))  # as stored on disk
    expected = _rollout(original, actions[77:])

    restored = TrainingEnvs(cfg, 3, 0.99, seeds=[999, 1000, 1001])  # other seed: everything must come from the state
    assert restored.load_state_dict(state, reseed=[0, 1, 2]) is True
    got = _rollout(restored, actions[77:])
    for (a, b) in zip(expected, got):
        for x, y in zip(a[:5], b[:5]):
            np.testing.assert_array_equal(x, y)
        assert a[5] == b[5]  # finished episodes' returns and lengths
    original.close()
    restored.close()


def test_async_envs_resume_with_fresh_episodes():
    cfg = EnvConfig(id="CartPole-v1", vectorization="async")
    envs = TrainingEnvs(cfg, 2, 0.99, seeds=[1, 2])
    try:
        assert not envs.exact_state_supported
        _rollout(envs, _random_actions(envs.single_action_space, 2, 30, seed=0))
        state = envs.state_dict()
        assert "sub_envs" not in state
        assert envs.load_state_dict(state, reseed=[5, 6]) is False
        assert not envs.next_is_reset.any() and not envs.episodes.returns.any()
        _rollout(envs, _random_actions(envs.single_action_space, 2, 5, seed=1))  # continues
    finally:
        envs.close()
