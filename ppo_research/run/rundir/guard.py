"""What a command may write, decided before Hydra writes anything: a multirun into an existing
sweep directory is refused (one line per job directory) when a job directory is in use by a live
process, holds a run the multirun would start over, or is shared by two jobs; and a multirun whose
every job was refused leaves its sweep directory as it found it.

Hydra writes ``multirun.yaml`` and each job's ``.hydra/`` before a job's code runs, so the job
itself (``jobs.run_job``) would take the directory's lock too late: these checks run in the
command line (``app.cli``) first.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from ...errors import EXIT_BAD_INPUT
from ..config.compose import CONF_DIR, plan_multirun
from ..console import write_line
from . import owner


def restore_sweep_dir(invocation) -> None:
    """After a multirun that trained nothing (every job refused): put back the ``multirun.yaml``
    Hydra's sweeper wrote over (or remove the one it made), and the sweep directory if it made it.
    ``invocation``: the command's ``jobs.Invocation`` (the sweep directory as it was, each job's
    exit status, the directories that existed before)."""
    sweep_dir = invocation.sweep_dir
    statuses = invocation.job_statuses
    if sweep_dir is None or not statuses or any(status != EXIT_BAD_INPUT for status in statuses):
        return
    try:
        path = sweep_dir / "multirun.yaml"
        if invocation.multirun_yaml is not None:
            path.write_bytes(invocation.multirun_yaml)
        elif path.exists():
            path.unlink()
        while sweep_dir not in invocation.existed and sweep_dir != sweep_dir.parent and not any(sweep_dir.iterdir()):
            sweep_dir.rmdir()
            sweep_dir = sweep_dir.parent
    except OSError:
        pass


def explicit_dirs(argv: list[str], keys=("hydra.run.dir", "hydra.sweep.dir")) -> list[Path]:
    """Output directories given literally on the command line (no interpolation)."""
    found = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in keys and value and "${" not in value:
            found.append(Path(os.path.abspath(os.path.expanduser(value.strip("'\"")))))
    return found


def existing_dirs(argv: list[str]) -> set:
    """Directories a rejected command must never remove: the working directory and its
    parents, the explicit output directories' existing ancestors, ``outputs/`` and the date
    folders under it."""
    cwd = Path(os.getcwd())
    existed = {cwd, *cwd.parents}
    for path in explicit_dirs(argv):
        existed.update(p for p in (path, *path.parents) if p.is_dir())
    for base in (cwd / "outputs", cwd / "outputs" / "multirun"):
        if base.is_dir():
            existed.add(base)
            try:
                existed.update(p for p in base.iterdir() if p.is_dir())
            except OSError:
                pass
    return existed


POPULATION_LAUNCHERS = ("hydra_plugins.ppo_research_population.launcher.PopulationLauncher",
                        "hydra_plugins.ppo_research_population.slurm.PopulationSlurmLauncher")  # (both take resume)


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
    resuming = launcher.get("_target_") in POPULATION_LAUNCHERS and launcher.get("resume") is True
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


def refuse_taken_job_dirs(argv: list[str], invocation) -> None:
    """A multirun into an existing sweep directory is checked before Hydra writes anything there
    (``multirun.yaml``, each job's ``.hydra/``): a job directory in use by a live process, one
    holding a run this multirun would start over (not continued with the population launcher's
    ``hydra.launcher.resume=true``), or two jobs sharing one directory refuse the whole command,
    one line each, exit status 2. ``invocation`` (the command's ``jobs.Invocation``) keeps the sweep
    directory and its ``multirun.yaml`` as they were, for ``restore_sweep_dir``."""
    planned = multirun_job_dirs(argv)
    if planned is None:
        return
    dirs, resuming, sweep_dir = planned
    invocation.sweep_dir = sweep_dir
    try:
        invocation.multirun_yaml = (sweep_dir / "multirun.yaml").read_bytes()
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
