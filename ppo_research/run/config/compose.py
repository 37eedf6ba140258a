"""Compose a run's config from command-line overrides: the one place that asks Hydra to.

``python -m ppo_research`` composes through ``@hydra.main``; everything else (the sweep driver,
the paper planner, the benchmark, the tests) composes here, so every entry point sees the very
config the command line would.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from ...errors import EXIT_BAD_INPUT
from ..console import write_line
from .schema import register_base_config

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"
#: The config groups a run is composed of; their choices name a run and describe it.
GROUPS = ("env", "network", "loss", "advantage", "logger", "experiment", "paper_setting")
#: ... of which these cannot be left out (``loss=null``)
REQUIRED_GROUPS = ("env", "network", "loss", "advantage", "logger")
register_base_config()


@dataclass
class Composed:
    """A composed config (Hydra's own node removed) and the group options chosen for it."""

    cfg: DictConfig
    choices: dict[str, str]


def extra_config_dirs(argv: Sequence[str]) -> list[Path]:
    """Config folders the command line adds to ours: ``hydra.searchpath=[file://...]`` and
    ``--config-dir``/``-cd`` (where a user keeps options of their own, e.g. conf/loss/mine.yaml)."""
    found = []
    for i, arg in enumerate(argv):
        key, _, value = arg.partition("=")
        if key.lstrip("+") == "hydra.searchpath":
            found += [v.strip(" '\"") for v in value.strip("[]").split(",") if v.strip()]
        elif key in ("--config-dir", "-cd"):
            found.append(value if value else (argv[i + 1] if i + 1 < len(argv) else ""))
    dirs = []
    for entry in found:
        if entry.startswith("pkg://") or not entry:
            continue
        dirs.append(Path(entry[len("file://"):] if entry.startswith("file://") else entry).expanduser())
    return dirs


def group_options(group: str, extra: Sequence[Path] = ()) -> list[str]:
    """The options of config group ``group``: ours, and those of the ``extra`` config folders."""
    return sorted({p.stem for folder in (CONF_DIR, *extra) for p in (Path(folder) / group).glob("*.yaml")})


def choices_of(runtime_choices) -> dict[str, str]:
    """The run's group choices out of Hydra's ``runtime.choices`` (which also lists hydra/*)."""
    return {k: v for k, v in runtime_choices.items() if k in GROUPS and v is not None}


def check_group_choices(argv: Sequence[str]) -> None:
    """Reject ``loss=klpn`` before Hydra composes, naming the valid options."""
    extra = extra_config_dirs(argv)
    for arg in argv:
        if "=" not in arg or arg.startswith(("hydra", "-")):
            continue
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        if key in REQUIRED_GROUPS and value in ("", "null"):
            shown = value or "''"
            write_line(f"error: {key}={shown} is invalid: expected one of {', '.join(group_options(key, extra))} "
                  f"(every run needs a {key})")
            sys.exit(EXIT_BAD_INPUT)
        if key in GROUPS and value not in ("", "null"):
            options = group_options(key, extra)
            for choice in value.split(","):
                if choice not in options:
                    write_line(f"error: {key}={choice!r} is not an option of group '{key}': expected one of "
                          f"{', '.join(options)}")
                    sys.exit(EXIT_BAD_INPUT)


def compose(overrides: Sequence[str] = ()) -> Composed:
    """The config ``python -m ppo_research <overrides>`` would run with."""

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="ppo_research"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    choices = choices_of(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return Composed(cfg, choices)


def expand_multirun(overrides: Sequence[str]) -> list[list[str]]:
    """The jobs ``python -m ppo_research -m <overrides>`` would launch, each as its overrides, in
    the basic sweeper's order (an experiment's ``hydra.sweeper.params`` first, the command line's
    sweeps replacing the same keys). Nothing is launched."""
    return plan_multirun(overrides)[0]


def plan_multirun(overrides: Sequence[str]) -> tuple[list[list[str]], DictConfig]:
    """(the jobs, as ``expand_multirun`` lists them; the multirun's Hydra node: sweep dir, subdir,
    launcher). Nothing is launched or written.

    Hydra has no public API for this expansion; this adapter is the one place that uses its
    internals (the basic sweeper's argument splitting and the MULTIRUN compose that accepts
    sweep syntax), so a Hydra upgrade that moves them breaks only here.
    """

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="ppo_research"):
        hydra = GlobalHydra.instance().hydra
        cfg = hydra.compose_config("config", list(overrides), run_mode=RunMode.MULTIRUN,
                                   with_log_configuration=False)
        sweeper = cfg.hydra.sweeper
        if sweeper.get("_target_") != f"{BasicSweeper.__module__}.{BasicSweeper.__name__}":
            raise ValueError(f"only the basic sweeper's grid can be listed; hydra/sweeper is {sweeper.get('_target_')}")
        arguments = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
        arguments += OmegaConf.to_container(cfg.hydra.overrides.task)
        parsed = OverridesParser.create(config_loader=hydra.config_loader).parse_overrides(arguments)
        (batch,) = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for job in batch], cfg.hydra
