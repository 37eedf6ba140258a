"""The Hydra application: compose, validate, train, and report errors in one line.

``train_from_config`` raises (the sweep driver calls it per trial and records failures);
only the command line (``main`` and ``cli``) turns failures into one line on stderr and an exit
status (docs/reliability.md):

    0    finished                          3    training diverged (NaN/Inf); last good checkpoint kept
    1    a bug: the traceback is printed   4    I/O error while training (disk full, ...)
    2    bad input, rejected before        130  stopped by SIGINT after a checkpoint
         training (config, resume, output  143  stopped by SIGTERM after a checkpoint
         directory, checkpoint)                 (128 + N for signal N)
"""
from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from . import checkpoint
from .checkpoint import CheckpointError
from .config import ConfigError, check_action_space_settings, register_base_config, validate

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
GROUPS = ("env", "network", "loss", "advantage", "logger", "experiment", "paper_setting")
register_base_config()

EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_IO = 2, 3, 4
#: What a resume may change: the rest of the config is the checkpoint's, so the continuation
#: stays the run it was. ``logger`` covers the group and its keys (tracking, not training).
RESUME_MAY_CHANGE = ("total_timesteps", "progress", "logger")
#: OSError numbers that mean "the disk or the directory", not a bug.
IO_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOTDIR,
             errno.EISDIR, errno.ENAMETOOLONG}


class RunDirError(ValueError):
    """The output directory cannot hold the run; ``str()`` is a single line."""


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


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_group_choices(argv: list[str]) -> None:
    """Reject ``loss=klpn`` before Hydra composes, naming the valid options."""
    for arg in argv:
        if "=" not in arg or arg.startswith(("hydra", "-")):
            continue
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        if key in GROUPS and value not in ("", "null"):
            options = group_options(key)
            for choice in value.split(","):
                if choice not in options:
                    fail(f"{key}={choice!r} is not an option of group '{key}': expected one of {', '.join(options)}")


# ---------------------------------------------------------------------------------------------
# checks before training

def check_run_dir(run_dir: Path) -> None:
    """The run directory and its checkpoints/ must take a file: found out now, not at the first
    checkpoint an hour in."""
    probe_dir = checkpoint.checkpoint_dir(run_dir)
    try:
        probe_dir.mkdir(parents=True, exist_ok=True)
        probe = probe_dir / f".write_probe_{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as err:
        raise RunDirError(f"output directory {run_dir} is not writable: {err.strerror or err}"
                          f"{f' ({err.filename})' if err.filename else ''}") from None


def check_free_space(run_dir: Path, trainer) -> None:
    """Room for ``keep`` + 1 checkpoints (one is written before the oldest is pruned) plus 1 MB
    of metrics; measured from this run's checkpoint, plus Adam's two moments per parameter,
    which a fresh optimizer has not allocated yet."""
    moments = 2 * sum(p.numel() * p.element_size() for p in trainer.policy.parameters())
    size = checkpoint.serialized_size(trainer.state_dict()) + moments
    need = size * (trainer.cfg.checkpoint.keep + 1) + 2**20
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise RunDirError(f"output directory {run_dir} has {free / 2**20:.1f} MB free; this run needs about "
                          f"{need / 2**20:.1f} MB (checkpoints of {size / 2**10:.0f} KB, "
                          f"checkpoint.keep={trainer.cfg.checkpoint.keep})")


def check_env(config, cfg: DictConfig) -> None:
    """Build one env (no reset) to read its spaces: an unknown id, or a setting that does not
    apply to its action space, fails before the training envs start."""
    from .envs import make_env

    probe = make_env(config.env)
    try:
        check_action_space_settings(config, OmegaConf.to_container(cfg.network, resolve=True), probe.action_space)
    finally:
        probe.close()


# ---------------------------------------------------------------------------------------------
# training

def train_from_config(cfg: DictConfig, run_dir: Path, choices: dict[str, str],
                      on_evaluation: Optional[Callable[[int, int, float], None]] = None,
                      resume_from: Optional[Path] = None) -> dict:
    """Validate ``cfg``, train in ``run_dir`` and return the summary. Usable without Hydra's
    runtime (the sweep driver calls it per trial with an ``on_evaluation`` pruning hook).

    ``resume_from``: a checkpoint of this run to continue from (rows of ``metrics.jsonl`` past
    it are dropped first). Failures raise: ConfigError, RunDirError, CheckpointError before
    training; NonFiniteError, TrainingInterrupted (a KeyboardInterrupt) during it.
    """
    from .trainer import Trainer, TrainingInterrupted  # imported here so `--help` and config errors stay fast

    config = validate(cfg)
    run_dir = Path(run_dir)
    check_env(config, cfg)
    check_run_dir(run_dir)
    state = checkpoint.load(resume_from) if resume_from is not None else None
    logger = instantiate(cfg.logger)
    trainer = Trainer(config, cfg, run_dir, logger, choices, on_evaluation=on_evaluation)
    exit_code = 1
    try:
        check_free_space(run_dir, trainer)
        # The tracker starts before the state (RNGs included) is restored, as in a fresh run, so
        # whatever it does at start-up cannot shift a resumed run off the uninterrupted one.
        logger.start(run_dir, trainer.config_dict, choices,
                     resume_id=state.get("logger_run_id") if state is not None else None)
        if state is not None:
            resume_trainer(trainer, state, resume_from)
        with trainer.stop_on_signals():
            summary = trainer.train()
        exit_code = 0
        return summary
    except TrainingInterrupted as err:
        exit_code = 128 + err.signum
        raise
    finally:
        trainer.close()
        logger.finish(exit_code)


def resume_trainer(trainer, state: dict, path: Path) -> None:
    try:
        exact = trainer.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError, TypeError) as err:  # e.g. a network of another size
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} does not fit this run's config: {first}") from None
    dropped = checkpoint.truncate_metrics(trainer.run_dir / "metrics.jsonl", trainer.iteration)
    print(f"resuming {trainer.run_dir} from iteration {trainer.iteration} (global step {trainer.global_step}); "
          f"{dropped} metrics row(s) past the checkpoint dropped", file=sys.stderr, flush=True)
    if not exact:
        print(f"warning: the envs of {trainer.cfg.env.id} ({trainer.cfg.env.vectorization}) cannot be restored "
              "exactly; they restart with fresh episodes, so the continuation is correct but not bit-identical "
              "to an uninterrupted run", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# resume

def resume_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint of ``run_dir``, or a one-line ConfigError saying what is wrong."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ConfigError("resume", str(run_dir), "an existing run directory (no such directory)")
    if not run_dir.is_dir():
        raise ConfigError("resume", str(run_dir), "a run directory (this is a file)")
    path = checkpoint.latest(run_dir)
    if path is None:
        raise ConfigError("resume", str(run_dir), "a ppo_research run directory holding checkpoints/ckpt_*.pt "
                                                  "(none found)")
    return path


def resume_config(composed: DictConfig, run_dir: Path, overrides: list[str],
                  composed_choices: dict[str, str]) -> tuple[DictConfig, dict[str, str], Path]:
    """The config to continue ``run_dir`` with: the checkpoint's resolved config, with the
    command line's overrides of RESUME_MAY_CHANGE applied. Any other override must agree with
    the run being resumed; one that does not is an error, not silently ignored."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = resume_checkpoint(run_dir)
    state = checkpoint.load(path)
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("choices"), dict):
        raise CheckpointError(f"{path} holds no run config")
    saved = OmegaConf.create(state["config"])
    choices = dict(state["choices"])
    may_change = ", ".join(RESUME_MAY_CHANGE)
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        root = key.split(".")[0].split("/")[0]
        if root in ("resume", "hydra"):
            continue
        if root == "logger":
            with open_dict(saved):
                saved.logger = composed.logger
            if "logger" in composed_choices:
                choices["logger"] = composed_choices["logger"]
        elif root in RESUME_MAY_CHANGE:
            OmegaConf.update(saved, key, OmegaConf.select(composed, key), force_add=True)
        elif key in GROUPS:
            if composed_choices.get(key) != choices.get(key):
                raise ConfigError(key, composed_choices.get(key), f"{choices.get(key)!r} as in the run being resumed "
                                                                  f"(a resume may change only {may_change})")
        else:
            new, old = OmegaConf.select(composed, key, default=None), OmegaConf.select(saved, key, default=None)
            if isinstance(new, DictConfig) or isinstance(old, DictConfig) or new != old:
                raise ConfigError(key, new, f"{old!r} as in the run being resumed (a resume may change only "
                                            f"{may_change})")
    done = int(state.get("global_step", 0))
    if saved.total_timesteps < done:
        raise ConfigError("total_timesteps", saved.total_timesteps,
                          f"at least {done}, the steps the run being resumed has already done")
    with open_dict(saved):
        saved.resume = str(run_dir)
    return saved, choices, path


# ---------------------------------------------------------------------------------------------
# command line

def hydra_choices() -> dict[str, str]:
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if k in GROUPS and v is not None}


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
    from .trainer import NonFiniteError

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        if cfg.get("resume"):
            cfg, choices, path = resume_config(cfg, Path(cfg.resume), list(hydra_cfg.overrides.task), hydra_choices())
            summary = train_from_config(cfg, run_dir, choices, resume_from=path)
        else:
            summary = train_from_config(cfg, run_dir, hydra_choices())
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


def _resume_arguments(argv: list[str]) -> list[str]:
    """``resume=<run dir>`` continues in place: Hydra's run dir becomes that directory and it
    does not rewrite the run's .hydra/ (the checkpoint's config is the one that counts)."""
    resume = [a for a in argv if a.startswith("resume=") and a not in ("resume=", "resume=null")]
    if not resume:
        return argv
    if any(a in ("-m", "--multirun") for a in argv):
        raise ConfigError("resume", resume[-1].partition("=")[2], "a single run, not combined with --multirun")
    run_dir = Path(resume[-1].partition("=")[2]).expanduser().resolve()
    resume_checkpoint(run_dir)  # missing or foreign directory: fail before Hydra creates anything
    quoted = "'" + str(run_dir).replace("\\", "\\\\").replace("'", "\\'") + "'"
    return [a for a in argv if not a.startswith("resume=")] + [
        f"resume={quoted}", f"hydra.run.dir={quoted}", "hydra.output_subdir=null"]


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
    from .trainer import TrainingInterrupted

    check_group_choices(argv)
    try:
        argv = _resume_arguments(argv)
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
