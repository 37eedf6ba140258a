"""hydra/launcher=population_slurm on the repo's one-node SLURM cluster: a multirun grouped into
populations as hydra/launcher=population groups it, each population one SLURM job; a population
warned of its end (``scancel --signal=USR2``, as SLURM's ``--signal``) or requeued (``scontrol
requeue``) checkpoints every member at one iteration, is requeued, and every member ends with the
metrics.jsonl of the uninterrupted population (timing fields aside).

The reference for each check is the same multirun through hydra/launcher=population on this
machine: the same populations, trained by the same code, so the same numbers. Needs a running
cluster (the ``partition`` fixture: skipped without one, failed under PPO_RESEARCH_REQUIRE_CLUSTER).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, TINY, read_metrics, read_summary, run_cli, slurm, without_timing
from helpers.populations import assert_complete, job_dirs, overrides_of, report_rows

pytestmark = pytest.mark.slurm

JOB_OPTIONS = ["hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]
SUMMARY_TIMING_KEYS = ("wall_time_s", "sps")

# One population of four CartPole members, 2 envs x 64 steps: 96 iterations, so a signal sent
# after the third row lands well before the end.
ITERATIONS = 96
POPULATION = ["seed=3,4", "loss.epsilon=0.1,0.2", "env=cartpole", f"total_timesteps={ITERATIONS * 128}",
              "algo.num_envs=2", "algo.num_steps=64", "algo.minibatch_size=32", "algo.num_epochs=2",
              "eval.episodes=1", "progress=false", "logger=none", "hydra.launcher.population_size=4"]
LEAD_S = 60  # hydra.launcher.signal_delay_s: what the job's sbatch script must ask SLURM for


def _env(tmp_path: Path) -> dict:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path)}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _local(args: list[str], cwd: Path, status: int = 0) -> Path:
    """The same multirun through hydra/launcher=population here (ending with ``status``); its sweep directory."""
    sweep = cwd / "local"
    res = run_cli(["-m", *args, "hydra/launcher=population", f"hydra.sweep.dir={sweep}"], cwd=cwd)
    assert res.returncode == status, res.stderr[-3000:]
    return sweep


def _submitted(sweep_dir: Path, proc: subprocess.Popen, stderr: Path) -> list[str]:
    """The SLURM job ids the launcher submitted (``<id>``, or ``<array id>_<task>`` in an array)."""
    if proc.poll() is not None:
        pytest.fail(f"the multirun ended before its job was seen: {stderr.read_text()[-3000:]}")
    folder = sweep_dir / ".submitit"
    return sorted(p.name for p in folder.iterdir() if re.fullmatch(r"\d+_\d+|\d+", p.name)
                  and not (folder / f"{p.name}_0").exists()) if folder.is_dir() else []


def _untimed_summary(run_dir: Path) -> dict:
    return {k: v for k, v in read_summary(run_dir).items() if k not in SUMMARY_TIMING_KEYS}


def _same_as(sweep: Path, reference: Path) -> None:
    """Every job of ``sweep`` ended with the metrics and summary of the same job in ``reference``."""
    assert [p.name for p in job_dirs(sweep)] == [p.name for p in job_dirs(reference)]
    for job, ref in zip(job_dirs(sweep), job_dirs(reference)):
        assert {**overrides_of(job), "logger": None} == {**overrides_of(ref), "logger": None}  # (a tracker draws nothing)
        assert without_timing(read_metrics(job)) == without_timing(read_metrics(ref)), job
        assert _untimed_summary(job) == _untimed_summary(ref), job


def test_a_grid_runs_as_two_population_jobs_and_reports(partition, tmp_path):
    """seed=0,1,2,3 x loss.epsilon=0.1,0.2 with populations of 4: two SLURM jobs (an array of
    two), eight finished run directories, each member's own wandb run, the numbers of the same
    populations trained here, and the report over them."""
    grid = ["seed=0,1,2,3", "loss.epsilon=0.1,0.2", "env=cartpole", *TINY, "hydra.launcher.population_size=4"]
    sweep = tmp_path / "multirun"
    res = run_cli(["-m", *grid, "hydra/launcher=population_slurm", f"hydra.sweep.dir={sweep}",
                   f"hydra.launcher.partition={partition}", *JOB_OPTIONS, "logger=wandb"], cwd=tmp_path, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    # submitit's warning at each sacct poll on a cluster without accounting: said once, by the launcher
    assert "Bypassing sacct" not in res.stdout + res.stderr and (res.stdout + res.stderr).count("sacct does not") <= 1

    launched = {int(m[0]): (m[1], [int(j) for j in m[2].split(",")]) for m in
                re.findall(r"population (\d+): SLURM job (\d+_\d+) trains job\(s\) ([\d, ]+)", res.stdout + res.stderr)}
    assert [jobs for _, jobs in launched.values()] == [[0, 1, 2, 3], [4, 5, 6, 7]], res.stderr[-3000:]
    ids = [job for job, _ in launched.values()]
    assert len({job.split("_")[0] for job in ids}) == 1  # one array
    for job in ids:  # SLURM's own record of each population's job
        record = slurm.final_record(job)
        assert (record["JobState"], record["ExitCode"], record["Restarts"]) == ("COMPLETED", "0:0", "0"), record
        attempts = slurm.jobcomp_attempts(job)
        assert attempts is None or [r["JobState"] for r in attempts] == ["COMPLETED"], attempts

    jobs = job_dirs(sweep)
    assert len(jobs) == 8
    for job in jobs:
        assert_complete(job)
        members = json.loads((job / "run.json").read_text())["population"]["members"]
        population = 0 if int(job.name) < 4 else 1  # trained in its population's job, with its members
        assert [Path(m["run_dir"]).name for m in members] == [str(j) for j in launched[population][1]]
        assert len(list(job.glob("wandb/offline-run-*/run-*.wandb"))) == 1

    _same_as(sweep, _local([*grid, "logger=none"], tmp_path))

    rows = report_rows(sweep, tmp_path / "report")
    assert set(rows) == {"loss.epsilon=0.1", "loss.epsilon=0.2"}
    assert all(row["n_seeds"] == "4" for row in rows.values())


@pytest.fixture(scope="module")
def reference(partition, tmp_path_factory) -> Path:
    """The uninterrupted population, trained here by hydra/launcher=population: its sweep directory."""
    return _local(POPULATION, tmp_path_factory.mktemp("reference"))


def _interrupted(partition: str, tmp_path: Path, interrupt, *options: str) -> tuple[Path, str, str, int, str]:
    """The population on SLURM, ``interrupt(job)`` once its first member has written 3 rows;
    a requeued job is let start at once. Returns (sweep dir, job id, the job's stderr log, the
    multirun's exit status, its stderr)."""
    sweep = tmp_path / "multirun"
    args = ["-m", *POPULATION, "hydra/launcher=population_slurm", f"hydra.sweep.dir={sweep}",
            f"hydra.launcher.partition={partition}", *JOB_OPTIONS, f"hydra.launcher.signal_delay_s={LEAD_S}", *options]
    with slurm.background_multirun(args, tmp_path, _env(tmp_path), sweep) as (proc, stderr):
        (job,) = slurm.wait(lambda: _submitted(sweep, proc, stderr), 120, "the population's job")
        slurm.wait(lambda: slurm.written_rows(sweep / "0" / "metrics.jsonl") >= 3, 180, "3 metrics rows", poll=0.05)
        interrupt(job)
        if "hydra.launcher.max_num_timeout=0" not in options:
            slurm.start_requeued_now(job)
        proc.wait(timeout=600)
    log = (sweep / ".submitit" / job / f"{job}_0_log.err").read_text()
    return sweep, job, log, proc.returncode, stderr.read_text()


def _resumed_together(sweep: Path, log: str) -> int:
    """Every member resumed in place from one iteration, its checkpoint's (no row dropped); returns it."""
    resumed = set()
    for job in job_dirs(sweep):
        match = re.search(rf"resuming {re.escape(str(job))} from iteration (\d+) \(global step \d+\); 0 metrics "
                          rf"row\(s\) past the checkpoint dropped", log)
        assert match, log[-3000:]
        resumed.add(int(match.group(1)))
        assert not (job / ".requeue.json").exists()
    (iteration,) = resumed
    assert 3 <= iteration < ITERATIONS
    return iteration


def _requeued_once(job: str) -> None:
    record = slurm.final_record(job)
    assert (record["JobState"], record["ExitCode"], record["Restarts"]) == ("COMPLETED", "0:0", "1"), record
    attempts = slurm.jobcomp_attempts(job)
    assert attempts is None or [r["JobState"] for r in attempts] == ["PENDING", "COMPLETED"], attempts


def test_warning_signal_requeues_the_population_and_every_member_resumes(partition, reference, tmp_path):
    sweep, job, log, status, stderr = _interrupted(
        partition, tmp_path, lambda job: subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=20))
    assert status == 0, stderr[-3000:]
    scripts = [p.read_text() for p in (sweep / ".submitit").rglob("*submission*.sh")]
    assert scripts and all(f"#SBATCH --signal=USR2@{LEAD_S}\n" in text for text in scripts), scripts
    assert "SIGUSR2: the job's time limit or a preemption is near: finishing the current iteration" in log
    iteration = _resumed_together(sweep, log)
    assert (f"requeueing job {job} through submitit (the requeued job resumes population 0: 4 member(s) from "
            f"iteration {iteration})") in log
    for run_dir in job_dirs(sweep):
        assert f"job {job} was requeued after SIGUSR2: resuming {run_dir} in place" in log
    _same_as(sweep, reference)
    _requeued_once(job)


def test_scontrol_requeue_resumes_every_member(partition, reference, tmp_path):
    sweep, job, log, status, stderr = _interrupted(
        partition, tmp_path, lambda job: subprocess.run(["scontrol", "requeue", job], check=True, timeout=20))
    assert status == 0, stderr[-3000:]
    assert "SIGTERM: finishing the current iteration, then writing a checkpoint" in log
    assert re.search(rf"stopped by SIGTERM after iteration \d+; if SLURM requeues job {job}, population 0 resumes from "
                     rf"there", log), log[-3000:]
    assert "TrainingInterrupted" not in log
    _resumed_together(sweep, log)
    for run_dir in job_dirs(sweep):
        assert f"SLURM job {job} was requeued (restart 1): resuming {run_dir} in place" in log
    _same_as(sweep, reference)
    _requeued_once(job)


def test_requeue_limit_ends_each_member_in_one_line_with_its_checkpoint(partition, reference, tmp_path):
    """max_num_timeout=0: a warning at the time limit (submitit counts it so at once, for 10
    minutes) stops every member with a checkpoint, and the job is not requeued. The command the
    lines print resubmits the population, which resumes every member together and ends as the
    uninterrupted population."""
    sweep, job, log, status, stderr = _interrupted(
        partition, tmp_path, lambda job: subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=20),
        "hydra.launcher.max_num_timeout=0")
    assert status == 128 + 12, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 4, stderr[-3000:]
    stopped = set()
    for run_dir, line in zip(job_dirs(sweep), lines):
        match = re.fullmatch(rf"error: SIGUSR2: job {job} not requeued \(Job not requeued because: timed-out too many "
                             rf"times\.\); {re.escape(str(run_dir))} stopped after iteration (\d+) with checkpoint "
                             rf"(\S+); continue the multirun with: python -m ppo_research .*"
                             rf"hydra\.launcher\.resume=true", line)
        assert match, line
        stopped.add(int(match.group(1)))
        assert Path(match.group(2)) == run_dir / "checkpoints" / f"ckpt_{int(match.group(1)):08d}.pt"
        assert Path(match.group(2)).is_file()
        assert [r["iteration"] for r in read_metrics(run_dir)] == list(range(1, int(match.group(1)) + 1))
        assert not (run_dir / ".requeue.json").exists()
    (iteration,) = stopped
    assert 3 <= iteration < ITERATIONS
    record = slurm.final_record(job)
    assert (record["JobState"], record["Restarts"]) == ("COMPLETED", "0"), record

    command = shlex.split(lines[0].split("continue the multirun with: ", 1)[1])
    assert command[:3] == ["python", "-m", "ppo_research"]
    res = run_cli(command[3:], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    _same_as(sweep, reference)


def test_a_member_that_diverged_stays_ended_after_the_requeue(partition, tmp_path):
    """Two of four members diverge (a learning rate of 1e20) before the warning: the requeued job
    resumes the other two, does not train the diverged ones again, and reports them as diverged.
    The two that go on train in a stack of two from then on, not four: their rows up to the
    requeue are the uninterrupted population's, the later ones may differ by round-off."""
    grid = [*[a for a in POPULATION if not a.startswith("loss.epsilon=")], "algo.learning_rate=2.5e-4,1e20"]
    reference = _local(grid, tmp_path, status=3)
    sweep = tmp_path / "multirun"
    args = ["-m", *grid, "hydra/launcher=population_slurm", f"hydra.sweep.dir={sweep}",
            f"hydra.launcher.partition={partition}", *JOB_OPTIONS]
    with slurm.background_multirun(args, tmp_path, _env(tmp_path), sweep) as (proc, stderr):
        (job,) = slurm.wait(lambda: _submitted(sweep, proc, stderr), 120, "the population's job")
        slurm.wait(lambda: slurm.written_rows(sweep / "0" / "metrics.jsonl") >= 3, 180, "3 metrics rows", poll=0.05)
        subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=20)
        slurm.start_requeued_now(job)
        proc.wait(timeout=600)
    log = (sweep / ".submitit" / job / f"{job}_0_log.err").read_text()
    diverged = [d for d in job_dirs(sweep) if float(overrides_of(d)["algo.learning_rate"]) > 1]
    going_on = [d for d in job_dirs(sweep) if d not in diverged]
    assert len(diverged) == len(going_on) == 2
    assert proc.returncode == 3, stderr.read_text()[-3000:]  # the first failed job's status: diverged
    match = re.search(r"the requeued job resumes population 0: 2 member\(s\) from iteration (\d+)", log)
    assert match, log[-3000:]
    resumed = int(match.group(1))
    # the launcher says each diverged member's end once, as the requeued job reported it
    assert len(re.findall(r"^error: training diverged: ", stderr.read_text(), re.MULTILINE)) == 2, stderr.read_text()
    for run_dir in diverged:
        assert f"resuming {run_dir}" not in log and not (run_dir / ".requeue.json").exists()
        assert read_metrics(run_dir) == read_metrics(reference / run_dir.name)  # not a row more
    for run_dir in going_on:
        assert f"job {job} was requeued after SIGUSR2: resuming {run_dir} in place" in log
        rows, reference_rows = without_timing(read_metrics(run_dir)), without_timing(read_metrics(reference / run_dir.name))
        assert [r["iteration"] for r in rows] == list(range(1, ITERATIONS + 1))
        assert rows[:resumed] == reference_rows[:resumed]
        assert read_summary(run_dir)["global_step"] == ITERATIONS * 128
    _requeued_once(job)
