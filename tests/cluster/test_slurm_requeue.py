"""Time limits and preemption on a real SLURM cluster: a job warned of its end (SLURM's
``--signal``, which submitit sets to SIGUSR2 ``signal_delay_s`` seconds ahead) or requeued by
``scontrol requeue`` checkpoints at an iteration boundary, is requeued, resumes in place, and
ends with the same ``metrics.jsonl`` (timing fields aside) as an uninterrupted run.

The cluster tests need a running cluster whose default partition has an idle node: on one Debian
machine, ``scripts/slurm_one_node.sh start`` (as root) sets one up; .ci/run does so before the
tests. Skipped when ``sinfo`` is missing or no node answers; with PPO_RESEARCH_REQUIRE_CLUSTER=1
(set by .ci/run) they fail instead, so CI cannot pass by skipping. The tests of the resume decision
at the end need no cluster.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Optional

import pytest
from helpers import REPO, read_metrics, read_summary, run_cli, slurm, without_timing
from helpers.wandb_files import wandb_records

# CartPole, 2 envs x 64 steps, a checkpoint after every iteration: 96 iterations of ~60 ms, so a
# signal sent after the third row lands well before the end; wandb (offline) on, to show that
# the requeued job continues the same wandb run.
ITERATIONS = 96
RUN = ["env=cartpole", "seed=3", f"total_timesteps={ITERATIONS * 128}", "algo.num_envs=2", "algo.num_steps=64",
       "algo.minibatch_size=32", "algo.num_epochs=2", "eval.episodes=1", "progress=false", "checkpoint.every=1",
       "logger=wandb"]
LEAD_S = 60  # hydra.launcher.signal_delay_s: what the job's sbatch script must ask SLURM for


@pytest.fixture(scope="module")
def reference(partition, tmp_path_factory) -> tuple[list[dict], dict]:
    """The uninterrupted run with the same seed and config (a plain local run): its metrics rows
    and summary."""
    cwd = tmp_path_factory.mktemp("reference")
    res = run_cli([*RUN, f"hydra.run.dir={cwd / 'run'}"], cwd=cwd, env={"WANDB_DIR": str(cwd)})
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_metrics(cwd / "run")
    assert [r["iteration"] for r in rows] == list(range(1, ITERATIONS + 1))
    return rows, read_summary(cwd / "run")


def _job_id(sweep_dir: Path, proc: subprocess.Popen, stderr: Path) -> Optional[str]:
    """The multirun's (single) job id, once submitted: a plain job is ``<id>``, an array task
    ``<array id>_<task>`` (submitit submits one job as a plain job)."""
    if proc.poll() is not None:
        pytest.fail(f"the multirun ended before its job was seen: {stderr.read_text()[-3000:]}")
    folder = sweep_dir / ".submitit"
    found = [p.name for p in folder.iterdir() if re.fullmatch(r"\d+(_0)?", p.name)] if folder.is_dir() else []
    return found[0] if found else None


def _requeued_multirun(partition: str, tmp_path: Path, interrupt) -> tuple[Path, str, str]:
    """Start a one-job multirun on SLURM with hydra/launcher=slurm, call ``interrupt(job_id)``
    once the job has written 3 metrics rows, let the requeued job start without SLURM's 2-minute
    hold, and wait for the multirun to end. Returns (run dir, job id, the job's stderr log)."""
    sweep_dir = tmp_path / "multirun"
    args = ["-m", *RUN, "hydra/launcher=slurm", f"hydra.sweep.dir={sweep_dir}",
            f"hydra.launcher.partition={partition}", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10",
            f"hydra.launcher.signal_delay_s={LEAD_S}"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path)}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    with slurm.background_multirun(args, tmp_path, env, sweep_dir) as (proc, stderr):
        job = slurm.wait(lambda: _job_id(sweep_dir, proc, stderr), 120, "the job's submitit folder")
        run_dir = sweep_dir / "0"
        slurm.wait(lambda: slurm.written_rows(run_dir / "metrics.jsonl") >= 3, 180, "3 metrics rows from the job", poll=0.05)
        interrupt(job)
        slurm.start_requeued_now(job)
        proc.wait(timeout=300)
    assert proc.returncode == 0, stderr.read_text()[-3000:]
    log = (sweep_dir / ".submitit" / job / f"{job}_0_log.err").read_text()
    return run_dir, job, log


def _check_slurm_record(job: str) -> None:
    """SLURM's own record: one restart, then COMPLETED with exit code 0."""
    record = slurm.final_record(job)
    assert (record["JobState"], record["ExitCode"], record["Restarts"]) == ("COMPLETED", "0:0", "1"), record
    attempts = slurm.jobcomp_attempts(job)
    if attempts is not None:
        # jobcomp/filetxt writes one line per attempt: the requeued one with the state it went
        # back to (PENDING), then the final one.
        assert [r["JobState"] for r in attempts] == ["PENDING", "COMPLETED"], attempts
        assert attempts[-1]["ExitCode"] == "0:0"


SUMMARY_TIMING_KEYS = ("wall_time_s", "sps")


def _check_same_run(run_dir: Path, log: str, reference: tuple[list[dict], dict]) -> int:
    """The run resumed in place and matches the uninterrupted run; returns the iteration it
    resumed from."""
    match = re.search(r"resuming \S+ from iteration (\d+)", log)
    assert match, log[-3000:]
    resumed = int(match.group(1))
    assert 3 <= resumed < ITERATIONS, resumed
    rows = read_metrics(run_dir)
    assert [r["iteration"] for r in rows] == list(range(1, ITERATIONS + 1))
    assert without_timing(rows) == without_timing(reference[0])
    summary = {k: v for k, v in read_summary(run_dir).items() if k not in SUMMARY_TIMING_KEYS}
    assert summary == {k: v for k, v in reference[1].items() if k not in SUMMARY_TIMING_KEYS}
    # One wandb run, continued: the requeued attempt logged to a second offline folder with the
    # same run id (`wandb sync` merges them).
    folders = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 2, folders
    run_id = (run_dir / "wandb" / "run_id").read_text().strip()
    assert all(name.endswith(f"-{run_id}") for name in folders), (folders, run_id)
    return resumed


def _wandb_segments(run_dir: Path) -> list[tuple[list[int], list[int]]]:
    """Per offline wandb folder (in time order): the iterations it logged, its exit codes."""
    segments = []
    for folder in sorted((run_dir / "wandb").glob("offline-run-*")):
        records = [r for f in folder.glob("run-*.wandb") for r in wandb_records(f)]
        iterations = [int(float(item.value_json)) for r in records if r.WhichOneof("record_type") == "history"
                      for item in r.history.item if (item.key or "/".join(item.nested_key)) == "iteration"]
        exits = [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]
        segments.append((iterations, exits))
    return segments


@pytest.mark.slurm
def test_warning_signal_checkpoints_requeues_and_resumes(partition, reference, tmp_path):
    """The time-limit/preemption warning: SLURM sends the job's steps SIGUSR2 (``--signal=USR2@
    <signal_delay_s>``); here ``scancel --signal=USR2``, which delivers it the same way."""
    run_dir, job, log = _requeued_multirun(
        partition, tmp_path, lambda job: subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=20))

    # The job asked SLURM for the warning, as configured through the launcher's config group.
    scripts = [p.read_text() for p in (run_dir.parent / ".submitit").rglob("*submission*.sh")]
    assert scripts and all(f"#SBATCH --signal=USR2@{LEAD_S}\n" in text for text in scripts), scripts
    # The first attempt finished its iteration, checkpointed and requeued itself; the second
    # recognised its run and resumed it.
    assert "SIGUSR2: the job's time limit or a preemption is near: finishing the current iteration" in log
    assert f"requeueing job {job} through submitit (the requeued job resumes {run_dir} from ckpt_" in log
    assert f"job {job} was requeued after SIGUSR2: resuming {run_dir} in place" in log
    resumed = _check_same_run(run_dir, log, reference)
    # the checkpoint was taken at the boundary right after the signal: no row had to be dropped
    assert f"from iteration {resumed} (global step {resumed * 128}); 0 metrics row(s) past the checkpoint dropped" \
        in log
    assert not (run_dir / ".requeue.json").exists()
    # wandb was finished before the requeue (exit code 128 + SIGUSR2): the first attempt's steps
    # are all in its offline folder, the second attempt's in the other one, each step once.
    assert _wandb_segments(run_dir) == [(list(range(1, resumed + 1)), [128 + 12]),
                                        (list(range(resumed + 1, ITERATIONS + 1)), [0])]
    _check_slurm_record(job)


@pytest.mark.slurm
def test_scontrol_requeue_resumes(partition, reference, tmp_path):
    """``scontrol requeue`` (an operator, or SLURM's own requeue on preemption): SIGTERM, a
    checkpoint at the boundary, and the restarted job (SLURM_RESTART_COUNT=1) resumes."""
    run_dir, job, log = _requeued_multirun(
        partition, tmp_path, lambda job: subprocess.run(["scontrol", "requeue", job], check=True, timeout=20))
    assert "SIGTERM: finishing the current iteration, then writing a checkpoint" in log
    # the first attempt ends with one line, not a KeyboardInterrupt traceback through submitit
    assert re.search(rf"stopped by SIGTERM after iteration \d+; checkpoint \S+; if SLURM requeues job {job}, it "
                     rf"resumes from there", log), log[-3000:]
    assert "TrainingInterrupted" not in log
    assert f"SLURM job {job} was requeued (restart 1): resuming {run_dir} in place" in log
    _check_same_run(run_dir, log, reference)
    # (SLURM's SIGTERM reaches wandb's service process too, so the first attempt's offline
    # wandb file may lack its last steps; metrics.jsonl has them all.)
    _check_slurm_record(job)


@pytest.mark.slurm
def test_requeue_limit_stops_with_a_checkpoint(partition, tmp_path):
    """``max_num_timeout`` requeues after the time limit at most: at 0, a warning at the time
    limit stops the run with a checkpoint and one line, and the job is not requeued. (submitit
    counts a warning as the time limit once the job has run min(0.8 x timeout_min, timeout_min -
    10 min): at once, for 10 minutes.)"""
    sweep_dir = tmp_path / "multirun"
    run = [a if not a.startswith("logger=") else "logger=none" for a in RUN]
    args = ["-m", *run, "hydra/launcher=slurm", f"hydra.sweep.dir={sweep_dir}",
            f"hydra.launcher.partition={partition}", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10",
            "hydra.launcher.max_num_timeout=0"]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with slurm.background_multirun(args, tmp_path, env, sweep_dir) as (proc, stderr):
        job = slurm.wait(lambda: _job_id(sweep_dir, proc, stderr), 120, "the job's submitit folder")
        run_dir = sweep_dir / "0"
        slurm.wait(lambda: slurm.written_rows(run_dir / "metrics.jsonl") >= 3, 180, "3 metrics rows from the job", poll=0.05)
        subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=20)
        proc.wait(timeout=300)
    assert proc.returncode == 128 + 12, stderr.read_text()[-3000:]
    log = (sweep_dir / ".submitit" / job / f"{job}_0_log.err").read_text()
    match = re.search(rf"error: SIGUSR2: job {job} not requeued \(Job not requeued because: timed-out too many "
                      rf"times\.\); the run stopped after iteration (\d+) with checkpoint (\S+); continue it with: "
                      rf"python -m ppo_research resume={re.escape(str(run_dir))}$", log, re.MULTILINE)
    assert match, log[-3000:]
    stopped = int(match.group(1))
    assert 3 <= stopped < ITERATIONS
    assert Path(match.group(2)) == run_dir / "checkpoints" / f"ckpt_{stopped:08d}.pt"
    assert Path(match.group(2)).is_file()
    assert [r["iteration"] for r in read_metrics(run_dir)] == list(range(1, stopped + 1))
    assert not (run_dir / ".requeue.json").exists()
    record = slurm.final_record(job)
    assert (record["JobState"], record["Restarts"]) == ("COMPLETED", "0"), record


# -- the resume decision, without a cluster ---------------------------------------------------

def _fake_run(run_dir: Path, checkpoint: bool = True) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text("{}\n")
    (run_dir / "metrics.jsonl").write_text('{"iteration": 1}\n')
    if checkpoint:
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "ckpt_00000001.pt").write_bytes(b"")
    return run_dir


def test_only_a_requeued_job_resumes_its_own_directory(tmp_path, monkeypatch):
    from ppo_research.run import jobs
    from ppo_research.run.signals import preemption

    for name in ("SUBMITIT_EXECUTOR", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
                 "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    run = _fake_run(tmp_path / "run")
    new = tmp_path / "new"
    new.mkdir()

    # A plain run (no submitit job) never resumes, whatever the directory holds.
    assert not jobs.resumes_requeued(run)
    # A submitit SLURM job's first attempt (no restart, no marker): never, and a new directory never.
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert not jobs.resumes_requeued(run)
    assert not jobs.resumes_requeued(new)
    # A marker written by another job does not count.
    (run / preemption.MARKER).write_text(json.dumps({"job_id": "39_1"}))
    assert not jobs.resumes_requeued(run)
    # The job that requeued itself resumes (and the marker is used up) ...
    (run / preemption.MARKER).write_text(json.dumps({"job_id": "40_1", "signal": "SIGUSR2"}))
    assert jobs.resumes_requeued(run)
    assert not (run / preemption.MARKER).exists()
    # ... and so does a job SLURM restarted, but not in a new directory.
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert jobs.resumes_requeued(run)
    assert not jobs.resumes_requeued(new)
    assert not any(new.iterdir())


def test_requeued_attempt_without_checkpoint_starts_over(tmp_path, monkeypatch, capsys):
    from ppo_research.run import jobs
    from ppo_research.run.rundir import owner

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    run = _fake_run(tmp_path / "run", checkpoint=False)
    assert not jobs.resumes_requeued(run)
    assert owner.holds_a_run(run) == []  # a fresh run may start here now
    assert (run / "metrics.jsonl.earlier_attempt").read_text() == '{"iteration": 1}\n'
    assert "SLURM job 7 was requeued (restart 2); its earlier attempt wrote no checkpoint" in capsys.readouterr().err
