"""Normalisation statistics and env handling."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from ppo_research.errors import ConfigError
from ppo_research.run.config.schema import EnvConfig
from ppo_research.run.envs.lockstep import step_alone
from ppo_research.run.envs.moments import RunningMeanStd
from ppo_research.run.envs.training import ActionAdapter, ObsNormalizer, TrainingEnvs


@pytest.mark.parametrize("rows,dtype", [(1, np.float64), (3, np.float64), (4, np.float32)])
def test_running_mean_std_matches_numpy_over_all_data(rows, dtype):
    data = np.random.default_rng(0).normal(3.0, 2.0, size=(600, 4)).astype(dtype)
    stats = RunningMeanStd((4,))
    for start in range(0, len(data), rows):
        stats.update(data[start:start + rows])
    np.testing.assert_allclose(stats.mean, data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.var, data.var(0), rtol=1e-4)


def test_observation_statistics_frozen_when_not_updating():
    norm = ObsNormalizer((2,), enabled=True, clip=5.0)
    norm(np.array([[1.0, 2.0], [3.0, 4.0]]), update=True)
    before = norm.stats.state_dict()
    out = norm(np.array([[100.0, -100.0]]), update=False)
    np.testing.assert_array_equal(norm.stats.mean, before["mean"])
    assert out.dtype == np.float32 and np.abs(out).max() == 5.0


def test_action_modes():
    space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
    np.testing.assert_allclose(ActionAdapter(space, "clip")(np.array([[3.0, -1.0]])), [[2.0, 0.0]])
    np.testing.assert_allclose(ActionAdapter(space, "rescale")(np.array([[0.0, 1.0]])), [[0.0, 1.0]])
    np.testing.assert_allclose(ActionAdapter(space, "rescale")(np.array([[-1.0, 0.0]])), [[-2.0, 0.5]])
    np.testing.assert_allclose(ActionAdapter(space, "none")(np.array([[3.0, -1.0]])), [[3.0, -1.0]])


def test_unknown_env_id_is_a_config_error():
    with pytest.raises(ConfigError, match="env.id"):
        TrainingEnvs(EnvConfig(id="NoSuchEnv-v9"), 1, 0.99, [0])


def test_reward_scaling_divides_by_return_std():
    envs = TrainingEnvs(EnvConfig(id="Pendulum-v1", normalize_reward=True, clip_reward=None), 2, 0.99, [0, 1])
    try:
        scaled = [step_alone(envs, np.zeros((2, 1), np.float32))[1] for _ in range(300)]
        raw_like = np.array(scaled) * np.sqrt(envs.reward_scaler.stats.var + 1e-8)
        assert np.all(raw_like <= 0)  # Pendulum's rewards are <= 0; scaling keeps the sign
        assert envs.reward_scaler.stats.count > 500
    finally:
        envs.close()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((4, 3), 0), ((2, 9, 3), 1), ((3, 8), 1), ((5,), 0)])
def test_batch_moments_are_numpys_mean_and_var_bit_for_bit(shape, axis, dtype):
    from ppo_research.run.envs.moments import batch_moments

    batch = (np.random.default_rng(1).normal(size=shape) * 37.0 + 5.0).astype(dtype)
    mean, m2 = batch_moments(batch, axis)
    assert mean.dtype == batch.mean(axis).dtype
    np.testing.assert_array_equal(mean, batch.mean(axis))
    np.testing.assert_array_equal(m2, batch.var(axis) * shape[axis])


def test_statistics_keep_their_shape_through_a_checkpoint(tmp_path):
    """A scalar's statistics (the reward scaler's) come back 0-d from a checkpoint, as a
    population's lock-step bookkeeping stacks them with other members'; a checkpoint that holds
    them as (1,) (written before 0-d arrays were kept 0-d) loads 0-d too."""
    from ppo_research.run.rundir import checkpoint

    scalar, vector = RunningMeanStd(()), RunningMeanStd((3,))
    scalar.update(np.array([1.0, 3.0, 4.0]))
    vector.update(np.arange(6.0).reshape(2, 3))
    path = checkpoint.save(tmp_path, 1, {"iteration": 1, "scalar": scalar.state_dict(), "vector": vector.state_dict()},
                           keep=1)
    state = checkpoint.load(path)
    assert np.shape(state["scalar"]["mean"]) == () and np.shape(state["vector"]["mean"]) == (3,)
    loaded = RunningMeanStd(())
    loaded.load_state_dict({"mean": np.array([2.5]), "var": np.array([1.5]), "count": 3.0})
    assert loaded.mean.shape == loaded.var.shape == () and float(loaded.mean) == 2.5
    assert np.array([loaded.mean, scalar.mean]).shape == (2,)
