"""Resume in place: find a run's checkpoint and the config to continue it with.

A resume continues the run it names; the checkpoint's config is the one that counts, and the
command line may change only what does not alter the run's maths (RESUME_MAY_CHANGE).
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from ..errors import CheckpointError, ConfigError
from . import checkpoint
from .compose import GROUPS

#: What a resume may change: the rest of the config is the checkpoint's, so the continuation
#: stays the run it was. ``logger`` covers the group and its keys (tracking, not training).
RESUME_MAY_CHANGE = ("total_timesteps", "progress", "logger")


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


def resume_arguments(argv: list[str]) -> list[str]:
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
