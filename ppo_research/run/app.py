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

import dataclasses
import errno
import inspect
import os
import re
import signal
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra import initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException, InstantiationException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from ..errors import EXIT_BAD_INPUT, ConfigError, RunDirError
from . import jobs
from .config.compose import CONF_DIR, GROUPS, check_group_choices, plan_multirun
from .config.schema import Config
from .console import write_line
from .jobs import (
    EXIT_BUG,
    IO_ERRNOS,
    Invocation,
    RunFailed,
    bug_line,
    fail,
    fail_job,
    job_ended,
    log_bug,
    output_dir_line,
    run_job,
)
from .rundir import owner
from .rundir.resume import resume_arguments, resume_target
from .signals.stops import TrainingInterrupted

#: ... and, while Hydra makes the output directory, also these (a dangling symlink, /proc/x).
OUTPUT_DIR_ERRNOS = IO_ERRNOS | {errno.ENOENT, errno.EEXIST, errno.ELOOP, errno.EINVAL}


def _restore_sweep_dir() -> None:
    """After a multirun that trained nothing (every job refused): put back the ``multirun.yaml``
    Hydra's sweeper wrote over (or remove the one it made), and the sweep directory if it made it."""
    sweep_dir = jobs.invocation.sweep_dir
    statuses = jobs.invocation.job_statuses
    if sweep_dir is None or not statuses or any(status != EXIT_BAD_INPUT for status in statuses):
        return
    try:
        path = sweep_dir / "multirun.yaml"
        if jobs.invocation.multirun_yaml is not None:
            path.write_bytes(jobs.invocation.multirun_yaml)
        elif path.exists():
            path.unlink()
        while sweep_dir not in jobs.invocation.existed and sweep_dir != sweep_dir.parent and not any(sweep_dir.iterdir()):
            sweep_dir.rmdir()
            sweep_dir = sweep_dir.parent
    except OSError:
        pass


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

def hydra_error_line(err: BaseException, argv: list[str]) -> Optional[str]:
    """One line for Hydra's and OmegaConf's errors about the command line; None for anything
    else (a bug: reported with a pointer to its traceback)."""

    def first(e) -> str:
        text = str(getattr(e, "msg", None) or e).strip()
        return text.splitlines()[0] if text else type(e).__name__

    if isinstance(err, InstantiationException):  # e.g. +hydra.launcher.<typo>=1
        return _instantiation_line(err, argv)
    if isinstance(err, OverrideParseException):
        return f"cannot parse the override {err.override!r}: {first(err.message)}"
    if isinstance(err, MissingConfigException) and err.options:
        return f"{first(err).rstrip('.')}: expected one of {', '.join(err.options)}"
    cause = err.__cause__
    if isinstance(err, CompactHydraException) and isinstance(cause, (ConfigKeyError, ConfigAttributeError)) \
            and cause.full_key:  # an override of a key that does not exist (a typo)
        key = cause.full_key
        value = next((a.partition("=")[2] for a in argv if a.lstrip("+~").partition("=")[0] == key), None)
        section = key.rpartition(".")[0]
        known = valid_keys(section, argv)
        expected = f"a key of {section or 'the top level'}: {', '.join(known)}" if known else \
            f"an existing key ({first(cause)})"
        return f"{key}={value!r} is invalid: expected {expected}"
    if isinstance(err, CompactHydraException):
        parts = [first(err)] + ([first(cause)] if isinstance(cause, OmegaConfBaseException) else [])
        return "; ".join(p.rstrip(".") for p in parts)
    if isinstance(err, OmegaConfBaseException):
        return f"{getattr(err, 'full_key', '') or 'config'}: {first(err)}"
    if isinstance(err, ValueError) and str(err).startswith("Only one of --run, --multirun"):
        return f"{first(err)} (e.g. -m with --cfg: print a job's config with --cfg job and no -m)"
    return None


def _instantiation_line(err: BaseException, argv: list[str]) -> str:
    """Hydra could not build a plugin from its config (a launcher, a sweeper): the key at fault
    and what the plugin takes, or Hydra's message and its cause in one line."""

    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    full_key = next((line.partition(":")[2].strip() for line in lines if line.startswith("full_key:")), "")
    target = re.search(r"target '([\w.]+)'", lines[0]) if lines else None
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(err.__cause__ or ""))
    if unexpected and full_key and target:
        key = f"{full_key}.{unexpected[1]}"
        value = next((a.partition("=")[2] for a in argv if a.lstrip("+~").partition("=")[0] == key), None)
        try:

            taken = [name for name in inspect.signature(get_class(target[1])).parameters if name != "self"]
        except Exception:  # noqa: BLE001 - the key is still named
            taken = []
        expected = f"a key of {full_key}: {', '.join(taken)}" if taken else \
            f"no such key ({target[1].rpartition('.')[2]} takes no options)"
        return f"{key}={value!r} is invalid: expected {expected}"
    return " ".join(line for line in lines if not line.startswith("full_key:"))


def valid_keys(section: str, argv: list[str] = ()) -> list[str]:
    """The keys allowed under ``section`` ('' = top level, 'algo', 'loss', 'network', ...): the
    schema's for typed sections, the chosen group option's for groups."""


    root = section.split(".")[0]
    if root in GROUPS:
        return _group_keys(section, argv)
    cls = Config
    for part in filter(None, section.split(".")):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields or not isinstance(fields[part].default_factory, type):
            return []
        cls = fields[part].default_factory
    return sorted(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else []


def _group_keys(section: str, argv: list[str]) -> list[str]:
    """Keys of the group option the command line selects (or the default), under ``section``."""
    group, _, rest = section.partition(".")
    option = next((a.partition("=")[2] for a in reversed(list(argv)) if a.lstrip("+").partition("=")[0] == group),
                  None)
    if option is None:
        defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml")).get("defaults", [])
        option = next((d[group] for d in defaults if isinstance(d, dict) and group in d), None)
    if not option or option == "null":
        return []
    try:
        node = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{option}.yaml"))
    except Exception:
        return []
    for part in filter(None, rest.split(".")):
        node = node.get(part) if isinstance(node, dict) else None
    return sorted(k for k in node if k != "_target_" and k != "defaults") if isinstance(node, dict) else []


def _explicit_dirs(argv: list[str], keys=("hydra.run.dir", "hydra.sweep.dir")) -> list[Path]:
    """Output directories given literally on the command line (no interpolation)."""
    found = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in keys and value and "${" not in value:
            found.append(Path(os.path.abspath(os.path.expanduser(value.strip("'\"")))))
    return found


def _existing_dirs(argv: list[str]) -> set:
    """Directories a rejected command must never remove: the working directory and its
    parents, the explicit output directories' existing ancestors, ``outputs/`` and the date
    folders under it."""
    cwd = Path(os.getcwd())
    existed = {cwd, *cwd.parents}
    for path in _explicit_dirs(argv):
        existed.update(p for p in (path, *path.parents) if p.is_dir())
    for base in (cwd / "outputs", cwd / "outputs" / "multirun"):
        if base.is_dir():
            existed.add(base)
            try:
                existed.update(p for p in base.iterdir() if p.is_dir())
            except OSError:
                pass
    return existed


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
        jobs.invocation.existed = _existing_dirs(argv)
        # An existing directory is taken before Hydra writes its .hydra/ into it: a live run's
        # files stay its own, and a fresh run does not overwrite a finished one's.
        if multirun and not _runs_nothing(argv):
            refuse_taken_job_dirs(argv)  # likewise every job directory of a multirun, before multirun.yaml
        explicit = [] if multirun else _explicit_dirs(argv, ("hydra.run.dir",))
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
        _restore_sweep_dir()
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


POPULATION_LAUNCHER = "hydra_plugins.ppo_research_population.launcher.PopulationLauncher"


def multirun_job_dirs(argv: list[str]) -> Optional[tuple[list[Path], bool, Path]]:
    """(the output directory of each job of the multirun ``argv`` launches, in job order; whether
    the launcher continues the runs it finds there: the population launcher's
    ``hydra.launcher.resume=true``; the sweep directory), or None where it cannot be told before Hydra runs (other
    Hydra flags, a sweeper other than the basic grid, a bad override: Hydra reports that)."""


    overrides = [a for a in argv if a not in ("-m", "--multirun")]
    if any(a.startswith("-") for a in overrides):
        return None
    try:
        jobs, hydra_node = plan_multirun(overrides)
        sweep_dir = Path(str(OmegaConf.select(hydra_node, "sweep.dir"))).expanduser().absolute()
        subdir = OmegaConf.to_container(hydra_node.sweep, resolve=False)["subdir"]
        launcher = OmegaConf.to_container(hydra_node.launcher, resolve=True)
    except Exception:  # noqa: BLE001 - Hydra says what is wrong, in its own line, when it runs
        return None
    resuming = launcher.get("_target_") == POPULATION_LAUNCHER and launcher.get("resume") is True
    if subdir == "${hydra.job.num}":  # the default: no job needs composing
        return [sweep_dir / str(idx) for idx in range(len(jobs))], resuming, sweep_dir
    dirs = []  # another subdir: each job's, composed as the launcher will (two jobs may share one)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="ppo_research"):
            hydra = GlobalHydra.instance().hydra

            master = hydra.compose_config("config", overrides, run_mode=RunMode.MULTIRUN,
                                          with_log_configuration=False)
            for idx, job in enumerate(jobs):
                config = hydra.config_loader.load_sweep_config(master, job)
                with open_dict(config):
                    config.hydra.job.num = config.hydra.job.id = idx
                dirs.append(sweep_dir / str(OmegaConf.select(config, "hydra.sweep.subdir")))
    except Exception:  # noqa: BLE001 - (as above)
        return None
    return dirs, resuming, sweep_dir


def refuse_taken_job_dirs(argv: list[str]) -> None:
    """A multirun into an existing sweep directory is checked before Hydra writes anything there
    (``multirun.yaml``, each job's ``.hydra/``): a job directory in use by a live process, one
    holding a run this multirun would start over (not continued with the population launcher's
    ``hydra.launcher.resume=true``), or two jobs sharing one directory refuse the whole command,
    one line each, exit status 2."""
    planned = multirun_job_dirs(argv)
    if planned is None:
        return
    dirs, resuming, sweep_dir = planned
    jobs.invocation.sweep_dir = sweep_dir
    try:
        jobs.invocation.multirun_yaml = (sweep_dir / "multirun.yaml").read_bytes()
    except OSError:
        pass
    lines, first_job = [], {}
    for idx, run_dir in enumerate(dirs):
        if run_dir in first_job:
            lines.append(f"error: output directory {run_dir} is jobs {first_job[run_dir]}' and {idx}'s: one run "
                         f"directory has one writer; make hydra.sweep.subdir differ between jobs")
            continue
        first_job[run_dir] = idx
        if not run_dir.is_dir():
            continue
        refusal = owner.busy(run_dir)
        if refusal is not None:
            lines.append(f"error: {refusal}")
            continue
        found = owner.holds_a_run(run_dir)
        if found and not resuming:
            lines.append(f"error: output directory {run_dir} already holds a run ({', '.join(found)}): continue it "
                         f"with resume={run_dir} (a multirun: hydra/launcher=population hydra.launcher.resume=true), "
                         f"or choose another hydra.sweep.dir")
    if lines:
        for line in lines:
            write_line(line)
        sys.exit(EXIT_BAD_INPUT)


def check_arguments(argv: list[str]) -> None:
    """Hydra's flags, read by Hydra's own parser: an unknown flag or a bad flag value is one line
    and a pointer to --help (argparse would print its whole usage)."""

    parser = get_args_parser()

    def one_line(message: str) -> None:
        fail(f"{message} (see python -m ppo_research --help)")

    parser.error = one_line
    parser.parse_args(argv)


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
