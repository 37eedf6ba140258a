"""One writer per run directory (issue 16): a second process is refused with one line naming
the owner, the owner loses nothing, and the lock goes away with its process (SIGKILL too)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import REPO, TINY, read_metrics, run_cli

from ppo_research.run.rundir import owner

# CartPole, 80 iterations of 64 steps: long enough to be caught alive, short enough for CI.
LIVE = ["logger=none", "env=cartpole", "total_timesteps=5120", "algo.num_envs=2", "algo.num_steps=32",
        "algo.minibatch_size=32", "algo.num_epochs=2", "eval.every=0", "eval.episodes=1", "checkpoint.every=5",
        "progress=false"]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "ppo_research", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        if list((run_dir / "checkpoints").glob("ckpt_*.pt")):
            return
        time.sleep(0.05)
    raise TimeoutError("no checkpoint")


def test_a_second_writer_is_refused_and_the_live_run_keeps_every_row(tmp_path):
    """Before: a resume of a live run truncated its metrics.jsonl and then failed; the live run
    ended with 64 of its 80 rows. Two fresh runs given one hydra.run.dir interleaved their rows."""
    run_dir = tmp_path / "run"
    live = start([*LIVE, "total_timesteps=10000000", f"hydra.run.dir={run_dir}"], tmp_path)  # stopped below
    try:
        wait_for_checkpoint(run_dir, live)
        hydra_config = (run_dir / ".hydra" / "config.yaml").read_text()
        for args in ([f"resume={run_dir}"], ["logger=none", *TINY, f"hydra.run.dir={run_dir}"]):
            result = run_cli(args, tmp_path, timeout=120)
            assert result.returncode == 2, result.stderr[-3000:]
            (line,) = result.stderr.strip().splitlines()
            assert line.startswith(f"error: run directory {run_dir} is in use by process {live.pid} "
                                   f"(python -m ppo_research logger=none env=cartpole"), line
            assert "one run directory has one writer" in line
            assert live.poll() is None  # refused while the owner was alive
        assert (run_dir / ".hydra" / "config.yaml").read_text() == hydra_config  # not rewritten by the refused run
        rows_seen = len(read_metrics(run_dir))
        live.send_signal(signal.SIGTERM)  # the owner stops cleanly after a checkpoint
        _, err = live.communicate(timeout=300)
    finally:
        if live.poll() is None:
            live.kill()
    assert live.returncode == 128 + signal.SIGTERM, err[-3000:]
    iterations = [r["iteration"] for r in read_metrics(run_dir)]
    assert iterations == list(range(1, len(iterations) + 1)) and len(iterations) >= rows_seen  # nothing dropped


def test_the_lock_goes_with_its_process_sigkill_included(tmp_path):
    run_dir = tmp_path / "run"
    live = start([*LIVE, f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for_checkpoint(run_dir, live)
    assert owner.owner_of(run_dir) == live.pid
    live.send_signal(signal.SIGKILL)
    live.communicate(timeout=30)
    assert owner.owner_of(run_dir) is None
    result = run_cli([f"resume={run_dir}"], tmp_path, timeout=300)  # no cleanup needed
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["iteration"] for r in read_metrics(run_dir)] == list(range(1, 81))


def test_a_fresh_run_does_not_take_over_a_finished_run(tmp_path):
    """A finished run's directory given again as hydra.run.dir: refused before Hydra rewrites
    its .hydra/ (before: the second run's rows were appended to the first's)."""
    run_dir = tmp_path / "run"
    first = run_cli(["logger=none", *TINY, f"hydra.run.dir={run_dir}"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    def files() -> dict:  # (the owner lock's note names whoever took it last)
        return {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*")
                if p.is_file() and p.name != owner.LOCK_FILE}

    before = files()
    again = run_cli(["logger=none", *TINY, "seed=5", f"hydra.run.dir={run_dir}"], tmp_path)
    assert again.returncode == 2
    (line,) = again.stderr.strip().splitlines()
    assert line == (f"error: output directory {run_dir} already holds a run (run.json, metrics.jsonl, summary.json, "
                    f"checkpoints/): continue it with resume={run_dir}, or choose another directory")
    assert files() == before


HOLDER = textwrap.dedent("""
    import os, sys, time
    from ppo_research.run.rundir import owner
    owner.acquire(sys.argv[1])
    if sys.argv[2] == "fork":
        if os.fork() == 0:        # a child (as gymnasium's async env workers are) outlives the owner
            time.sleep(60)
            os._exit(0)
    print("held", flush=True)
    time.sleep(60)
""")


def hold_in_another_process(run_dir: Path, mode: str = "plain") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), mode], env=env, text=True,
                            stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_owner_lock_in_process(tmp_path):
    run_dir = tmp_path / "run"
    holder = hold_in_another_process(run_dir)
    try:
        with pytest.raises(owner.RunDirBusy) as info:
            owner.acquire(run_dir)
        assert info.value.pid == holder.pid and f"in use by process {holder.pid}" in str(info.value)
        assert len(str(info.value).splitlines()) == 1
        assert owner.owner_of(run_dir) == holder.pid
    finally:
        holder.kill()
        holder.wait()
    with owner.hold(run_dir):  # free once its holder is gone; re-entrant within a process
        with owner.hold(run_dir):
            assert owner.holds(run_dir)
        assert owner.holds(run_dir)
    assert not owner.holds(run_dir)


def test_a_forked_child_does_not_keep_the_lock_alive(tmp_path):
    run_dir = tmp_path / "run"
    holder = hold_in_another_process(run_dir, "fork")
    try:
        holder.kill()  # the owner dies; its forked child lives on
        holder.wait()
        # The child drops its copy of the lock in an after-fork hook, which a loaded machine may
        # not have scheduled yet; the child itself sleeps 60 s, so a child that kept the lock fails.
        deadline = time.monotonic() + 10
        while True:
            try:
                with owner.hold(run_dir):
                    break
            except owner.RunDirBusy:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        try:
            os.killpg(holder.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
