"""Faults injected into real runs, and what each keeps (docs/reliability.md, "Faults"):
SIGKILL while a checkpoint is being written, a disk too small, a disk that fills mid-run, a
read-only output directory, a diverging job inside a multirun, Ctrl-C while starting.

The disk cases mount a small tmpfs and are skipped where mounting is not allowed (not root).
"""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, TIMING_KEYS, read_metrics, run_cli

from ppo_research.run.rundir import checkpoint

# CartPole, 40 iterations of 64 steps, a checkpoint after every iteration.
EVERY_ITERATION = ["logger=none", "env=cartpole", "total_timesteps=2560", "algo.num_envs=2", "algo.num_steps=32",
                   "algo.minibatch_size=32", "algo.num_epochs=2", "eval.every=10", "eval.episodes=1",
                   "checkpoint.every=1", "checkpoint.keep=2", "seed=11", "progress=false"]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # Ctrl-C as at a terminal: a shell starts background jobs (e.g. a CI script run with `&`) with
    # SIGINT ignored, and the child would inherit that
    return subprocess.Popen([sys.executable, "-m", "ppo_research", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS and not k.startswith("time_")} for r in rows]


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("reference")
    result = run_cli([*EVERY_ITERATION, f"hydra.run.dir={cwd / 'run'}"], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd / "run"


# ---------------------------------------------------------------------------------------------
# SIGKILL at the moment a checkpoint is being written

CHECKPOINT_TMP = re.compile(r"^\.ckpt_(\d{8})\.pt\.tmp$")  # a checkpoint being written (run/rundir/checkpoint.py)


def kill_during_a_checkpoint_write(run_dir: Path, proc: subprocess.Popen, after: int) -> None:
    """SIGKILL as soon as the temp file of a checkpoint of iteration ``after`` or later is seen
    (mid-write). By its iteration, not by counting temp files: a loaded machine can miss a
    temp file's short life between two looks."""
    directory = run_dir / "checkpoints"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            names = []
        writing = [int(m[1]) for m in map(CHECKPOINT_TMP.match, names) if m]
        if writing and max(writing) >= after:
            proc.send_signal(signal.SIGKILL)
            return
        time.sleep(0.0005)
    raise AssertionError(f"the run ended before its checkpoint {after} was written")


def check_kill_and_resume(reference: Path, tmp_path: Path, after: int) -> None:
    run_dir = tmp_path / f"run_{after}"
    proc = start([*EVERY_ITERATION, f"hydra.run.dir={run_dir}"], tmp_path)
    kill_during_a_checkpoint_write(run_dir, proc, after)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    result = run_cli([f"resume={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert comparable(read_metrics(run_dir)) == comparable(read_metrics(reference))
    mine, theirs = (checkpoint.load(checkpoint.latest(d))["policy"] for d in (run_dir, reference))
    for key in theirs:
        assert torch.equal(mine[key], theirs[key]), key


@pytest.mark.parametrize("after", [2, 17])
def test_sigkill_while_writing_a_checkpoint_then_resume_is_exact(reference, tmp_path, after):
    check_kill_and_resume(reference, tmp_path, after)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(8))
def test_sigkill_at_random_checkpoint_writes(reference, tmp_path, trial):
    check_kill_and_resume(reference, tmp_path, random.Random(trial).randint(2, 38))


# ---------------------------------------------------------------------------------------------
# disks: too small, filling up, read-only (a small tmpfs)

@pytest.fixture
def small_disk(tmp_path):
    """Mount a tmpfs at tmp_path/disk; yields (path, mount(size, read_only))."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = []

    def mount(size: str, read_only: bool = False) -> Path:
        opts = f"size={size}" + (",ro" if read_only else "")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mount_point)],
                                capture_output=True, text=True)
        if result.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(mount_point)
        return mount_point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_a_disk_too_small_is_refused_before_training(small_disk, tmp_path):
    disk = small_disk("256k")
    result = run_cli([*EVERY_ITERATION, f"hydra.run.dir={disk / 'run'}"], tmp_path)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert line.startswith(f"error: output directory {disk / 'run'} has ") and "MB free; this run needs about" in line
    assert not (disk / "run" / "metrics.jsonl").exists()


def test_a_disk_that_fills_mid_run_stops_with_the_checkpoints_intact(small_disk, tmp_path):
    disk = small_disk("8m")
    run_dir = disk / "run"
    proc = start([*EVERY_ITERATION, "total_timesteps=256000", "checkpoint.every=2",
                  f"hydra.run.dir={run_dir}"], tmp_path)
    deadline = time.monotonic() + 180
    while len(checkpoint.list_checkpoints(run_dir)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    filler = disk / "filler"
    with open(filler, "wb") as f:  # another program takes the rest of the disk
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 4, err[-3000:]
    line = one_error_line(err)
    assert "No space left on device" in line
    kept = checkpoint.list_checkpoints(run_dir)
    assert kept and all(checkpoint.load(p)["iteration"] > 0 for p in kept)  # every kept one loads and verifies
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    filler.unlink()
    result = run_cli([f"resume={run_dir}", "total_timesteps=" + str(checkpoint.load(kept[-1])["global_step"] + 128)],
                     tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("fill_to", [0, 300, 5000])
def test_a_checkpoint_that_meets_a_full_disk_is_a_disk_error_and_the_older_ones_stay(small_disk, fill_to):
    """Whatever byte of the checkpoint the disk runs out at, the save fails as a disk error
    (CheckpointError naming ENOSPC, which the CLI maps to exit status 4), not as torch's zip
    writer's own complaint, and leaves the checkpoints already written as they were."""
    disk = small_disk("1m")
    run_dir = disk / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    state = {"iteration": 1, "policy": {"w": torch.arange(40_000, dtype=torch.float32)}}
    first = checkpoint.save(run_dir, 1, state, keep=5)
    with open(disk / "filler", "wb", buffering=0) as f:  # another program takes the rest of the disk ...
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(disk / "filler", (disk / "filler").stat().st_size - fill_to)  # ... but for fill_to bytes
    with pytest.raises(checkpoint.CheckpointError, match="No space left on device") as info:
        checkpoint.save(run_dir, 2, {**state, "iteration": 2}, keep=5)
    assert len(str(info.value).splitlines()) == 1
    assert checkpoint.list_checkpoints(run_dir) == [first] and checkpoint.load(first)["iteration"] == 1
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [first.name]


@pytest.mark.parametrize("existing", [False, True])
def test_a_read_only_output_directory_is_refused_in_one_line(small_disk, tmp_path, existing):
    """Both a run directory Hydra must create on a read-only mount and one that exists there
    (before: Hydra's log handler failed with a traceback)."""
    disk = small_disk("1m")
    if existing:
        (disk / "run").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    result = run_cli([*EVERY_ITERATION, f"hydra.run.dir={disk / 'run'}"], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_error_line(result.stderr)
    assert "Read-only file system" in line


# ---------------------------------------------------------------------------------------------
# a multirun whose middle job diverges

def test_a_diverging_job_in_a_multirun_fails_alone(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", *EVERY_ITERATION, "total_timesteps=128", "algo.learning_rate=3e-4,1e30,1e-3",
                      f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "training diverged" in errors[0]
    assert "Error executing job" not in result.stderr + result.stdout  # Hydra's own line is not added
    assert (sweep / "0" / "summary.json").exists() and (sweep / "2" / "summary.json").exists()
    assert not (sweep / "1" / "summary.json").exists()


# ---------------------------------------------------------------------------------------------
# Ctrl-C while the command is still starting (imports, Hydra, building)

@pytest.mark.parametrize("delay", [0.4, 1.0, 2.0])
def test_sigint_while_starting_gives_one_line(tmp_path, delay):
    proc = start([*EVERY_ITERATION, "total_timesteps=100000", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(("error: interrupted", "stopped by SIGINT")), lines


STORM = """
import os, signal, threading, time
import numpy as np
from ppo_research.run.envs import bookkeeping
from ppo_research.run.loop.trainer import prepare_bookkeeping

def storm():
    time.sleep(0.3)  # prepare is under way: a cold compile takes seconds
    for _ in range(30):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)

threading.Thread(target=storm, daemon=True).start()
try:
    prepare_bookkeeping(np.float32)  # as the trainer prepares it
    print("no interrupt")
except KeyboardInterrupt:
    print("after" if np.dtype(np.float32) in bookkeeping._prepared else "inside")
"""


def test_ctrl_c_while_the_bookkeeping_kernel_compiles_waits_for_it(tmp_path):
    # A KeyboardInterrupt raised inside numba's compiler (its ctypes callbacks) was printed and
    # dropped - the run went on and exited 0 - or left the kernel half-built (exit 1, "no compiled
    # object yet"). Now SIGINT waits for the compile (cold: its own empty cache), then interrupts.
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", STORM], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # see start
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "after", result.stdout + result.stderr[-3000:]
    assert "Exception ignored" not in result.stderr


# ---------------------------------------------------------------------------------------------
# a sweep whose worker is SIGKILLed

def spawned_workers(pid: int) -> list[int]:
    """The sweep's worker processes (multiprocessing spawn children, not its resource tracker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                found.append(int(child))
    return found


def test_a_killed_sweep_worker_ends_the_command_in_one_line_with_a_report(tmp_path):
    """Before: the study stayed correct but the command died with RuntimeError('worker exit
    codes [-9, 0]') (status 1, a traceback) and wrote no report until re-run."""
    import yaml

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "study": "k", "trials": 4, "sampler": {"name": "RandomSampler", "seed": 0},
        "overrides": ["logger=none", "env=cartpole", "total_timesteps=1024", "algo.num_envs=2", "algo.num_steps=64",
                      "algo.minibatch_size=64", "algo.num_epochs=2", "eval.episodes=1", "progress=false"],
        "params": {"loss.epsilon": {"low": 0.1, "high": 0.3}}}))
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "ppo_research.sweep", str(spec), "--workers", "2"], cwd=tmp_path,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    study = tmp_path / "outputs" / "sweeps" / "k"
    deadline = time.monotonic() + 240
    while not list(study.glob("trials/*/*/metrics.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.1)
    workers = spawned_workers(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGKILL, err[-3000:]
    line = one_error_line(err)
    assert "1 of 2 worker(s) ended abnormally (exit codes [" in line and "-9" in line
    assert "re-run the same command" in line
    assert (study / "best.json").exists()  # the report was written anyway
