"""The bookkeeping (run/envs/bookkeeping.py), compiled or in numpy, gives the numpy formulas' numbers, bit for bit:
episode returns, reward scaling over valid steps, observation normalisation - over members,
envs, observation sizes and dtypes that take each of numpy's summation orders."""
import numpy as np
import pytest

from ppo_research.run.envs.bookkeeping import BookkeepingState, step_bookkeeping
from ppo_research.run.envs.moments import batch_moments, merge_moments
from ppo_research.run.envs.moments import clip as _clip


class NumpyBookkeeping:
    """The reference: the same step written with numpy's array operations."""

    def __init__(self, S, N, D, gamma, reward_clip, obs_clip, reward_on, obs_on):
        self.returns, self.lengths, self.discounted = np.zeros((S, N)), np.zeros((S, N), np.int64), np.zeros((S, N))
        self.gamma = np.asarray(gamma)[:, None]
        self.r_mean, self.r_var, self.r_count = np.zeros(S), np.ones(S), np.full(S, 1e-4)
        self.o_mean, self.o_var, self.o_count = np.zeros((S, D)), np.ones((S, D)), np.full((S, 1), 1e-4)
        self.reward_clip, self.obs_clip, self.reward_on, self.obs_on = reward_clip, obs_clip, reward_on, obs_on

    def step(self, raw, rewards, episode_end, valid):
        self.returns += np.where(valid, rewards, 0.0)
        self.lengths += valid
        if self.reward_on:
            self.discounted = self.discounted * self.gamma + rewards
            for k in range(len(rewards)):
                rows = self.discounted[k][valid[k]]
                if len(rows):
                    self.r_mean[k], self.r_var[k], self.r_count[k] = merge_moments(
                        self.r_mean[k], self.r_var[k], float(self.r_count[k]), *batch_moments(rows, 0), len(rows))
            self.discounted[episode_end] = 0.0
            scaled = rewards / np.sqrt(self.r_var + 1e-8)[:, None]
            if self.reward_clip is not None:
                scaled = _clip(scaled, -self.reward_clip, self.reward_clip)
        else:
            scaled = rewards
        if self.obs_on:
            self.o_mean, self.o_var, self.o_count = merge_moments(self.o_mean, self.o_var, self.o_count,
                                                                  *batch_moments(raw, 1), raw.shape[1])
            obs = (raw - self.o_mean[:, None]) / np.sqrt(self.o_var[:, None] + 1e-8)
            if self.obs_clip is not None:
                obs = _clip(obs, -self.obs_clip, self.obs_clip)
        else:
            obs = raw
        return obs.astype(np.float32), scaled.astype(np.float32)


CASES = [  # S, N, D, dtype
    (1, 1, 17, np.float64),    # a solo MuJoCo run: one sample, no batch variance
    (3, 4, 3, np.float32),     # Pendulum-like: float32 observations are summed in float32
    (2, 8, 4, np.float64),     # 8 envs: numpy's pairwise sum of the rewards starts its 8 accumulators
    (2, 9, 1, np.float32),     # one-dimensional observations: a contiguous row, so summed pairwise
    (1, 17, 2, np.float64),
    (2, 300, 1, np.float64),   # past 128: the pairwise sum splits in halves
]


@pytest.mark.parametrize("S,N,D,dtype", CASES)
@pytest.mark.parametrize("clips,switches", [((10.0, 10.0), (True, True)), ((None, 5.0), (True, True)),
                                            ((10.0, None), (False, True)), ((None, None), (True, False))])
@pytest.mark.parametrize("compiled", [True, False], ids=["numba", "numpy"])
def test_each_step_is_the_numpy_formulas_bit_for_bit(S, N, D, dtype, clips, switches, compiled):
    """The compiled kernel and the numpy fallback (no numba, or algo.fast_paths=false) both."""
    rng = np.random.default_rng(S * 1000 + N * 10 + D)
    gamma = rng.uniform(0.8, 0.999, S)
    ref = NumpyBookkeeping(S, N, D, gamma, *clips, *switches)
    state = BookkeepingState(ref.returns, ref.lengths, ref.discounted, gamma, (ref.r_mean, ref.r_var, ref.r_count),
                             clips[0], switches[0], (ref.o_mean, ref.o_var, ref.o_count), clips[1], switches[1])
    for t in range(40):
        raw = (rng.normal(size=(S, N, D)) * rng.uniform(0.1, 50.0, D) + 3.0).astype(dtype)
        rewards = rng.normal(size=(S, N)) * 7.0 - 2.0
        episode_end = rng.random((S, N)) < 0.1
        valid = rng.random((S, N)) > (0.2 if t % 3 else 0.0)  # some steps all valid, some with reset steps
        rewards[~valid] = 0.0
        obs, scaled = np.empty((S, N, D), np.float32), np.empty((S, N), np.float32)
        step_bookkeeping(raw, rewards, episode_end, valid, state, obs, scaled, compiled=compiled)
        ref_obs, ref_scaled = ref.step(raw, rewards, episode_end, valid)
        np.testing.assert_array_equal(obs, ref_obs)
        np.testing.assert_array_equal(scaled, ref_scaled)
        for ours, theirs in [(state.returns, ref.returns), (state.lengths, ref.lengths),
                             (state.discounted, ref.discounted), (state.reward_mean, ref.r_mean),
                             (state.reward_var, ref.r_var), (state.reward_count, ref.r_count),
                             (state.obs_mean, ref.o_mean), (state.obs_var, ref.o_var),
                             (state.obs_count, ref.o_count.reshape(-1))]:
            np.testing.assert_array_equal(ours, theirs)


#: ``python -m ppo_research`` with the kernel loaded whatever the run's length (a short run would
#: otherwise take the numpy step: bookkeeping.worth_compiling)
COMPILED_ALWAYS = ("import runpy, sys; from ppo_research.run.envs import bookkeeping; "
                   "bookkeeping.COMPILE_FROM_STEPS = 0; sys.argv = ['ppo_research', *sys.argv[1:]]; "
                   "runpy.run_module('ppo_research', run_name='__main__')")


def test_an_install_where_numba_cannot_cache_still_trains(tmp_path):
    """A read-only install (a container image, say) with no writable cache directory: numba cannot
    cache the kernel, so each process compiles it. A run still trains, and says so once."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    install = tmp_path / "install"
    for part in ("ppo_research", "conf"):
        shutil.copytree(repo / part, install / part, ignore=shutil.ignore_patterns("__pycache__"))
    # Unwritable even for root: a file where numba's directories would be made
    (install / "ppo_research" / "run" / "envs" / "__pycache__").write_text("")
    (tmp_path / "blocked").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "PYTHONPATH"))}
    env.update(PYTHONPATH=str(install), PYTHONDONTWRITEBYTECODE="1", HOME=str(tmp_path / "blocked" / "home"),
               XDG_CACHE_HOME=str(tmp_path / "blocked" / "cache"))
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", COMPILED_ALWAYS, "env=cartpole", "logger=none", "progress=false",
                             "total_timesteps=512", "algo.num_envs=2", "algo.num_steps=128",
                             f"hydra.run.dir={run_dir}"], cwd=install, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("numba finds no writable cache directory") == 1, result.stderr[-2000:]
    assert (run_dir / "summary.json").exists() and (run_dir / "metrics.jsonl").read_text().count("\n") >= 1
    assert not any(install.rglob("*.nbi")), "nothing cached: there was nowhere to write"


def test_without_numba_a_run_trains_to_the_same_numbers(tmp_path):
    """numba is optional (the ``fast`` extra): without it the bookkeeping runs in numpy, and a
    run's metrics are the compiled run's exactly (Pendulum: reward scaling and observation
    normalisation on)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    args = ["env=pendulum", "env.normalize_obs=true", "env.normalize_reward=true", "logger=none", "progress=false",
            "total_timesteps=1024", "algo.num_envs=2", "algo.num_steps=128", "algo.minibatch_size=64",
            "algo.num_epochs=2", "eval.episodes=1"]
    no_numba = ("import runpy, sys; sys.modules['numba'] = None; sys.argv = ['ppo_research', *sys.argv[1:]]; "
                "runpy.run_module('ppo_research', run_name='__main__')")
    rows = {}
    for name, command in (("compiled", ["-c", COMPILED_ALWAYS]), ("numpy", ["-c", no_numba])):
        result = subprocess.run([sys.executable, *command, *args, f"hydra.run.dir={tmp_path / name}"], cwd=tmp_path,
                                env={**__import__("os").environ, "PYTHONPATH": str(repo), "WANDB_MODE": "offline"},
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        rows[name] = [{k: v for k, v in json.loads(line).items() if not k.startswith(("time", "sps"))}
                      for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert len(rows["numpy"]) == 4 and rows["numpy"] == rows["compiled"]
