"""Learning, tested by thresholds on real runs. Short ones run by default; long ones are `slow`
(run them with `pytest -m slow`)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import read_summary, run_cli


def train(tmp_path, name, args):
    run_dir = tmp_path / name
    result = run_cli(["logger=none", "progress=false", *args, f"hydra.run.dir={run_dir}"], tmp_path, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return read_summary(run_dir)


def test_short_cartpole_run_learns(tmp_path):
    """A random CartPole policy scores ~22; 20k steps of the preset get well past 150."""
    summary = train(tmp_path, "cp", ["env=cartpole", "seed=0", "total_timesteps=20000"])
    assert summary["eval_return"] >= 150, summary


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cartpole_solved_at_100k(tmp_path, seed):
    summary = train(tmp_path, f"cp{seed}", ["env=cartpole", f"seed={seed}", "total_timesteps=100000"])
    assert summary["eval_return"] >= 475, summary


@pytest.mark.slow
def test_pendulum_default_preset_at_200k(tmp_path):
    """The preset swings the pendulum up on most seeds, not on every one. Measured with
    independent seeds (SeedSequence), seeds 0/1/2: -145.3 / -186.2 / -254.6 at commit 65b460e,
    -546.6 / -189.7 / -207.9 at 334f03f (after the trainer changes in between; seed 0 now
    stuck); seeds 0..9 at 4537f67: -145 to -255 except seed 5 (-505). A stuck seed sits in the
    local optimum of not swinging up (-505 and -547: 2 of the 13 runs above); uniform random
    actions score -1208 (100 episodes). So: two seeds of three must swing up (the median at
    least -260; every swing-up above scored -145 to -255), and the mean tolerates one stuck
    seed but not one that learnt nothing."""
    returns = [train(tmp_path, f"pend{seed}", [f"seed={seed}"])["eval_return"] for seed in (0, 1, 2)]
    assert np.median(returns) >= -260 and np.mean(returns) >= -400, returns


@pytest.mark.slow
@pytest.mark.parametrize("env", ["halfcheetah", "hopper"])
def test_mujoco_presets_run_20k(tmp_path, env):
    summary = train(tmp_path, env, [f"env={env}", "total_timesteps=20000"])
    assert summary["global_step"] >= 20000
