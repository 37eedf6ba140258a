"""``env.backend=envpool`` (run/envs/envpool_backend.py) against the gymnasium path, on every preset.

Where the two backends agree, checked here:

- spaces: gymnasium's, on both (EnvPool's MuJoCo action spaces are float64, gymnasium's float32:
  actions are cast at the boundary);
- dynamics: started from the same state (gymnasium's env set to EnvPool's first state), the same
  actions give the same observations, flags and rewards on every preset, to round-off, for the
  first 40 steps or to the episode's end;
- initial states: drawn from the same distributions (per-dimension mean and spread);
- NEXT_STEP autoreset, step for step against gymnasium's own ``SyncVectorEnv``;
- the lock-step path (populations), resume, seeds, the one-line refusals.

Where they differ, also checked here (docs/extending.md, "Env backends", lists them):

- the same seed gives other initial states (EnvPool draws from its own C++ RNG);
- rewards arrive as float32 (gymnasium's MuJoCo and Pendulum rewards are float64): ~1e-7 relative;
- HalfCheetah's contact-rich dynamics amplify last-bit differences (the two MuJoCo builds differ):
  its trajectories part after ~60-100 steps, so over whole episodes it is compared by the
  distribution of a fixed policy's returns (Swimmer and the rest stay within 1e-10 much longer);
- Pendulum-v1: on a step whose angular velocity passes the limit of 8, EnvPool advances the
  angle by the unclipped velocity (old gym's order), gymnasium by the clipped one;
- an episode that terminates on the time limit's last step is truncated only on EnvPool
  (gymnasium: terminated and truncated), so the trainer bootstraps that one step;
- a resume cannot restore EnvPool's envs: they restart with fresh, re-seeded episodes.
"""
from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf

from ppo_research.errors import ConfigError
from ppo_research.run.config.compose import CONF_DIR, compose
from ppo_research.run.config.schema import EnvConfig, validate
from ppo_research.run.envs.lockstep import LockstepEnvs, step_alone
from ppo_research.run.envs.training import TrainingEnvs, make_env, probe_spaces
from ppo_research.run.loop.build import probe_env

HAVE_ENVPOOL = importlib.util.find_spec("envpool") is not None
needs_envpool = pytest.mark.skipif(not HAVE_ENVPOOL, reason='EnvPool is not installed (the envpool extra: '
                                                            'pip install -c constraints.txt -e ".[envpool]")')
if HAVE_ENVPOOL:
    from ppo_research.run.envs.envpool_backend import EnvPoolVectorEnv, envpool_seed, make_pool

#: every preset's env id (conf/env/*.yaml), the Atari games aside (tests/run/envs/test_atari.py)
PRESETS = {path.stem: OmegaConf.load(path).env.id for path in sorted((CONF_DIR / "env").glob("*.yaml"))
           if not OmegaConf.load(path).env.id.startswith("ALE/")}


def _quiet():
    warnings.filterwarnings("ignore", message=".*precision lowered by casting")


def set_state(env_id: str, env: gym.Env, obs: np.ndarray, info: dict) -> None:
    """Put gymnasium's ``env`` (reset) into the state EnvPool's env shows as ``obs`` (its info row
    ``info``: the x, y positions MuJoCo's observations leave out)."""
    u, o = env.unwrapped, np.asarray(obs, np.float64)
    name = env_id.split("-")[0]
    if name == "CartPole":
        u.state = o.copy()
        return
    if name == "Pendulum":
        u.state = np.array([np.arctan2(o[1], o[0]), o[2]])
        return
    qpos, qvel = {
        "InvertedPendulum": lambda: (o[:2], o[2:]),
        "InvertedDoublePendulum": lambda: (np.r_[o[0], np.arctan2(o[1], o[3]), np.arctan2(o[2], o[4])], o[5:8]),
        "HalfCheetah": lambda: (np.r_[info["x_position"], o[:8]], o[8:]),
        "Hopper": lambda: (np.r_[info["x_position"], o[:5]], o[5:]),
        "Walker2d": lambda: (np.r_[info["x_position"], o[:8]], o[8:]),
        "Swimmer": lambda: (np.r_[info["x_position"], info["y_position"], o[:3]], o[3:]),
        "Reacher": lambda: (np.r_[np.arctan2(o[2], o[0]), np.arctan2(o[3], o[1]), o[4:6]], np.r_[o[6:8], 0.0, 0.0]),
    }[name]()
    u.set_state(qpos, qvel)


def _row(info: dict, i: int) -> dict:
    return {k: v[i] for k, v in info.items() if isinstance(v, np.ndarray) and v.ndim and len(v) > i}


def _actions(space: gym.Space, n: int, steps: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if isinstance(space, gym.spaces.Discrete):
        return [rng.integers(space.n, size=n) for _ in range(steps)]
    return [rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(np.float32) for _ in range(steps)]


# ---------------------------------------------------------------------------------------------
# every preset: spaces, dynamics from one state, initial-state distributions

@needs_envpool
@pytest.mark.parametrize("preset", PRESETS)
def test_spaces_are_gymnasiums(preset):
    _quiet()
    cfg = EnvConfig(id=PRESETS[preset], backend="envpool")
    obs_space, action_space = probe_env(cfg)  # gymnasium's, and EnvPool's checked against them
    envs = TrainingEnvs(cfg, 2, 0.99, [1, 2])
    try:
        assert isinstance(envs.envs, EnvPoolVectorEnv)
        assert envs.single_observation_space == obs_space and envs.single_action_space == action_space
        assert envs.raw_obs_dtype == obs_space.dtype
        assert envs.obs.shape == (2, *obs_space.shape)
    finally:
        envs.close()


@needs_envpool
@pytest.mark.parametrize("preset", PRESETS)
def test_same_state_same_dynamics(preset):
    """From EnvPool's first state, set into gymnasium's env, the same actions give the same
    steps: observations to 1e-5 (float32 ones to their round-off), rewards to float32's 1e-6
    relative, the same flags, for 40 steps or to the episode's end."""
    _quiet()
    env_id = PRESETS[preset]
    cfg = EnvConfig(id=env_id)
    ours = EnvPoolVectorEnv(cfg, 1, probe_spaces(cfg))
    theirs = make_env(cfg)
    try:
        obs, info = ours.reset(seed=[7])
        theirs.reset(seed=0)
        set_state(env_id, theirs, obs[0], _row(info, 0))
        steps = 0
        for action in _actions(theirs.action_space, 1, 40, seed=1):
            o1, r1, te1, tr1, _ = theirs.step(action[0])
            o2, r2, te2, tr2, _ = ours.step(action)
            np.testing.assert_allclose(o2[0], o1, rtol=1e-6, atol=1e-5, err_msg=f"{env_id} step {steps}")
            np.testing.assert_allclose(r2[0], r1, rtol=1e-6, atol=1e-6, err_msg=f"{env_id} step {steps}")
            assert (te2[0], tr2[0]) == (te1, tr1), f"{env_id} step {steps}"
            assert o2.dtype == theirs.observation_space.dtype
            steps += 1
            if te1 or tr1:
                break
        assert steps >= 5
    finally:
        ours.close()
        theirs.close()


@needs_envpool
@pytest.mark.parametrize("preset", PRESETS)
def test_initial_states_share_a_distribution_not_the_seeds(preset):
    """64 first observations from each backend: per dimension, means within 5 standard errors,
    spreads within a factor 1.5. The same seeds give other states (EnvPool's own RNG)."""
    _quiet()
    env_id, n = PRESETS[preset], 64
    cfg = EnvConfig(id=env_id)
    seeds = list(range(100, 100 + n))
    env = make_env(cfg)
    ours = np.stack([env.reset(seed=s)[0] for s in seeds]).astype(np.float64)
    env.close()
    pool = EnvPoolVectorEnv(cfg, n, (env.observation_space, env.action_space))
    theirs = pool.reset(seed=seeds)[0].astype(np.float64)
    pool.close()
    assert not np.allclose(ours, theirs)
    for d in range(ours.shape[1]):
        a, b = ours[:, d], theirs[:, d]
        if a.std() < 1e-12 and b.std() < 1e-12:  # a constant of the reset
            np.testing.assert_allclose(a.mean(), b.mean(), atol=1e-9, err_msg=f"{env_id} dim {d}")
            continue
        se = np.sqrt((a.var() + b.var()) / n)
        assert abs(a.mean() - b.mean()) < 5 * se, f"{env_id} dim {d}: means {a.mean()} vs {b.mean()}"
        assert 1 / 1.5 < a.std() / b.std() < 1.5, f"{env_id} dim {d}: stds {a.std()} vs {b.std()}"


@needs_envpool
def test_halfcheetah_returns_share_a_distribution():
    """HalfCheetah's trajectories part after ~60-100 steps (last-bit differences grow through its
    contacts): over whole episodes, a fixed policy (a seeded sequence of uniform actions, the same
    on both) gives returns from one distribution: means within 4 standard errors."""
    _quiet()
    cfg, n = EnvConfig(id="HalfCheetah-v5"), 8
    actions = _actions(make_env(cfg).action_space, 1, 1000, seed=3)
    env = make_env(cfg)
    ours = []
    for j in range(n):
        env.reset(seed=j)
        ours.append(sum(float(env.step(a[0])[1]) for a in actions))
    pool = EnvPoolVectorEnv(cfg, n, (env.observation_space, env.action_space))
    pool.reset(seed=list(range(n)))
    theirs = np.zeros(n)
    for a in actions:
        _, reward, terminated, truncated, _ = pool.step(np.repeat(a, n, axis=0))
        theirs += reward
    assert truncated.all() and not terminated.any()  # 1000 steps: every episode at its time limit
    env.close()
    pool.close()
    ours = np.array(ours)
    se = np.sqrt((ours.var(ddof=1) + theirs.var(ddof=1)) / n)
    assert abs(ours.mean() - theirs.mean()) < 4 * se + 1e-6, (ours, theirs)


# ---------------------------------------------------------------------------------------------
# NEXT_STEP autoreset, truncation, where the end of an episode differs

@needs_envpool
@pytest.mark.parametrize("env_id,max_steps", [("CartPole-v1", 30), ("Pendulum-v1", 25), ("Hopper-v5", 40)])
def test_next_step_autoreset_matches_sync_vector_env(env_id, max_steps):
    """Against gymnasium's SyncVectorEnv in NEXT_STEP mode, re-synchronised after each autoreset
    (the reset states differ, the semantics must not): terminations, truncations at the time
    limit with the episode's real last observation, reset steps (reward 0, neither flag)."""
    _quiet()
    cfg = EnvConfig(id=env_id, max_episode_steps=max_steps)
    make = lambda: make_env(cfg)  # noqa: E731
    n = 3
    theirs = gym.vector.SyncVectorEnv([make] * n, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    ours = EnvPoolVectorEnv(cfg, n, (theirs.single_observation_space, theirs.single_action_space))
    obs, info = ours.reset(seed=[1, 2, 3])
    theirs.reset(seed=[1, 2, 3])
    for i, env in enumerate(theirs.envs):
        set_state(env_id, env, obs[i], _row(info, i))
    resets = truncations = 0
    for action in _actions(theirs.single_action_space, n, 150, seed=4):
        o2, r2, te2, tr2, info = ours.step(action)
        o1, r1, te1, tr1, _ = theirs.step(action)
        for i in range(n):
            if info["elapsed_step"][i] == 0:  # EnvPool's reset step: gymnasium's too, then synchronised
                assert (r1[i], te1[i], tr1[i]) == (0.0, False, False)
                assert (r2[i], te2[i], tr2[i]) == (0.0, False, False)
                set_state(env_id, theirs.envs[i], o2[i], _row(info, i))
                resets += 1
                continue
            np.testing.assert_allclose(r2[i], r1[i], rtol=1e-6, atol=1e-6)
            assert (te2[i], tr2[i]) == (te1[i], tr1[i])
            truncations += int(tr2[i])
            if env_id == "Pendulum-v1" and abs(o2[i][2]) == 8.0:  # at the speed limit the angles part (below)
                set_state(env_id, theirs.envs[i], o2[i], _row(info, i))
                continue
            np.testing.assert_allclose(o2[i], o1[i], rtol=1e-6, atol=1e-5)
    assert resets >= 3 and truncations >= 1
    ours.close()
    theirs.close()


@needs_envpool
def test_termination_on_the_time_limit_is_truncation_only():
    """Where they differ: pushed right, CartPole seeded 1 on EnvPool falls on its 9th step. With
    a time limit of 9 gymnasium says terminated and truncated; EnvPool says truncated only."""
    _quiet()
    for limit, expected in ((10, (True, False)), (9, (False, True))):
        pool = make_pool(EnvConfig(id="CartPole-v1", max_episode_steps=limit), [1])
        obs, info = pool.reset()
        env = make_env(EnvConfig(id="CartPole-v1", max_episode_steps=limit))
        env.reset(seed=0)
        set_state("CartPole-v1", env, obs[0], {})
        for step in range(1, 10):
            _, _, te, tr, _ = pool.step(np.array([1]))
            _, _, te1, tr1, _ = env.step(1)
            if te[0] or tr[0]:
                break
        assert step == 9 and (bool(te[0]), bool(tr[0])) == expected
        assert (te1, tr1) == ((True, False) if limit == 10 else (True, True))
        pool.close()
        env.close()


@needs_envpool
def test_pendulum_angle_on_a_step_that_hits_the_speed_limit():
    """Where they differ: on a step whose new angular velocity passes 8 (clipped to 8 on both),
    EnvPool's Pendulum-v1 advances the angle by the unclipped velocity (old gym's order),
    gymnasium's by the clipped one. Both step from EnvPool's state, one step at a time, under
    torque along the spin; the angles part on the steps past the limit, by dt * the excess."""
    _quiet()
    cfg = EnvConfig(id="Pendulum-v1", max_episode_steps=1000)
    env = make_env(cfg)
    env.reset(seed=0)
    pool = EnvPoolVectorEnv(cfg, 1, (env.observation_space, env.action_space))
    obs, _ = pool.reset(seed=[3])
    saturated = 0
    for _ in range(200):  # torque along the spin: the speed soon passes the limit
        set_state("Pendulum-v1", env, obs[0], {})
        th, thdot = env.unwrapped.state
        action = np.array([[2.0 if thdot >= 0 else -2.0]], np.float32)
        o1 = env.step(action[0])[0]
        obs = pool.step(action)[0]
        if abs(obs[0][2]) < 8.0:
            np.testing.assert_allclose(obs[0], o1, atol=1e-5)
            continue
        u = float(np.clip(action[0][0], -2.0, 2.0))
        unclipped = thdot + (3 * 10.0 / 2 * np.sin(th) + 3.0 * u) * 0.05
        if abs(unclipped) <= 8.0 + 1e-3:
            continue  # hardly past the limit: the angles agree to round-off
        saturated += 1
        assert o1[2] == obs[0][2] == np.sign(unclipped) * 8.0
        theirs = th + unclipped * 0.05
        np.testing.assert_allclose(obs[0][:2], [np.cos(theirs), np.sin(theirs)], atol=1e-5)
        assert np.abs(obs[0][:2] - o1[:2]).max() > 1e-5
    assert saturated >= 3
    pool.close()
    env.close()


# ---------------------------------------------------------------------------------------------
# seeds, resume, populations

@needs_envpool
def test_each_env_is_seeded_from_its_own_stream():
    """Env i's seed is its own (one per env, EnvPool's ``seed=[...]``), not ``base + i``: swapping
    two envs' seeds swaps their states, and a seed means the same state in any pool or position."""
    _quiet()
    cfg = EnvConfig(id="CartPole-v1")
    spaces = probe_env(cfg)
    big = 2**63 + 12345  # a 64-bit stream seed (run/loop/seeds.py): EnvPool takes its low 31 bits
    a = EnvPoolVectorEnv(cfg, 3, spaces).reset(seed=[11, 12, big])[0]
    b = EnvPoolVectorEnv(cfg, 3, spaces).reset(seed=[12, 11, big])[0]
    np.testing.assert_array_equal(a[[1, 0, 2]], b)
    c = EnvPoolVectorEnv(cfg, 1, spaces).reset(seed=[big])[0]
    np.testing.assert_array_equal(c[0], a[2])
    assert envpool_seed(big) == 12345 and envpool_seed(11) == 11
    assert not np.array_equal(EnvPoolVectorEnv(cfg, 1, spaces).reset(seed=[13])[0][0], a[1])  # not 12 + 1


@needs_envpool
def test_resume_restarts_envpool_envs_with_fresh_seeded_episodes():
    """What EnvPool cannot checkpoint (its envs' internal state) is handled as the gymnasium
    path's non-exact resume: statistics restored, envs re-made with the restart seeds."""
    _quiet()
    cfg = EnvConfig(id="Pendulum-v1", backend="envpool", normalize_obs=True, normalize_reward=True,
                    max_episode_steps=30)
    envs = TrainingEnvs(cfg, 2, 0.99, seeds=[1, 2])
    try:
        assert not envs.exact_state_supported
        for a in _actions(envs.single_action_space, 2, 45, seed=0):
            step_alone(envs, a)
        state = envs.state_dict()
        assert "sub_envs" not in state
        stats = envs.obs_norm.stats.state_dict()
        assert envs.load_state_dict(state, reseed=[5, 6]) is False
        assert not envs.next_is_reset.any() and not envs.episodes.returns.any()
        fresh = EnvPoolVectorEnv(cfg, 2, (envs.single_observation_space, envs.single_action_space))
        fresh.reset(seed=[5, 6])
        for a in _actions(envs.single_action_space, 2, 5, seed=1):  # the pool was re-made with the restart seeds
            np.testing.assert_array_equal(envs.envs.step(a)[0], fresh.step(a)[0])
        fresh.close()
        assert envs.obs_norm.stats.count == stats["count"] + 2  # restored, then the fresh first observations
    finally:
        envs.close()


@needs_envpool
@pytest.mark.parametrize("env_id,num_envs", [("CartPole-v1", 4), ("HalfCheetah-v5", 2)])
def test_lockstep_envpool_members_match_each_member_alone(env_id, num_envs):
    """A population's members on EnvPool step together (run/envs/lockstep.py) as each alone."""
    _quiet()
    cfg = EnvConfig(id=env_id, backend="envpool", max_episode_steps=25, normalize_obs=True, normalize_reward=True)
    make = lambda: [TrainingEnvs(cfg, num_envs, g, [100 * k + i for i in range(num_envs)])  # noqa: E731
                    for k, g in enumerate((0.99, 0.9))]
    alone, together = make(), make()
    lockstep = LockstepEnvs(together)
    assert lockstep._into is not None  # the write-into-rows path
    finished = 0
    for a in _actions(alone[0].single_action_space, num_envs, 60, seed=5):
        actions = np.stack([a, a])
        stacked = lockstep.step(actions)
        for k, member in enumerate(alone):
            solo = step_alone(member, actions[k])
            for x, y in zip(solo[:5], stacked[:5]):
                np.testing.assert_array_equal(x, y[k])
            assert solo[5] == stacked[5][k]
            finished += len(solo[5])
    lockstep.release()
    assert finished > 0
    for m in alone + together:
        m.close()


@needs_envpool
def test_a_population_trains_on_envpool(tmp_path, monkeypatch):
    """Two members through the population path, then a resume from the first checkpoint: it
    warns (one line) that EnvPool's envs restart re-seeded."""
    from ppo_research.run.loop.train import MemberJob, train_from_config, train_members
    from ppo_research.run.rundir import checkpoint

    base = ["logger=none", "progress=false", "eval.episodes=2", "env=cartpole", "env.backend=envpool",
            "total_timesteps=512", "algo.num_steps=32", "algo.num_epochs=2", "checkpoint.every=1"]
    jobs = []
    for s in (0, 1):
        composed = compose([*base, f"seed={s}"])
        jobs.append(MemberJob(composed.cfg, tmp_path / f"m{s}", composed.choices))
    results = train_members(jobs)
    assert all(isinstance(r, dict) for r in results), results
    rows = [Path(tmp_path / f"m{s}" / "metrics.jsonl").read_text().splitlines() for s in (0, 1)]
    assert len(rows[0]) == len(rows[1]) == 2 and rows[0][0] != rows[1][0]

    first = sorted((tmp_path / "m0" / "checkpoints").glob("*.pt"))[0]
    assert checkpoint.latest(tmp_path / "m0") != first
    lines = []
    monkeypatch.setattr("ppo_research.run.loop.train.write_line", lambda text, stream=None: lines.append(text))
    train_from_config(jobs[0].cfg, tmp_path / "m0", jobs[0].choices, resume_from=first)
    warning = [line for line in lines if line.startswith("warning: the envs")]
    assert len(warning) == 1 and "(envpool)" in warning[0] and "re-seeded" in warning[0], lines


# ---------------------------------------------------------------------------------------------
# one-line refusals

def test_envpool_not_installed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "envpool", None)  # import envpool -> ImportError
    from ppo_research.run.envs import envpool_backend as backend

    with pytest.raises(ConfigError) as err:
        backend.import_envpool()
    text = str(err.value)
    assert text.startswith("env.backend='envpool' is invalid") and ".[envpool]" in text and "\n" not in text
    with pytest.raises(ConfigError, match=r"\.\[envpool\]"):
        probe_env(EnvConfig(id="CartPole-v1", backend="envpool"))


@needs_envpool
def test_an_env_envpool_lacks_is_one_line():
    with pytest.raises(ConfigError) as err:
        make_pool(EnvConfig(id="NoSuchEnv-v0"), [0])
    text = str(err.value)
    assert "envpool.list_all_envs()" in text and "env.backend=gymnasium" in text and "\n" not in text


@needs_envpool
def test_a_keyword_envpool_does_not_take_is_one_line():
    _quiet()
    with pytest.raises(ConfigError) as err:
        probe_env(EnvConfig(id="Pendulum-v1", backend="envpool", kwargs={"g": 9.0}))  # gymnasium takes g
    text = str(err.value)
    assert text.startswith("env.kwargs=") and "EnvPool's Pendulum-v1" in text and "\n" not in text


def test_an_env_gymnasium_lacks_is_one_line_naming_why_it_is_needed():
    with pytest.raises(ConfigError) as err:
        probe_env(EnvConfig(id="CheetahRun-v1", backend="envpool"))  # EnvPool's DMC task: not gymnasium's
    text = str(err.value)
    assert "registered gymnasium id" in text and "env.backend=envpool needs it in gymnasium too" in text
    assert "\n" not in text


def test_backend_and_vectorization_are_checked_in_the_schema():
    with pytest.raises(ConfigError, match="env.backend='pool' is invalid: expected one of gymnasium, envpool"):
        validate(compose(["env.backend=pool", "logger=none"]).cfg)
    with pytest.raises(ConfigError, match="env.vectorization='async' is invalid: expected sync with env.backend=envpool"):
        validate(compose(["env.backend=envpool", "env.vectorization=async", "logger=none"]).cfg)
    assert validate(compose(["env=hopper", "logger=none"]).cfg).env.backend == "gymnasium"  # every preset's default
