"""The Hydra application ``python -m ppo_research``: compose, train, and end every failure in
one line on stderr with the exit status listed in ``ppo_research.errors`` (docs/reliability.md).

Expected failures (bad input, a busy or unusable run directory, divergence, a full disk) get
their own line. Anything else is a bug: one line naming the exception and the log file that
holds its traceback (the run directory's ``app.log``, or a file in the temp directory before
there is one), exit status 1. ``HYDRA_FULL_ERROR=1`` prints the traceback instead.

A command rejected with status 2 leaves no run directory behind: what Hydra made for it (the
directory, ``.hydra/``) is removed again.
"""
from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from ..errors import EXIT_BAD_INPUT, IO_ERRNOS, ConfigError, RunDirError
from . import jobs
from .config.compose import CONF_DIR, check_group_choices
from .config.errors import check_arguments, hydra_error_line
from .console import fail, say_sacct_once, write_line
from .jobs import (
    EXIT_BUG,
    Invocation,
    RunFailed,
    bug_line,
    fail_job,
    job_ended,
    log_bug,
    output_dir_line,
    run_job,
)
from .rundir import guard, owner
from .rundir.resume import resume_arguments, resume_target
from .signals.stops import TrainingInterrupted

#: ... and, while Hydra makes the output directory, also these (a dangling symlink, /proc/x).
OUTPUT_DIR_ERRNOS = IO_ERRNOS | {errno.ENOENT, errno.EEXIST, errno.ELOOP, errno.EINVAL}


def interrupted() -> bool:
    """Whether the last ``cli`` call was stopped by Ctrl-C outside the training loop. Such a
    stop may have landed inside an import that runs Python code from C (torch's does), which
    makes CPython re-raise SIGINT at exit whatever the exit status: ``__main__`` then leaves
    with ``os._exit`` so that the status stays 130."""
    return jobs.invocation.interrupted


# ---------------------------------------------------------------------------------------------
# the job


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    jobs.invocation.main_started = True
    hydra_cfg = HydraConfig.get()
    run_dir = jobs.invocation.resume_dir or Path(hydra_cfg.runtime.output_dir)
    try:
        try:
            owner.acquire(run_dir)
        except RunDirError as err:  # another live process owns it: touch nothing
            raise fail_job(f"error: {err}", EXIT_BAD_INPUT) from None
        try:
            result = run_job(cfg, hydra_cfg, run_dir)
        finally:
            owner.release(run_dir)
    except RunFailed as err:
        job_ended(err.status)
        raise
    job_ended(0)
    return result


# ---------------------------------------------------------------------------------------------
# the command line


class _WithoutHydraJobLine:
    """stderr without Hydra's "Error executing job with overrides" line: a failed multirun job
    has already said what failed, in one line."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        if text.startswith("Error executing job with overrides"):
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def cli(argv: list[str]) -> int:
    """``python -m ppo_research``: Hydra's main, every failure as one line on stderr and an exit
    status (see the module docstring)."""
    user_full_error = os.environ.get("HYDRA_FULL_ERROR")
    jobs.invocation = Invocation(full_error=bool(user_full_error) and user_full_error != "0")
    say_sacct_once()  # a SLURM launcher's polls without accounting: one line, not three at each
    multirun = any(a in ("-m", "--multirun") for a in argv)
    stderr = sys.stderr
    held: list[Path] = []
    try:
        check_arguments(argv)
        check_group_choices(argv)
        try:
            argv = resume_arguments(argv)
        except ConfigError as err:
            fail(str(err))
        if resume_target(argv) is not None:
            jobs.invocation.resume_dir = _literal_resume_dir(argv)
        jobs.invocation.existed = guard.existing_dirs(argv)
        # An existing directory is taken before Hydra writes its .hydra/ into it: a live run's
        # files stay its own, and a fresh run does not overwrite a finished one's.
        if multirun and not _runs_nothing(argv):
            guard.refuse_taken_job_dirs(argv, jobs.invocation)  # likewise every job directory of a multirun, before multirun.yaml
        explicit = [] if multirun else guard.explicit_dirs(argv, ("hydra.run.dir",))
        target = jobs.invocation.resume_dir or (explicit[-1] if explicit else None)
        if target is not None and target.is_dir() and not _runs_nothing(argv):
            owner.acquire(target)
            held.append(target)
            found = owner.holds_a_run(target) if jobs.invocation.resume_dir is None else []
            if found:
                raise RunDirError(f"output directory {target} already holds a run ({', '.join(found)}): continue it "
                                  f"with resume={target}, or choose another directory")
        os.environ["HYDRA_FULL_ERROR"] = "1"  # exceptions reach us instead of Hydra's multi-line printer
        sys.argv = [sys.argv[0], *argv]
        if multirun:
            sys.stderr = _WithoutHydraJobLine(stderr)
        main()
    except SystemExit as err:
        return err.code if isinstance(err.code, int) else (0 if err.code is None else EXIT_BUG)
    except RunFailed as err:  # already printed by main
        guard.restore_sweep_dir(jobs.invocation)
        return err.status
    except RunDirError as err:  # the owner lock taken above
        write_line(f"error: {err}", stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as err:

        if isinstance(err, TrainingInterrupted):
            command = err.continue_with or f"python -m ppo_research resume={err.checkpoint.parent.parent}"
            write_line(f"{err}; continue with: {command}", stderr)
            return 128 + err.signum
        write_line("error: interrupted outside the training loop (before it started, or while closing): "
              "no checkpoint was written for this stop", stderr)
        jobs.invocation.interrupted = True
        return 128 + 2
    except BrokenPipeError:  # stdout closed early (--help | head): leave quietly, as a shell tool
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception as err:
        if jobs.invocation.full_error:
            raise
        if isinstance(err, OSError) and err.errno in OUTPUT_DIR_ERRNOS and not jobs.invocation.main_started:
            line = output_dir_line(err)
        else:
            line = hydra_error_line(err, argv)
        if line is None:
            write_line(bug_line(err, log_bug(err)), stderr)
            return EXIT_BUG
        write_line(f"error: {line}", stderr)
        return EXIT_BAD_INPUT
    finally:
        sys.stderr = stderr
        for target in held:
            owner.release(target)
        if user_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = user_full_error
    return 0


def _runs_nothing(argv: list[str]) -> bool:
    """--help, --cfg, --info, ...: Hydra prints and returns without running the job."""
    flags = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc", "--version")
    return any(a in flags or a.partition("=")[0] in flags for a in argv)


def _literal_resume_dir(argv: list[str]) -> Optional[Path]:
    """The run directory ``resume_arguments`` put on the command line (quoted, escaped), read
    back literally."""

    arg = next((a for a in reversed(argv) if a.startswith("resume=")), None)
    if arg is None:
        return None
    value = OverridesParser.create().parse_overrides([arg])[0].value()
    return Path(OmegaConf.create({"v": value}).v)
