"""Sweep workers as SLURM jobs (a hand-written sbatch array, docs/cluster.md): preemption-safe.

A worker running as a SLURM job (``SLURM_JOB_ID`` set; ``--workers 1``, the documented layout)
records its job (``<array id>_<task>`` or ``<id>``) on the trials it claims (``slurm_job``).

- **The warning** (``#SBATCH --signal=B:USR2@<lead>``, the worker started with ``exec`` so the
  batch shell is the worker): the trainer finishes the iteration in progress and checkpoints
  every member (``preemption.job_warning`` hands it this signal as a job warning); a warning
  that comes while no trainer runs stops the next one after its first iteration, and no trial
  is claimed after it. Then the worker *parks* its trials (still RUNNING, ``requeued`` = its
  job), tells those that had already ended (pruned, diverged) their outcome, and runs
  ``scontrol requeue <job>`` (the job needs ``#SBATCH --requeue``).
- **SIGTERM** (``scontrol requeue``, ``scancel``, a preemption without the warning): the same
  stop and park, without requeueing: whether the job comes back is SLURM's to say.
- A parked trial counts as running (it keeps its place in the budget) while SLURM says its job
  is queued or running (``scontrol show job``); once SLURM says the job ended or forgot it, any
  worker marks the trial FAIL ``interrupted`` as a dead worker's (workers.classify).
- The restarted job (same job id) adopts its parked trials before claiming new ones, and, when
  SLURM restarted it (``SLURM_RESTART_COUNT`` > 0), also its RUNNING trials that were not
  parked (a SIGKILL, a node failure) if no worker has marked them dead yet: it trains them again
  with the same parameters, each run resumed in place from its newest checkpoint, appending to
  its ``metrics.jsonl`` (trial.earlier_attempt). A trial is thus never sampled twice.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Optional

import optuna
from optuna.trial import TrialState

from ...run.console import write_line
from ...run.signals import preemption
from .spec import HOST

WARNING = signal.SIGUSR2  # the warning signal the sbatch script asks for (--signal=B:USR2@<lead>)

#: SLURM job states in which a parked trial's job may still come back to it.
LIVE_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
               "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD")


def job() -> Optional[str]:
    """This process's SLURM job (``<array id>_<task>`` for an array task), or None outside SLURM."""
    return preemption.job_id() if os.environ.get("SLURM_JOB_ID") else None


def restarted() -> bool:
    restarts = os.environ.get("SLURM_RESTART_COUNT", "")
    return restarts.isdigit() and int(restarts) > 0


_asked: dict[str, tuple[float, bool]] = {}  # job -> (when SLURM was asked, whether it said live)


def job_live(slurm_job: str) -> bool:
    """Whether SLURM says ``slurm_job`` is queued or running. A worker that cannot ask SLURM
    (no scontrol, no answer) counts the job as live: a parked trial keeps its place. Asked at
    most every few seconds per job."""
    cached = _asked.get(slurm_job)
    if cached is not None and time.monotonic() - cached[0] < 5:
        return cached[1]
    try:
        res = subprocess.run(["scontrol", "-o", "show", "job", slurm_job], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return True
    if res.returncode != 0:
        live = "invalid job id" not in (res.stderr + res.stdout).lower()  # forgotten: ended long ago
    else:
        state = dict(item.split("=", 1) for item in res.stdout.split() if "=" in item).get("JobState", "")
        live = state in LIVE_STATES
    _asked[slurm_job] = (time.monotonic(), live)
    return live


def parked_alive(attrs: dict) -> Optional[bool]:
    """For a RUNNING trial: None if it is not parked, else whether its job may still resume it."""
    parked = attrs.get("requeued")
    return None if not parked else job_live(parked)


def all_parked(study: optuna.Study, alive: int) -> bool:
    """Whether the ``alive`` trials still running are all parked for their jobs' restarts (a
    worker waiting for the budget's last trials then leaves: it could only hold its allocation,
    which on a full cluster may be the one the requeued job waits for)."""
    parked = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
              if parked_alive(t.user_attrs)]
    if not alive or len(parked) < alive:
        return False
    jobs = sorted({t.user_attrs["requeued"] for t in parked})
    write_line(f"the budget's last trial(s) {', '.join(str(t.number) for t in parked)} wait for their SLURM job(s) "
               f"{', '.join(jobs)} to restart, which resume(s) them; this worker leaves them to it")
    return True


class WorkerWarning:
    """The warning signal in a sweep worker: noted while no trainer runs (``pending``), taken by
    the trainer as a job warning while one does (run/signals/stops.py)."""

    def __init__(self):
        self.pending = False
        self.job_warning = preemption.JobWarning(int(WARNING), self._note, pending=self._pending)

    def _pending(self) -> bool:
        return self.pending

    def _note(self, signum, frame) -> None:
        if not self.pending:
            write_line(f"{WARNING.name}: the job's time limit or a preemption is near: this worker claims no more "
                       f"trials; it requeues its job {job()}")
        self.pending = True


def listen() -> Optional[WorkerWarning]:
    """In a sweep worker that is a SLURM job's process: take the warning signal (and hand it to
    the trainers). None elsewhere."""
    if job() is None:
        return None
    warning = WorkerWarning()
    signal.signal(WARNING, warning._note)
    preemption.set_worker_warning(warning.job_warning)
    return warning


def tag(trial: optuna.Trial) -> None:
    """Record this worker's SLURM job on a trial it claims."""
    slurm_job = job()
    if slurm_job is not None:
        trial.set_user_attr("slurm_job", slurm_job)


def adopt(study: optuna.Study) -> list[optuna.Trial]:
    """This job's own trials left RUNNING by its earlier attempt: parked ones, and when SLURM
    restarted the job, unparked ones too. Each gets this process's pid and a fresh heartbeat."""
    slurm_job = job()
    if slurm_job is None:
        return []
    mine = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = t.user_attrs
        if attrs.get("slurm_job") != slurm_job or not (attrs.get("requeued") == slurm_job or restarted()):
            continue
        trial = optuna.Trial(study, t._trial_id)
        try:
            trial.set_user_attr("host", HOST)
            trial.set_user_attr("pid", os.getpid())
            trial.set_user_attr("alive_at", time.time())
            trial.set_user_attr("requeued", None)
            trial.set_user_attr("attempts", int(attrs.get("attempts", 1)) + 1)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            continue  # another worker marked it dead meanwhile
        mine.append(trial)
    if mine:
        write_line(f"job {slurm_job} restarted: resuming its trial(s) {', '.join(str(t.number) for t in mine)} in "
                   f"place (same parameters, runs continued from their checkpoints)")
    return mine


def parks(err: BaseException, warning: Optional[WorkerWarning]) -> bool:
    """Whether a stop ``err`` of this worker leaves its trials parked for the job's restart:
    the warning, or SIGTERM, in a SLURM job."""
    signum = getattr(err, "signum", None)
    return warning is not None and signum in (int(WARNING), int(signal.SIGTERM))


def park(trials: list[optuna.Trial]) -> None:
    slurm_job = job()
    for trial in trials:
        trial.set_user_attr("requeued", slurm_job)


def requeue(numbers: list[int]) -> Optional[str]:
    """``scontrol requeue`` this job (after the warning); returns the line to end with."""
    slurm_job = job()
    held = f"trial(s) {', '.join(map(str, numbers))}" if numbers else "no trial"
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the requeue's own SIGTERM to this job: already stopping
    try:
        res = subprocess.run(["scontrol", "requeue", slurm_job], capture_output=True, text=True, timeout=60)
        why = None if res.returncode == 0 else (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[0]
    except (OSError, subprocess.TimeoutExpired) as err:
        why = str(err)
    if why is None:
        return f"{WARNING.name}: job {slurm_job} requeued; it resumes {held} when SLURM restarts it"
    return (f"{WARNING.name}: job {slurm_job} not requeued ({why}); {held} parked: once the job has ended, another "
            f"worker marks them interrupted (not counted) and the budget is filled by new trials")
