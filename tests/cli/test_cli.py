"""The command line a user types: every group option runs, outputs follow the contract."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import TINY, read_metrics, read_summary, run_cli, without_timing

LOSSES = ["clip", "klpen", "klfixed", "cpi"]
ADVANTAGES = ["gae", "mc", "td"]
ENVS = ["pendulum", "cartpole", "halfcheetah", "hopper", "walker2d", "swimmer", "reacher",
        "inverted_pendulum", "inverted_double_pendulum"]

ITERATION_KEYS = {"iteration", "global_step", "time_s", "sps", "policy_loss", "value_loss", "entropy", "kl",
                  "clip_fraction", "learning_rate", "explained_variance"}
SUMMARY_KEYS = {"global_step", "wall_time_s", "sps", "train_return", "eval_return", "eval_return_std"}


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p.parent for p in sweep_dir.glob("*/summary.json")), key=lambda p: int(p.name))


def choices_of(job: Path) -> dict:
    hydra_cfg = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())
    return hydra_cfg["hydra"]["runtime"]["choices"]


@pytest.mark.parametrize("env", ["cartpole", "pendulum"])
def test_all_twelve_loss_advantage_combinations_run_as_one_multirun(tmp_path, env):
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", f"loss={','.join(LOSSES)}", f"advantage={','.join(ADVANTAGES)}", f"env={env}",
                      "logger=none", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 12
    seen = {(choices_of(j)["loss"], choices_of(j)["advantage"]) for j in jobs}
    assert seen == {(l, a) for l in LOSSES for a in ADVANTAGES}
    for job in jobs:
        rows = read_metrics(job)
        assert rows and all(ITERATION_KEYS <= row.keys() for row in rows)
        has_beta = choices_of(job)["loss"] in ("klpen", "klfixed")
        assert all(("beta" in row) == has_beta for row in rows)


def test_every_env_preset_runs(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", f"env={','.join(ENVS)}", "logger=none", *TINY, "env.max_episode_steps=50",
                      f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert sorted(choices_of(j)["env"] for j in jobs) == sorted(ENVS)
    for job in jobs:
        summary = read_summary(job)
        assert SUMMARY_KEYS <= summary.keys(), job
        assert summary["global_step"] >= 256


def test_network_and_logger_options_run(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", "network=mlp,mlp_shared", "logger=none,wandb", "env=cartpole", *TINY,
                      f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 4
    for job in jobs:
        has_wandb = any(job.glob("wandb/offline-run-*"))
        assert has_wandb == (choices_of(job)["logger"] == "wandb")


def test_default_run_writes_the_contract_files(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(["logger=none", *TINY, "progress=true", "eval.every=2", f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = read_metrics(run_dir)
    assert [r["iteration"] for r in rows] == [1, 2]
    assert [r["global_step"] for r in rows] == [128, 256]
    assert all(ITERATION_KEYS <= r.keys() for r in rows)
    assert "eval_return" in rows[-1]
    summary = read_summary(run_dir)
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["global_step"] == 256
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["env"]["id"] == "Pendulum-v1" and config["loss"]["_target_"].endswith("ClipLoss")
    assert any((run_dir / "checkpoints").glob("ckpt_*.pt"))
    assert "iter 2/2" in result.stderr  # progress line


def test_same_seed_gives_identical_metrics(tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        result = run_cli(["env=cartpole", "logger=none", *TINY, f"seed={seed}", "total_timesteps=512",
                          f"hydra.run.dir={tmp_path / name}"], tmp_path)
        assert result.returncode == 0, result.stderr
        runs[name] = without_timing(read_metrics(tmp_path / name))
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]
    summaries = [json.loads((tmp_path / n / "summary.json").read_text()) for n in "ab"]
    assert summaries[0]["eval_return"] == summaries[1]["eval_return"]
