"""Hydra multirun ablations: named experiment files, the joblib and submitit_local launchers."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from helpers import REPO, TINY, compose_config, read_metrics, run_cli
from helpers.wandb_files import wandb_records
from omegaconf import OmegaConf

from ppo_research.run.config.schema import validate

EXPERIMENTS = sorted((REPO / "conf" / "experiment").glob("*.yaml"))


def job_dirs(tmp_path: Path) -> list[Path]:
    """Finished multirun jobs: outputs/multirun/<date>/<time>/<job>/summary.json."""
    return sorted(p.parent for p in tmp_path.glob("outputs/multirun/*/*/*/summary.json"))


def job_overrides(job: Path) -> dict[str, str]:
    return dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_files_compose_and_validate(path):
    assert path.read_text().startswith("# @package _global_\n")
    validate(compose_config([f"experiment={path.stem}"]))


def test_the_1m_benchmark_jobs_are_the_presets_with_cleanrls_v4_ids():
    """experiment=mujoco_1m sweeps env.id over the halfcheetah preset: each job must be its own
    task's preset with the v4 id, which holds while the MuJoCo presets differ only in env.id."""
    v4 = {"halfcheetah": "HalfCheetah-v4", "walker2d": "Walker2d-v4", "hopper": "Hopper-v4",
          "inverted_pendulum": "InvertedPendulum-v4"}
    params = yaml.safe_load((REPO / "conf" / "experiment" / "mujoco_1m.yaml").read_text())["hydra"]["sweeper"]["params"]
    assert params["env.id"].split(",") == list(v4.values()) and params["seed"] == "0,1,2,3,4"
    for preset, env_id in v4.items():
        job = compose_config(["experiment=mujoco_1m", f"env.id={env_id}"])
        own = compose_config(["experiment=mujoco_1m", f"env={preset}", f"env.id={env_id}"])
        assert OmegaConf.to_container(job, resolve=True) == OmegaConf.to_container(own, resolve=True), preset
    assert job.total_timesteps == 1_000_000 and job.eval.every == 0


def test_loss_ablation_grid_runs_with_joblib(tmp_path):
    res = run_cli(["-m", "experiment=loss_ablation_cartpole", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                   "logger=none", *TINY], cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in res.stdout + res.stderr
    jobs = job_dirs(tmp_path)
    grid = {(o["loss"], o["seed"]) for o in map(job_overrides, jobs)}
    assert len(jobs) == 12 and grid == set(itertools.product(["clip", "klpen", "klfixed", "cpi"], "012"))
    for job in jobs:  # each job trained its own run in its own directory, on CartPole
        assert read_metrics(job)[-1]["global_step"] == 256
        assert yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["env"]["id"] == "CartPole-v1"


def test_ablation_slice_runs_with_submitit_local_grouped_in_wandb(tmp_path):
    # Command-line sweeps replace the experiment's grid for the same key: a 2-job slice.
    res = run_cli(["-m", "experiment=loss_ablation_cartpole", "loss=clip,cpi", "seed=0",
                   "hydra/launcher=submitit_local", *TINY], cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = job_dirs(tmp_path)
    assert sorted(job_overrides(j)["loss"] for j in jobs) == ["clip", "cpi"]
    assert list(tmp_path.glob("outputs/multirun/*/*/.submitit"))  # really launched through submitit
    groups = set()
    for job in jobs:
        (run_file,) = job.glob("wandb/offline-run-*/run-*.wandb")
        run = next(r.run for r in wandb_records(run_file) if r.WhichOneof("record_type") == "run")
        groups.add(run.run_group)
    assert len(groups) == 1 and groups.pop().startswith("loss_ablation_cartpole-")
