"""Shared test helpers: compose the real config, shrink it, run the real CLI, read what a run
wrote. Test files import them (``from helpers import run_cli``); tests/ is on the import path
(pyproject.toml, pytest's ``pythonpath``)."""
from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
from pathlib import Path

from omegaconf import DictConfig

from ppo_research.run.config.compose import CONF_DIR, compose

REPO = CONF_DIR.parent

# A budget small enough for a CLI smoke run to take a few seconds.
TINY = ["total_timesteps=256", "algo.num_envs=2", "algo.num_steps=64", "algo.minibatch_size=32",
        "algo.num_epochs=2", "eval.episodes=1", "progress=false"]


def compose_config(overrides: list[str] = ()) -> DictConfig:
    """The real composed config (all groups), as ``python -m ppo_research <overrides>`` sees it."""
    return compose(overrides).cfg


def build_trainer(overrides: list[str], run_dir: Path):
    """A Trainer over the real build path (``logger=none`` unless the overrides say otherwise)."""
    from ppo_research.run.loop.build import build
    from ppo_research.run.loop.trainer import Trainer

    composed = compose(["logger=none", *overrides])
    return Trainer(build(composed.cfg, composed.choices), run_dir)


def run_cli(args: list[str], cwd: Path, timeout: float = 600, env: dict | None = None,
            module: str = "ppo_research") -> subprocess.CompletedProcess:
    """Run ``python -m <module> <args>`` in a subprocess, as a user would."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    full_env.setdefault("WANDB_DIR", str(cwd))
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def run_cli_writes(args: list[str], cwd: Path, timeout: float = 600, env: dict | None = None,
                   module: str = "ppo_research") -> tuple[int, str, list[str]]:
    """Run ``python -m <module> <args>`` with its stderr (and its children's) on a datagram-like
    socket (AF_UNIX SOCK_SEQPACKET): every ``write`` any of the processes makes to stderr arrives
    as one message, so a test sees the writes themselves, not how a pipe happened to join them.
    Returns (exit status, stdout, the stderr writes in arrival order)."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    full_env.setdefault("WANDB_DIR", str(cwd))
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    writes: list[str] = []

    def read() -> None:
        while True:
            message = ours.recv(1 << 20)
            if not message:  # every process holding the other end has closed it
                return
            writes.append(message.decode("utf-8", errors="replace"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        with theirs:
            proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=full_env, text=True,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=theirs.fileno())
        stdout, _ = proc.communicate(timeout=timeout)
        reader.join(timeout=60)
    finally:
        ours.close()
    return proc.returncode, stdout, writes


def partial_lines(writes: list[str]) -> list[str]:
    """The writes that are not whole lines (each should end with its newline)."""
    return [w for w in writes if not w.endswith("\n")]


def files_of(tree: Path) -> dict[str, bytes]:
    """Every file under ``tree`` and its bytes, but the owner lock's note (run/rundir/owner.py: whoever
    takes a directory's lock writes its pid there; that is the lock, not the run)."""
    return {str(p.relative_to(tree)): p.read_bytes() for p in sorted(Path(tree).rglob("*"))
            if p.is_file() and p.name != ".owner.lock"}


CLI_WORKER = Path(__file__).with_name("cli_worker.py")  # tests/helpers/cli_worker.py


class CliWorker:
    """One ``tests/helpers/cli_worker.py`` process serving command lines (Python start-up and imports paid
    once); restarted if a case kills it. ``fork``: each case in a fresh child of it."""

    def __init__(self, home: Path):
        self.home = home
        self.proc = None

    def start(self) -> None:
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(self.home),
               "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        env.pop("HYDRA_FULL_ERROR", None)
        self.proc = subprocess.Popen([sys.executable, str(CLI_WORKER)], cwd=self.home, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def run(self, argv: list[str], cwd: Path, timeout: float = 60, cap: bool = True, fork: bool = False) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        request = {"argv": argv, "cwd": str(cwd), "timeout": timeout, "cap": cap, "fork": fork}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout + 120)
        line = self.proc.stdout.readline() if ready else ""
        if not line:  # the worker died (or hung past its own alarm): that is a finding too
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            return {"status": None, "stdout": "", "stderr": "", "escaped": "the worker process died",
                    "timed_out": False, "seconds": 0.0}
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def read_summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


TIMING_KEYS = ("time_s", "sps", "time_rollout_s", "time_update_s", "time_eval_s")


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def one_torch_thread():
    """Tiny tensors: one intra-op thread is faster, and does not spin on a shared machine
    (test modules make it an autouse module fixture)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
