"""A job: one run that a command line, a launcher or a sweep worker asks for. The public API the
launchers and the sweep call (the command line's own workarounds live in ``app.py``):

- ``plan_job``: continue the run the directory holds (``resume=``, a requeued SLURM job, a
  multirun continued with the population launcher's ``resume``) or start a fresh one, refused in
  a directory that already holds a run;
- ``run_job``: plan and train one job (``python -m ppo_research``'s task);
- ``job_failure``: any failure as one ``error:`` line and its exit status (ppo_research.errors),
  a single run exiting with it, a multirun's job failing alone (``RunFailed``);
- ``invocation``: what the command line said that jobs need (set by ``app.cli``, carried to a
  population launcher's processes).

A job rejected with status 2 leaves no run directory behind: what was made for it (the
directory, Hydra's ``.hydra/``) is removed again (``remove_if_unused``).
"""
from __future__ import annotations

import errno
import os
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ..errors import (
    EXIT_BAD_INPUT,
    EXIT_BUG,
    EXIT_IO,
    CheckpointError,
    ConfigError,
    NonFiniteError,
    RunDirError,
    exit_status,
    first_line,
)
from .config.compose import choices_of
from .console import write_line
from .loop import train
from .rundir import checkpoint, owner
from .rundir.resume import continue_in_place, resume_config
from .signals import preemption
from .signals.stops import TrainingInterrupted

LOG_FILE = "app.log"  # Hydra's job log (created only when something is logged) and the bug log


class RunFailed(Exception):
    """A multirun job's failure, already reported on stderr in one line; carries the exit status.

    Raised (not sys.exit) so that Hydra records the job as failed and runs the remaining jobs;
    at the end Hydra re-raises the first one and ``cli`` turns it into the exit status.
    """

    def __init__(self, message: str, status: int):
        super().__init__(message, status)  # both in args, so a launcher's worker can pickle it back
        self.status = status

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class Invocation:
    """What ``cli`` learnt from the command line before Hydra ran."""

    resume_dir: Optional[Path] = None  # the literal resume path (never interpolated)
    existed: set = field(default_factory=set)  # directories that existed before: never removed
    full_error: bool = False  # the user set HYDRA_FULL_ERROR: bugs show their traceback
    main_started: bool = False
    interrupted: bool = False  # Ctrl-C outside the training loop
    sweep_dir: Optional[Path] = None  # a multirun's sweep directory, as it was before Hydra ran
    multirun_yaml: Optional[bytes] = None  # ... and its multirun.yaml then (None: there was none)
    job_statuses: list = field(default_factory=list)  # each multirun job's exit status, as it ends


def job_ended(status: int) -> None:
    """Note a multirun job's end (0, or its failure's exit status): a multirun whose every job was
    refused (bad input, status 2) leaves its sweep directory as it found it."""
    invocation.job_statuses.append(status)


invocation = Invocation()


def hydra_choices() -> dict[str, str]:
    return choices_of(HydraConfig.get().runtime.choices)


def config_error_of(err: BaseException) -> Optional[ConfigError]:
    """A ConfigError raised inside a constructor Hydra instantiated (it wraps it)."""
    while err is not None:
        if isinstance(err, ConfigError):
            return err
        err = err.__cause__
    return None


def fail_job(message: str, status: int) -> RunFailed:
    """One line on stderr; a single run exits with ``status``, a multirun job fails alone."""

    write_line(message)
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(status)
    return RunFailed(message, status)


def log_bug(err: BaseException, run_dir: Optional[Path] = None) -> str:
    """Append ``err``'s traceback to ``run_dir/app.log`` (else a new file in the temp
    directory); returns where it went."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    if run_dir is not None:
        path = Path(run_dir) / LOG_FILE
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"ppo_research: unexpected error, pid {os.getpid()}, argv {sys.argv[1:]}\n{text}")
            return str(path)
        except OSError:
            pass
    fd, path = tempfile.mkstemp(prefix="ppo_research-error-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"ppo_research: unexpected error, pid {os.getpid()}, argv {sys.argv[1:]}\n{text}")
    return path


def bug_line(err: BaseException, log: str) -> str:
    detail = first_line(err)
    return (f"error: unexpected {type(err).__name__}{': ' + detail if detail else ''} (a bug in ppo_research; "
            f"the traceback is in {log})")


HYDRA_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}


def remove_if_unused(run_dir: Path) -> None:
    """Remove what this process made for a run that was rejected before it started: the run
    directory if it holds nothing but Hydra's ``.hydra/``, an empty ``app.log``, the owner lock
    and an empty ``checkpoints/``; then its parents that did not exist before and are empty."""
    run_dir = Path(run_dir)
    try:
        entries = {p.name: p for p in run_dir.iterdir()}
    except OSError:
        return
    for name, path in entries.items():
        if name == ".hydra" and path.is_dir() and {p.name for p in path.iterdir()} <= HYDRA_FILES:
            continue
        if name == LOG_FILE and path.is_file() and path.stat().st_size == 0:
            continue
        if name == owner.LOCK_FILE or (name == "checkpoints" and path.is_dir() and not any(path.iterdir())):
            continue
        return  # something of a run lives here
    try:
        for name, path in entries.items():
            if path.is_dir():
                for child in path.iterdir():
                    child.unlink()
                path.rmdir()
            else:
                path.unlink()
        if run_dir in invocation.existed:
            return
        run_dir.rmdir()
        parent = run_dir.parent
        while parent not in invocation.existed and parent != parent.parent and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    except OSError:
        pass


@dataclass
class JobPlan:
    """What one job trains: ``train_from_config``'s arguments (a resume sets ``resume_from``)."""

    cfg: DictConfig
    choices: dict
    overrides: list
    resume_from: Optional[Path] = None
    resume_state: Optional[dict] = None


def plan_job(cfg: DictConfig, hydra_cfg, run_dir: Path, continuing: Optional[str] = None) -> JobPlan:
    """A requeued SLURM job (time limit, preemption), ``resume=``, or a job ``continuing`` an
    earlier multirun (the population launcher's ``resume``: the reason, for the line it prints)
    continues its run in place; anything else is a fresh run, refused in a directory that already
    holds one. Raises what ``job_failure`` reports. (The population launcher plans its members
    with this too.)"""

    overrides = list(OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False))  # as typed
    # a requeued SLURM job (time limit, preemption) continues its run in place (run/signals/preemption.py)
    resumed = invocation.resume_dir is not None or resumes_requeued(run_dir)
    continued = not resumed and continuing is not None and continue_in_place(run_dir, continuing, announce=False)
    if resumed or continued:
        cfg, choices, path, state = resume_config(cfg, run_dir, overrides, hydra_choices())
        if continued:  # said once the resume is accepted
            write_line(f"{continuing}: resuming {run_dir} in place from {path.name}")
        return JobPlan(cfg, choices, overrides, resume_from=path, resume_state=state)
    found = owner.holds_a_run(run_dir)
    if found:
        raise RunDirError(f"output directory {run_dir} already holds a run ({', '.join(found)}): continue it "
                          f"with resume={run_dir}, or choose another directory")
    return JobPlan(cfg, hydra_choices(), overrides)


def resumes_requeued(run_dir: Path) -> bool:
    """Whether this job is a requeued attempt of the run in ``run_dir`` that must continue it:
    a submitit job that requeued itself (the marker names it) or that SLURM restarted
    (``SLURM_RESTART_COUNT`` > 0), in a directory holding a run. An attempt that got no
    checkpoint written leaves files but nothing to resume: they are set aside and the run starts
    over. Anything else (a fresh job, a new directory, a plain run) gets False."""
    run_dir = Path(run_dir)
    if not owner.holds_a_run(run_dir):
        return False
    why = preemption.requeued_job(run_dir)
    if why is None:
        return False
    (run_dir / preemption.MARKER).unlink(missing_ok=True)
    return continue_in_place(run_dir, why)


def run_job(cfg: DictConfig, hydra_cfg, run_dir: Path) -> float | None:

    try:
        plan = plan_job(cfg, hydra_cfg, run_dir)
        summary = train.train_from_config(plan.cfg, run_dir, plan.choices, resume_from=plan.resume_from,
                                    resume_state=plan.resume_state, overrides=plan.overrides)
    except (Exception, KeyboardInterrupt) as err:
        raise job_failure(err, run_dir) from None
    return summary.get("eval_return")


def job_failure(err: BaseException, run_dir: Path) -> RunFailed:
    """Report the failure ``err`` of the job in ``run_dir`` in one line and return the RunFailed
    the job raises (a single run exits with the status instead). A stop (KeyboardInterrupt) is
    re-raised, and so is a bug under HYDRA_FULL_ERROR."""

    try:
        raise err
    except (ConfigError, CheckpointError, RunDirError) as err:
        status = exit_status(err)  # EXIT_IO for a failed checkpoint write
        if status == EXIT_BAD_INPUT:
            remove_if_unused(run_dir)
        return fail_job(f"error: {err}", status)
    except NonFiniteError as err:
        last = checkpoint.latest(run_dir)
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written"
        return fail_job(f"error: training diverged: {err}; nothing of that iteration was saved, {kept}",
                         exit_status(err))
    except KeyboardInterrupt as err:

        if not isinstance(err, TrainingInterrupted):
            remove_if_unused(run_dir)
        else:  # in a SLURM job: the time-limit/preemption warning requeues the job (no return), or why not
            not_requeued = preemption.after_stop(err)
            if not_requeued:
                raise fail_job(f"error: {not_requeued}", 128 + err.signum) from None
        raise
    except OSError as err:
        if exit_status(err) == EXIT_IO:
            last = checkpoint.latest(run_dir)
            kept = f"the last checkpoint is {last}" if last else "no checkpoint had been written"
            where = err.filename or f"while writing in {run_dir}"
            return fail_job(f"error: {err.strerror}: {where}; {kept}", EXIT_IO)
        return fail_job(*unforeseen_failure(err, run_dir))
    except Exception as err:
        config_error = config_error_of(err)
        if config_error is not None:
            remove_if_unused(run_dir)
            return fail_job(f"error: {config_error}", EXIT_BAD_INPUT)
        return fail_job(*unforeseen_failure(err, run_dir))


def unforeseen_failure(err: BaseException, run_dir: Path) -> tuple[str, int]:
    if invocation.full_error:
        raise err
    return bug_line(err, log_bug(err, run_dir)), EXIT_BUG


def output_dir_line(err: OSError) -> str:
    """Hydra could not make or write the output directory."""
    why = {errno.EEXIST: "it exists and is not a directory (a file, or a symlink to nowhere)",
           errno.ENOENT: "a parent cannot be created there"}.get(err.errno)
    return f"cannot write the output directory: {err.strerror}: {err.filename}{f'; {why}' if why else ''}"
