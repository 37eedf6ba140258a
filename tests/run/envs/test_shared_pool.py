"""One EnvPool for a lock-step population (run/envs/shared_pool.py) against the plain path, each
member's own pool: the same observations, rewards, flags and finished episodes, bit for bit."""
from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest

from ppo_research.run.config.compose import compose
from ppo_research.run.config.schema import EnvConfig, validate
from ppo_research.run.envs.lockstep import LockstepEnvs, step_alone
from ppo_research.run.envs.training import TrainingEnvs

HAVE_ENVPOOL = importlib.util.find_spec("envpool") is not None
HAVE_ALE = importlib.util.find_spec("ale_py") is not None and importlib.util.find_spec("cv2") is not None
pytestmark = pytest.mark.skipif(not HAVE_ENVPOOL, reason='EnvPool is not installed (the envpool extra: '
                                                         'pip install -c constraints.txt -e ".[envpool]")')
if HAVE_ENVPOOL:
    from ppo_research.run.envs.shared_pool import share_one_pool

GAMMAS = (0.99, 0.9, 0.95)  # three members, each with its own reward-scaling statistics


def population(cfg: EnvConfig, num_envs: int) -> list[TrainingEnvs]:
    """Three members' envs, each with its own seeds (as run/loop/seeds.py gives them)."""
    return [TrainingEnvs(cfg, num_envs, g, [1000 * k + 7 * i for i in range(num_envs)]) for k, g in enumerate(GAMMAS)]


def random_actions(envs: TrainingEnvs, members: int, steps: int, seed: int = 0):
    space, rng = envs.single_action_space, np.random.default_rng(seed)
    if space.shape == ():
        return [rng.integers(space.n, size=(members, envs.num_envs)) for _ in range(steps)]
    return [rng.uniform(space.low, space.high, size=(members, envs.num_envs, *space.shape)).astype(np.float32)
            for _ in range(steps)]


def assert_same_step(a, b) -> None:
    for x, y in zip(a[:5], b[:5]):
        np.testing.assert_array_equal(x, y)
    assert a[5] == b[5]


def _env_cases():
    mujoco = dict(max_episode_steps=30, normalize_obs=True, normalize_reward=True)
    yield pytest.param(EnvConfig(id="Pendulum-v1", backend="envpool", **mujoco), 4, id="pendulum")
    yield pytest.param(EnvConfig(id="HalfCheetah-v5", backend="envpool", **mujoco), 1, id="halfcheetah")
    yield pytest.param(EnvConfig(id="CartPole-v1", backend="envpool"), 2, id="cartpole")
    if HAVE_ALE:  # frames, lives and episodic life through the shared pool
        yield pytest.param(validate(compose(["env=breakout", "env.backend=envpool"]).cfg).env, 2, id="breakout")


@pytest.mark.parametrize("cfg, num_envs", list(_env_cases()))
def test_one_pool_steps_each_member_as_its_own_pool_does(cfg, num_envs):
    """Every step of three members in lock step, then two after one has ended, then one alone."""
    warnings.filterwarnings("ignore", message=".*precision lowered by casting")
    own, shared = population(cfg, num_envs), population(cfg, num_envs)
    pool = share_one_pool([m.envs for m in shared])
    assert pool is not None and all(m.envs.shared is pool and m.envs.pool is None for m in shared)
    steps = 240 if cfg.preprocess == "atari" else 120
    actions = random_actions(own[0], 3, steps)
    finished = 0
    try:
        for members, part in (([0, 1, 2], actions[:steps // 2]), ([0, 2], actions[steps // 2:-10]), ([2], actions[-10:])):
            plain = LockstepEnvs([own[k] for k in members])
            assert plain.shared is None and plain._into is not None
            together = LockstepEnvs([shared[k] for k in members])
            assert together.shared is pool
            for a in part:
                a = a[members]
                expected, got = plain.step(a), together.step(a)
                for k in range(len(members)):
                    assert_same_step([x[k] for x in expected], [x[k] for x in got])
                finished += sum(len(f) for f in got[5]) + int(got[2].sum())  # episodes, lost lives
            plain.release()
            together.release()
            for k in members:
                np.testing.assert_array_equal(own[k].obs, shared[k].obs)
                np.testing.assert_array_equal(own[k].reward_scaler.discounted, shared[k].reward_scaler.discounted)
        assert finished > 0  # episodes ended (and reset), or lives were lost, inside the comparison
        # member 1 missed steps: its rows can never step again
        with pytest.raises(RuntimeError, match=r"rows \[1\] of the shared EnvPool missed a step"):
            step_alone(shared[1], actions[0][1])
    finally:
        for m in own + shared:
            m.close()
    assert pool.envs.pool is None  # the last member to close its envs closed the pool


def test_only_fresh_envs_of_one_config_share_a_pool():
    """Envs that stepped since their reset, or members of different configs, keep their own pools;
    a member that is reset leaves the shared pool for one of its own."""
    warnings.filterwarnings("ignore", message=".*precision lowered by casting")
    cfg = EnvConfig(id="Pendulum-v1", backend="envpool")
    members = population(cfg, 2)
    try:
        step_alone(members[0], np.zeros((2, 1), np.float32))
        assert share_one_pool([m.envs for m in members]) is None  # member 0 has stepped
        members[0].envs.reset(seed=[1, 2])
        assert share_one_pool([members[0].envs]) is None  # one member: nothing to share
        other = TrainingEnvs(EnvConfig(id="Pendulum-v1", backend="envpool", max_episode_steps=50), 2, 0.99, [3, 4])
        assert share_one_pool([members[0].envs, other.envs]) is None  # another config
        other.close()
        pool = share_one_pool([m.envs for m in members])
        assert pool is not None
        members[1].envs.reset(seed=[5, 6])  # leaves: its own pool again
        assert members[1].envs.shared is None and members[1].envs.pool is not None
        step_alone(members[1], np.zeros((2, 1), np.float32))
        with pytest.raises(RuntimeError, match="some members' envs are rows of a shared EnvPool and some are not"):
            LockstepEnvs(members)
    finally:
        for m in members:
            m.close()


def test_a_population_on_envpool_trains_on_one_pool_with_the_plain_paths_numbers(tmp_path, monkeypatch):
    """A population of two on EnvPool (the trainer forms the shared pool at its first rollout):
    every member's metrics as when each member keeps its own pool."""
    from helpers import read_metrics, without_timing

    from ppo_research.run.envs import shared_pool
    from ppo_research.run.loop import trainer
    from ppo_research.run.loop.train import MemberJob, train_members

    warnings.filterwarnings("ignore", message=".*precision lowered by casting")
    base = ["logger=none", "progress=false", "eval.episodes=2", "env=pendulum", "env.backend=envpool",
            "total_timesteps=1024", "algo.num_steps=64", "algo.minibatch_size=64", "algo.num_epochs=2"]
    formed = []
    monkeypatch.setattr(trainer, "share_one_pool", lambda envs: formed.append(shared_pool.share_one_pool(envs)))

    def run(name: str) -> list[list[dict]]:
        jobs = [MemberJob(compose([*base, f"seed={s}"]).cfg, tmp_path / name / f"m{s}", {}) for s in (0, 1)]
        results = train_members(jobs)
        assert all(isinstance(r, dict) for r in results), results
        return [without_timing(read_metrics(tmp_path / name / f"m{s}")) for s in (0, 1)]

    shared = run("shared")
    assert len(formed) == 1 and formed[0] is not None and formed[0].envs.pool is None  # formed once, closed at the end
    monkeypatch.setattr(trainer, "share_one_pool", lambda envs: formed.append("plain"))
    assert run("plain") == shared and formed[1:] == ["plain"]
    assert len(shared[0]) == 4 and shared[0] != shared[1]
