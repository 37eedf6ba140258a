"""Sweep workers as a SLURM job array against a real PostgreSQL, one worker preempted: each worker a
preemption-safe population (tools/sweep/slurm.py, docs/cluster.md "Sweep workers on SLURM").

The array is the documented sbatch script: ``#SBATCH --requeue``, ``#SBATCH --signal=B:USR2@<lead>``
and ``exec python -m ppo_research.sweep ... --population 2``. One task is sent the warning
(``scancel --batch --signal=USR2``, what SLURM sends the batch shell at ``--signal=B:USR2``) while
its population trains: its trials stop with a checkpoint, stay RUNNING (parked) while the job is
requeued, and the restarted task resumes them in place. ``scontrol requeue`` of the task (SIGTERM
to it, then SLURM's restart) does the same without the warning. Needs the one-node cluster
(scripts/slurm_one_node.sh) and the PostgreSQL binaries; skipped without them, failed instead
under PPO_RESEARCH_REQUIRE_CLUSTER=1 (CI).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from helpers import REPO, slurm, sweeps
from helpers.postgres import RUN, STUDY, create_study, load, write_spec
from optuna.trial import TrialState

pytestmark = [pytest.mark.slurm, pytest.mark.postgres]

ITERATIONS = 96  # 2 envs x 64 steps each: a population of 2 trains for several seconds
TRIALS = 4


def _sbatch_script(tmp_path, spec, url) -> str:
    out = tmp_path / "sweeps"
    return f"""#!/bin/bash
#SBATCH --job-name=sweep_slurm_test
#SBATCH --array=0-1
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --time=10
#SBATCH --requeue
#SBATCH --signal=B:USR2@60
#SBATCH --open-mode=append
#SBATCH --output={tmp_path}/logs/%A_%a.out
cd {tmp_path}
export PYTHONPATH={REPO}
exec {sys.executable} -m ppo_research.sweep {spec} --population 2 --workers 1 --storage {url} --out {out}
"""


def _training_task(study, out) -> tuple[str, int] | None:
    """(SLURM task, trial number) of a trial training mid-run: RUNNING, 3 rows written, not done."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        run_dir = out / STUDY / "trials" / f"{t.number:04d}" / "s0"
        job = t.user_attrs.get("slurm_job")
        if job and slurm.written_rows(run_dir / "metrics.jsonl") >= 3 and not (run_dir / "summary.json").exists():
            return job, t.number
    return None


#: how the task is interrupted, and the line its first attempt ends with
INTERRUPTIONS = {
    "warning": (["scancel", "--batch", "--signal=USR2"], "requeued; it resumes trial(s)"),
    "scontrol_requeue": (["scontrol", "requeue"], "parked: if SLURM requeues job"),
}


@pytest.mark.parametrize("how", list(INTERRUPTIONS))
def test_preempted_worker_of_a_sweep_array_resumes_its_trials_and_the_budget_is_exact(partition, pg, tmp_path,
                                                                                        workers, how):
    interrupt, said = INTERRUPTIONS[how]
    url = pg.create_database(f"slurm_sweep_{how}")
    spec = write_spec(tmp_path, trials=TRIALS, total_timesteps=ITERATIONS * 128)
    assert "checkpoint.every=1" not in RUN  # the warning's own checkpoint is what the task resumes from
    create_study(tmp_path, spec, url, workers)  # once, from the "login node", as docs/cluster.md says
    out = tmp_path / "sweeps"
    (tmp_path / "logs").mkdir()
    script = tmp_path / "workers.sbatch"
    script.write_text(_sbatch_script(tmp_path, spec, url))
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    array = subprocess.run(["sbatch", "--parsable", f"--partition={partition}", str(script)], capture_output=True,
                           text=True, env=env, check=True, timeout=30).stdout.strip().split(";")[0]
    tasks = [f"{array}_0", f"{array}_1"]
    try:
        study = load(url)
        victim, number = slurm.wait(lambda: _training_task(study, out), 300, "a task's trial training mid-run",
                                    poll=0.05)
        before = {t.number: t.params for t in study.get_trials() if t.user_attrs.get("slurm_job") == victim}
        subprocess.run([*interrupt, victim], check=True, timeout=20)
        slurm.start_requeued_now(victim)
        records = {task: slurm.final_record(task, timeout=400) for task in tasks}
    finally:
        slurm.cmd("scancel", array)
    logs = {task: (tmp_path / "logs" / f"{task}.out").read_text() for task in tasks}
    shown = "\n".join(f"--- {task}\n{log[-3000:]}" for task, log in logs.items())

    for task, record in records.items():  # SLURM: the victim restarted once, every task completed
        assert record.get("JobState") == "COMPLETED", (record, shown)
        assert record.get("Restarts") == ("1" if task == victim else "0"), (record, shown)
    assert said in logs[victim], shown
    assert f"job {victim} restarted: resuming its trial(s)" in logs[victim], shown

    trials = load(url).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == TRIALS, shown  # exactly the budget
    assert all(t.state == TrialState.COMPLETE or "skipped" in t.user_attrs for t in trials), shown
    assert not any("interrupted" in t.user_attrs for t in trials), shown  # nothing failed and re-sampled
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == TRIALS  # no parameters twice
    trained = sorted(int(p.name) for p in (out / STUDY / "trials").iterdir())
    assert trained == sorted(t.number for t in complete)  # only the budget's trials ever trained
    resumed = [t for t in complete if t.user_attrs.get("attempts") == 2]
    assert number in {t.number for t in resumed} and {t.number for t in resumed} == set(before), shown
    for t in resumed:  # the same trial, its parameters as sampled, its run continued from the checkpoint
        assert t.params == before[t.number] and t.user_attrs["slurm_job"] == victim
        run_dir = out / STUDY / "trials" / f"{t.number:04d}" / "s0"
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["iteration"] for r in rows] == list(range(1, ITERATIONS + 1))  # continued, no row twice
        assert json.loads((run_dir / "summary.json").read_text())["iterations"] == ITERATIONS
        assert f"resuming {run_dir} from iteration" in logs[victim], shown


def test_a_warning_whose_requeue_fails_ends_in_one_line_and_the_parked_trial_is_then_interrupted(partition,
                                                                                                  tmp_path):
    """A worker that believes it is SLURM job 999999 (which SLURM does not know): at the warning
    its trial stops with a checkpoint and is parked, ``scontrol requeue`` fails, one line says so
    (exit 140). The next worker asks SLURM about the parked trial's job, is told it is gone, marks
    the trial interrupted (not counted) and fills the budget with a new one."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"study": "gone", "overrides": [*RUN, f"total_timesteps={ITERATIONS * 128}"],
                                "params": {"loss.epsilon": {"low": 0.1, "high": 0.3}}, "trials": 1,
                                "sampler": {"name": "RandomSampler", "seed": 0}}))
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "SLURM_JOB_ID": "999999"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for key in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", "SUBMITIT_EXECUTOR"):
        env.pop(key, None)
    run_dir = tmp_path / "outputs" / "sweeps" / "gone" / "trials" / "0000" / "s0"
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ppo_research.sweep", str(spec)], cwd=tmp_path, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        slurm.wait(lambda: slurm.written_rows(run_dir / "metrics.jsonl") >= 3 or proc.poll() is not None, 180,
                   "3 metrics rows of trial 0")
        proc.send_signal(signal.SIGUSR2)
        assert proc.wait(timeout=120) == 140
    finally:
        if proc.poll() is None:
            proc.kill()
    first = (tmp_path / "first.log").read_text()
    ended = [line for line in first.splitlines() if "not requeued" in line]
    assert len(ended) == 1 and ended[0].startswith("interrupted: SIGUSR2: job 999999 not requeued ("), first
    rows = slurm.written_rows(run_dir / "metrics.jsonl")
    assert 3 <= rows < ITERATIONS, first  # stopped mid-run, with its checkpoint
    assert (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())

    env.pop("SLURM_JOB_ID")
    second = subprocess.run([sys.executable, "-m", "ppo_research.sweep", str(spec)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "trial 0: worker gone, marked FAIL (interrupted, not counted)" in second.stdout
    trials = sweeps.load(tmp_path, "gone").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs["requeued"] == "999999" and "interrupted" in trials[0].user_attrs
