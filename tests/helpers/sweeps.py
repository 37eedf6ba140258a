"""Helpers of the sweep tests: a tiny spec on disk, the sweep command, the study it made."""
from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import yaml

from helpers import TINY, run_cli
from ppo_research.tools.sweep.storage import make_storage

BASE = ["env=cartpole", "logger=none", *TINY]


def write_spec(tmp_path: Path, study: str = "tiny", **fields) -> Path:
    spec = {"study": study, "overrides": BASE, "params": {"loss.epsilon": {"low": 0.1, "high": 0.3}},
            "trials": 4, "sampler": {"name": "RandomSampler", "seed": 0}, **fields}
    path = tmp_path / f"{study}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_sweep(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_cli([*args], cwd=tmp_path, module="ppo_research.sweep", timeout=timeout)


def study_dir(tmp_path: Path, study: str = "tiny") -> Path:
    return tmp_path / "outputs" / "sweeps" / study


def load(tmp_path: Path, study: str = "tiny", storage: str | None = None) -> optuna.Study:
    url = storage or f"sqlite:///{study_dir(tmp_path, study) / 'study.db'}"
    return optuna.load_study(study_name=study, storage=make_storage(url))
