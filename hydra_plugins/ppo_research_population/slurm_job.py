"""What one population's SLURM job runs: submitit pickles a ``PopulationJob`` and calls it on the
node, where it trains the members in this one process (``worker.train_population``) and returns
the population's outcome (its JobReturns) to the waiting launcher.

Time limits and preemption (run/signals/preemption.py for a single run): the job's warning signal
stops every member after the same iteration with a checkpoint; then each member's directory gets
the requeue marker and submitit requeues the job (``checkpoint`` hands it this same call again).
The requeued attempt resumes every member in place. A member that had ended before (diverged, or
an ``on_evaluation`` stop) is not trained again: its marker says how it ended, and it is reported
so. If the job is not requeued (``max_num_timeout`` used up), each member ends with one line (exit
status 128 + the signal), its checkpoint kept. A SIGTERM (``scontrol requeue``, a preemption
without the warning) stops the members the same way and ends the job; SLURM's restart then resumes
them (``SLURM_RESTART_COUNT``).

Light at import, as ``worker``: Hydra's plugin scan imports this module in every application.
"""
from __future__ import annotations  # (no dataclass here: Hydra scans plugin modules outside sys.modules)

import json
import signal
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus, setup_globals
from omegaconf import DictConfig

from .job_returns import job_return


class PopulationJob:
    """One population's call: its number, its jobs (index, whole config), and what the command
    line said (``invocation``, ``argv``), whether it continues an earlier multirun (``resume``),
    and the command that continues the multirun if the job stops for good (``continue_with``)."""

    def __init__(self, number: int, jobs: list[tuple[int, DictConfig]], invocation: Any, argv: list[str],
                 resume: bool, continue_with: str) -> None:
        self.number, self.jobs, self.invocation = number, jobs, invocation
        self.argv, self.resume, self.continue_with = argv, resume, continue_with

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's requeue: the same call again (the run directories hold the state)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def __call__(self) -> dict:
        from ppo_research.run import jobs as job_api
        from ppo_research.run.signals.stops import sigint_deferred

        from .worker import train_population

        sys.argv = self.argv  # the command that started the multirun (the owner lock and app.log name it)
        with sigint_deferred():  # torch's C++ start-up can abort (SIGABRT) on a signal
            import ppo_research.run.loop.train  # noqa: F401
        setup_globals()
        job_api.invocation = self.invocation
        ended = ended_before(self.jobs)
        training = [(idx, config) for idx, config in self.jobs if idx not in ended]
        try:
            outcome = train_population(training, self.resume) if training else {"returns": {}, "interrupted": None}
        except Exception as err:  # noqa: BLE001 - a bug here: one line, the traceback in a log file; every job fails
            if job_api.invocation.full_error:
                raise
            line = job_api.bug_line(err, job_api.log_bug(err))
            job_api.write_line(line)
            return {"returns": {idx: job_return(config, JobStatus.FAILED, job_api.RunFailed(line, job_api.EXIT_BUG))
                                for idx, config in self.jobs}, "interrupted": None}
        stop = outcome.pop("interrupted", None)
        if stop is not None:
            return {"returns": self._stopped(stop, training, {**ended, **stop.get("ended", {})}), "interrupted": None}
        from ppo_research.run.signals.preemption import MARKER

        for idx, config in self.jobs:
            if idx in ended:
                (run_dir_of(config) / MARKER).unlink(missing_ok=True)
        return {"returns": {**ended, **outcome["returns"]}, "interrupted": None}

    def _stopped(self, stop: dict, training: list[tuple[int, DictConfig]], ended: dict) -> dict:
        """After a stop: requeue the job (no return), or end it (SIGTERM: exit; the warning
        without a requeue: each member's failure, in one line each)."""
        from ppo_research.run import jobs as job_api
        from ppo_research.run.rundir import checkpoint
        from ppo_research.run.signals import preemption

        signum, iteration, job = stop["signum"], stop["iteration"], preemption.job_id()
        live = {idx: run_dir_of(config) for idx, config in training if idx not in ended}
        markers = {run_dir_of(config): {"ended": str(ret._return_value), "status": ret._return_value.status}
                   for idx, config in self.jobs if (ret := ended.get(idx)) is not None}
        warning = preemption.job_warning()
        if signum is None or warning is None or signum != warning.signum:
            preemption.mark(markers)
            job_api.write_line(f"stopped by {signal.Signals(signum or signal.SIGINT).name} after iteration {iteration}; "
                               f"if SLURM requeues job {job}, population {self.number} resumes from there (else "
                               f"continue the multirun with: {self.continue_with})")
            raise SystemExit(128 + (signum or signal.SIGINT))  # a line, not a KeyboardInterrupt traceback
        job_api.write_line(f"{warning.name}: time limit or preemption ahead; requeueing job {job} through submitit "
                           f"(the requeued job resumes population {self.number}: {len(live)} member(s) from iteration "
                           f"{iteration})")
        for run_dir in live.values():
            markers[run_dir] = {"iteration": iteration, "checkpoint": str(checkpoint.latest(run_dir))}
        why = preemption.requeue(warning, markers)  # returns only if the job was not requeued
        returns = dict(ended)
        for idx, config in training:
            if idx in live:
                line = (f"error: {warning.name}: job {job} not requeued ({why}); {live[idx]} stopped after iteration "
                        f"{iteration} with checkpoint {checkpoint.latest(live[idx])}; continue the multirun with: "
                        f"{self.continue_with}")
                job_api.write_line(line)
                returns[idx] = job_return(config, JobStatus.FAILED, job_api.RunFailed(line, 128 + signum))
        return returns


def run_dir_of(config: DictConfig) -> Path:
    return Path(config.hydra.runtime.output_dir)


def ended_before(jobs: list[tuple[int, DictConfig]]) -> dict:
    """The members that an earlier attempt of this job saw end (their markers name this job and
    how they ended): their JobReturns."""
    from ppo_research.run import jobs as job_api
    from ppo_research.run.signals import preemption

    job, ended = preemption.job_id(), {}
    for idx, config in jobs:
        try:
            marked = json.loads((run_dir_of(config) / preemption.MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(marked, dict) and job is not None and marked.get("job_id") == job and "ended" in marked:
            ended[idx] = job_return(config, JobStatus.FAILED, job_api.RunFailed(marked["ended"], marked["status"]))
    return ended
