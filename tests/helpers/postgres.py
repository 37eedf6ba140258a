"""Helpers of the PostgreSQL study tests: a spec, sweep workers started as separate processes (on
separate network namespaces where the machine allows: "hosts"), the study they share."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


STUDY = "pg"


# CartPole with a tiny batch: one 2x64-step iteration takes a few tenths of a second.
RUN = ["env=cartpole", "logger=none", "algo.num_envs=2", "algo.num_steps=64", "algo.minibatch_size=32",
       "algo.num_epochs=2", "eval.episodes=1", "progress=false"]


HEARTBEAT_S = 1.0  # a worker on another host is taken for dead after 3 silent heartbeats


def _separate_hosts() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode == 0


SEPARATE_HOSTS = _separate_hosts()


def write_spec(folder: Path, trials: int, total_timesteps: int, **fields) -> Path:
    spec = {"study": STUDY, "overrides": [*RUN, f"total_timesteps={total_timesteps}"],
            "params": {"loss.epsilon": {"low": 0.1, "high": 0.3}}, "trials": trials,
            "sampler": {"name": "RandomSampler", "seed": 0}, "heartbeat_s": HEARTBEAT_S, **fields}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


class Worker:
    """``python -m ppo_research.sweep`` in its own folder (spec copy, --out, log), as a separate machine."""

    def __init__(self, root: Path, name: str, spec: Path, url: str, *args: str):
        self.name, self.dir = name, root / name
        self.dir.mkdir(parents=True)
        shutil.copy(spec, self.dir / "spec.yaml")
        self.out = self.dir / "sweeps"
        cmd = [sys.executable, "-m", "ppo_research.sweep", "spec.yaml", "--storage", url, "--out", str(self.out),
               *args]
        if SEPARATE_HOSTS:  # exec keeps the pid: the pid recorded in the trials is the one we kill
            cmd = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', name, *cmd]
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(self.dir)}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        self.log = self.dir / "worker.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.dir, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def wait(self, timeout: float = 360) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"{self.name} still running after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text()[-3000:]

    def run_dir(self, number: int) -> Path:
        return self.out / STUDY / "trials" / f"{number:04d}" / "s0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start(workers: list, *args, **kwargs) -> Worker:
    w = Worker(*args, **kwargs)
    workers.append(w)
    return w


def create_study(tmp_path: Path, spec: Path, url: str, workers: list) -> None:
    """Create the study once (``--trials 0``: create, train nothing) before the workers start."""
    first = start(workers, tmp_path, "create", spec, url, "--trials", "0")
    assert first.wait() == 0, first.output()


def load(url: str) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=optuna.storages.RDBStorage(url))
