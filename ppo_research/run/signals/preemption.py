"""Time limits and preemption of SLURM jobs (Hydra's submitit launcher): stop at the next
iteration boundary with a checkpoint, requeue the job, and resume the run in place when the
requeued job starts. docs/cluster.md, "Time limits and preemption", says how to configure it.

How the pieces fit:

- submitit asks SLURM for a warning signal ``signal_delay_s`` seconds before the job's end
  (``#SBATCH --signal=USR2@<delay>``; SIGUSR2 unless ``SUBMITIT_PREEMPT_SIGNAL`` says
  otherwise) and installs its own handler for it in the job: that handler pickles the same call
  again (the launcher's ``checkpoint()``), runs ``scontrol requeue <job>`` and exits.
- While the trainer loops, ``StopRequests`` (run/signals/stops.py) takes that signal over
  (``job_warning``/``arm``): the iteration in progress is finished, a checkpoint is written and
  ``TrainingInterrupted`` ends the run, as for SIGTERM. Once the run is closed (files flushed,
  wandb finished), ``after_stop`` hands over to submitit's handler. Outside the training loop
  (start-up, closing) the signal reaches submitit's handler directly: the job is requeued at once
  and the run's newest checkpoint, if any, is where it continues.
- The requeued job runs the same Hydra job again, in the same run directory.
  ``requeued_job`` recognises it (a marker naming this job, written before requeueing, or
  SLURM's restart count; ``jobs.plan_job`` then continues the run) and the job resumes from the directory's newest checkpoint, appending
  to the same ``metrics.jsonl`` and continuing the same wandb run (its id is in the checkpoint).

Nothing here acts outside a submitit job: a plain ``python -m ppo_research`` run never
auto-resumes, and a fresh job in a new directory starts fresh. The one other user is a sweep
worker that is a SLURM job (tools/sweep/slurm.py): it hands its own warning to the trainers
(``set_worker_warning``), and requeues its job and resumes its trials itself.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ...errors import first_line
from ..console import write_line

#: Written into the run directory just before the job requeues itself; the requeued job whose
#: submitit job id it names resumes the run (and removes it).
MARKER = ".requeue.json"


@dataclass
class JobWarning:
    """The job's time-limit/preemption warning: its signal and submitit's handler of it."""

    signum: int
    handler: Callable[[int, Any], None]
    #: a warning that came while no trainer listened (a sweep worker's): the next trainer stops
    #: after its first iteration
    pending: Optional[Callable[[], bool]] = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


_armed: Optional[JobWarning] = None  # set while (and after) the trainer listens for the warning
_worker_warning: Optional[JobWarning] = None  # a sweep worker's in a SLURM job (tools/sweep/slurm.py)


def set_worker_warning(warning: Optional[JobWarning]) -> None:
    """A sweep worker that requeues its SLURM job itself: its trainers stop at ``warning``."""
    global _worker_warning
    _worker_warning = warning


def job_warning() -> Optional[JobWarning]:
    """In a submitit job whose runner handles the warning signal: that signal and submitit's
    handler; in a sweep worker in a SLURM job, its own (``set_worker_warning``); otherwise None
    (a plain run, a test)."""
    if _worker_warning is not None:
        return _worker_warning
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    env_module = sys.modules.get("submitit.core.job_environment")  # loaded by the job runner
    if env_module is None:
        return None
    try:
        signum = env_module.JobEnvironment._usr_sig()  # SIGUSR2, or SUBMITIT_PREEMPT_SIGNAL
    except (RuntimeError, AttributeError):
        return None
    handler = signal.getsignal(signum)
    if not isinstance(getattr(handler, "__self__", None), env_module.SignalHandler):
        return None  # not submitit's requeueing handler: leave the signal alone
    return JobWarning(int(signum), handler)


def arm(warning: Optional[JobWarning]) -> None:
    """Remember whose handler requeues the job (StopRequests calls this when it takes over)."""
    global _armed
    _armed = warning


def job_id() -> Optional[str]:
    """This process's submitit job id (``<array id>_<task>`` for an array task), or None."""
    executor = os.environ.get("SUBMITIT_EXECUTOR")
    if executor == "slurm" or (executor is None and os.environ.get("SLURM_JOB_ID")):
        array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")
    if executor == "local":
        return os.environ.get("SUBMITIT_LOCAL_JOB_ID")
    return None




def after_stop(err) -> Optional[str]:
    """What a submitit job does after a signal stopped its run cleanly (``err``: the
    TrainingInterrupted, seen once the run is closed: files flushed, wandb finished).

    - The job's warning signal: requeue the job through submitit's handler, which exits the
      process. If submitit does not requeue it (``max_num_timeout`` used up, ``scontrol`` failed),
      returns one line saying so; the checkpoint stays for a resume by hand.
    - SIGTERM/SIGINT in a submitit job (``scancel``, ``scontrol requeue``, a preemption without
      the warning): one line and exit status 128 + N; if SLURM requeues the job, the requeued job
      resumes the run (``requeued_job``).
    - Anything else (not a submitit job): None, and the caller goes on as before.
    """
    warning = _armed
    run_dir = Path(err.checkpoint).parent.parent
    job = job_id()
    if warning is None or err.signum != warning.signum:
        if os.environ.get("SUBMITIT_EXECUTOR"):  # the job ends here: a line, not a KeyboardInterrupt traceback
            write_line(f"{err}; if SLURM requeues job {job}, it resumes from there (else: python -m ppo_research "
                  f"resume={run_dir})")
            raise SystemExit(128 + err.signum)
        return None
    write_line(f"{warning.name}: time limit or preemption ahead; requeueing job {job} through submitit (the requeued "
          f"job resumes {run_dir} from {Path(err.checkpoint).name})")
    why = requeue(warning, {run_dir: {"iteration": err.iteration, "checkpoint": str(err.checkpoint)}})
    return (f"{warning.name}: job {job} not requeued ({why}); the run stopped after iteration {err.iteration} "
            f"with checkpoint {err.checkpoint}; continue it with: python -m ppo_research resume={run_dir}")


def requeue(warning: JobWarning, markers: dict[Path, dict]) -> str:
    """Write each run directory's marker (``markers``: its content besides the job and signal),
    then requeue the job through submitit's handler, which exits the process. Returns why the job
    was not requeued (``max_num_timeout`` used up, ``scontrol`` failed); the markers are removed
    again then."""
    mark({run_dir: {**content, "signal": warning.name} for run_dir, content in markers.items()})
    try:
        warning.handler(warning.signum, None)  # submitit: dump the call again, requeue, sys.exit
        why = "submitit did not requeue it"
    except Exception as failure:  # noqa: BLE001 - submitit's UncompletedJobError, a failing scontrol
        why = first_line(failure)
    for run_dir in markers:
        (run_dir / MARKER).unlink(missing_ok=True)
    return why


def mark(markers: dict[Path, dict]) -> None:
    """Write each run directory's marker: this job's id and ``markers[run_dir]``."""
    job = job_id()
    for run_dir, content in markers.items():
        try:
            (run_dir / MARKER).write_text(json.dumps({"job_id": job, **content}) + "\n", encoding="utf-8")
        except OSError:
            pass  # SLURM's restart count still identifies the requeued job


def requeued_job(run_dir: Path) -> Optional[str]:
    """Why this process is a requeued attempt of the job that wrote ``run_dir`` (None: it is not)."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    job = job_id()
    try:
        marked = json.loads((run_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        marked = None
    if isinstance(marked, dict) and job is not None and marked.get("job_id") == job:
        return f"job {job} was requeued after {marked.get('signal', 'a warning signal')}"
    restarts = os.environ.get("SLURM_RESTART_COUNT", "")
    if restarts.isdigit() and int(restarts) > 0:
        return f"SLURM job {job} was requeued (restart {restarts})"
    return None
