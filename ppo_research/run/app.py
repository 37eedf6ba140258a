"""The Hydra application ``python -m ppo_research``: compose, train, and report every expected
failure as one line on stderr with the exit status listed in ``ppo_research.errors``
(docs/reliability.md). Bugs keep their traceback.
"""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ..errors import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_IO, CheckpointError, ConfigError, NonFiniteError, RunDirError
from . import checkpoint
from .compose import CONF_DIR, check_group_choices, choices_of
from .resume import resume_arguments, resume_config
from .train import train_from_config

#: OSError numbers that mean "the disk or the directory", not a bug.
IO_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOTDIR,
             errno.EISDIR, errno.ENAMETOOLONG}


class RunFailed(Exception):
    """A multirun job's failure, already reported on stderr in one line; carries the exit status.

    Raised (not sys.exit) so that Hydra records the job as failed and runs the remaining jobs;
    at the end Hydra re-raises the first one and ``cli`` turns it into the exit status.
    """

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


# ---------------------------------------------------------------------------------------------
# command line

def hydra_choices() -> dict[str, str]:
    return choices_of(HydraConfig.get().runtime.choices)


def _config_error(err: BaseException) -> Optional[ConfigError]:
    """A ConfigError raised inside a constructor Hydra instantiated (it wraps it)."""
    while err is not None:
        if isinstance(err, ConfigError):
            return err
        err = err.__cause__
    return None


def _fail_job(message: str, status: int) -> RunFailed:
    """One line on stderr; a single run exits with ``status``, a multirun job fails alone."""
    from hydra.types import RunMode

    print(message, file=sys.stderr, flush=True)
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(status)
    return RunFailed(message, status)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        if cfg.get("resume"):
            cfg, choices, path = resume_config(cfg, Path(cfg.resume), list(hydra_cfg.overrides.task), hydra_choices())
            summary = train_from_config(cfg, run_dir, choices, resume_from=path,
                                        overrides=list(hydra_cfg.overrides.task))
        else:
            summary = train_from_config(cfg, run_dir, hydra_choices(), overrides=list(hydra_cfg.overrides.task))
    except (ConfigError, CheckpointError, RunDirError) as err:
        status = EXIT_IO if isinstance(err.__cause__, OSError) else EXIT_BAD_INPUT  # a failed checkpoint write
        raise _fail_job(f"error: {err}", status) from None
    except NonFiniteError as err:
        last = checkpoint.latest(run_dir)
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written"
        raise _fail_job(f"error: training diverged: {err}; nothing of that iteration was saved, {kept}",
                      EXIT_DIVERGED) from None
    except OSError as err:
        if err.errno not in IO_ERRNOS:
            raise
        last = checkpoint.latest(run_dir)
        raise _fail_job(f"error: {err.strerror}: {err.filename}; the last checkpoint is {last}", EXIT_IO) from None
    except Exception as err:
        config_error = _config_error(err)
        if config_error is None:
            raise
        raise _fail_job(f"error: {config_error}", EXIT_BAD_INPUT) from None
    return summary.get("eval_return")


def hydra_error_line(err: BaseException, argv: list[str]) -> Optional[str]:
    """One line for Hydra's and OmegaConf's errors about the command line; None for anything
    else (a bug keeps its traceback)."""
    from hydra.errors import CompactHydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    def first(e) -> str:
        text = str(getattr(e, "msg", None) or e).strip()
        return text.splitlines()[0] if text else type(e).__name__

    if isinstance(err, OverrideParseException):
        return f"cannot parse the override {err.override!r}: {first(err.message)}"
    if isinstance(err, MissingConfigException) and err.options:
        return f"{first(err).rstrip('.')}: expected one of {', '.join(err.options)}"
    cause = err.__cause__
    if isinstance(err, CompactHydraException) and isinstance(cause, (ConfigKeyError, ConfigAttributeError)) \
            and cause.full_key:  # an override of a key that does not exist (a typo)
        key = cause.full_key
        value = next((a.partition("=")[2] for a in argv if a.lstrip("+~").partition("=")[0] == key), None)
        known = _schema_keys(key.rpartition(".")[0])
        expected = f"a key of {key.rpartition('.')[0] or 'the top level'}: {', '.join(known)}" if known else \
            f"an existing key ({first(cause)})"
        return f"{key}={value!r} is invalid: expected {expected}"
    if isinstance(err, CompactHydraException):
        parts = [first(err)] + ([first(cause)] if isinstance(cause, OmegaConfBaseException) else [])
        return "; ".join(p.rstrip(".") for p in parts)
    if isinstance(err, OmegaConfBaseException):
        return f"{getattr(err, 'full_key', '') or 'config'}: {first(err)}"
    return None


def _schema_keys(section: str) -> list[str]:
    """The keys the schema allows under ``section`` ('' = top level, 'algo', 'env', ...)."""
    import dataclasses

    from .config import Config

    cls = Config
    for part in filter(None, section.split(".")):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields or not isinstance(fields[part].default_factory, type):
            return []
        cls = fields[part].default_factory
    return sorted(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else []


def cli(argv: list[str]) -> int:
    """``python -m ppo_research``: Hydra's main, with expected failures as one line on stderr
    and an exit status (see the module docstring); bugs keep their traceback."""
    from .stops import TrainingInterrupted

    check_group_choices(argv)
    try:
        argv = resume_arguments(argv)
    except ConfigError as err:
        fail(str(err))
    user_full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # exceptions reach us instead of Hydra's multi-line printer
    sys.argv = [sys.argv[0], *argv]
    try:
        main()
    except RunFailed as err:  # already printed by main
        return err.status
    except TrainingInterrupted as err:
        print(f"{err}; continue with: python -m ppo_research resume={err.checkpoint.parent.parent}",
              file=sys.stderr, flush=True)
        return 128 + err.signum
    except KeyboardInterrupt:
        print("error: interrupted outside the training loop (before it started, or while closing): "
              "no checkpoint was written for this stop", file=sys.stderr, flush=True)
        return 128 + 2
    except Exception as err:
        if user_full_error:
            raise
        if isinstance(err, OSError) and err.errno in IO_ERRNOS:  # Hydra creating the output directory
            line = f"cannot write the output directory: {err.strerror}: {err.filename}"
        else:
            line = hydra_error_line(err, argv)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    finally:
        if user_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
    return 0
