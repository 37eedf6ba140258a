"""Learning, tested by thresholds on real runs. Short ones run by default; long ones are `slow`
(run them with `pytest -m slow`)."""
from __future__ import annotations

import pytest
from helpers import read_summary, run_cli


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
    """Every seed swings the pendulum up. With the preset's earlier minibatch of 256 about one
    seed in twelve stayed in the local optimum of not swinging up (8 of 96 seeds, at -423 to -553;
    uniform random actions score -1208); with 512 none of 96 did, the worst scoring -290
    (docs/what_matters.md). Seeds 0/1/2 at the commit that made it 512: -144.4 / -187.8 / -214.0.
    So: each of the three at least -350."""
    returns = [train(tmp_path, f"pend{seed}", [f"seed={seed}"])["eval_return"] for seed in (0, 1, 2)]
    assert min(returns) >= -350, returns


@pytest.mark.slow
@pytest.mark.parametrize("env", ["halfcheetah", "hopper"])
def test_mujoco_presets_run_20k(tmp_path, env):
    summary = train(tmp_path, env, [f"env={env}", "total_timesteps=20000"])
    assert summary["global_step"] >= 20000
