"""Populations: several runs of one config, differing only in their seed and a declared set of
scalar hyperparameters, trained in one process (docs/populations.md).

PLACEHOLDER API (the lead is writing the batched trainer behind it): ``train_members`` runs the
members one after the other through the solo path today; its signature and results stay.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from omegaconf import DictConfig, OmegaConf

#: The config keys in which the members of one population may differ.
MEMBER_KEYS = ("seed", "loss.epsilon", "loss.beta", "loss.kl_target", "advantage.lam", "advantage.gamma",
               "algo.learning_rate", "algo.ent_coef")


@dataclass
class MemberJob:
    """One member: what ``train.train_from_config`` takes for a solo run."""

    cfg: DictConfig
    run_dir: Path
    choices: dict
    overrides: Sequence[str] = ()
    resume_from: Optional[Path] = None  # a checkpoint of this member (all members resume together)
    on_evaluation: Optional[Callable[[int, int, float], None]] = None  # may raise to stop this member only


def group_key(cfg: DictConfig) -> str:
    """Jobs whose configs are equal outside ``MEMBER_KEYS`` share a key: they can be one population."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    for key in MEMBER_KEYS:
        node, *rest = key.split(".")
        holder = data
        for part in key.split(".")[:-1]:
            holder = holder.get(part, {}) if isinstance(holder, dict) else {}
        if isinstance(holder, dict):
            holder.pop(key.split(".")[-1], None)
    return json.dumps(data, sort_keys=True, default=str)


def train_members(jobs: Sequence[MemberJob]) -> list[Union[dict, BaseException]]:
    """Train ``jobs`` as one population; per job its summary, or the exception that ended it
    (ConfigError, RunDirError, CheckpointError, NonFiniteError, an ``on_evaluation`` exception).
    A TrainingInterrupted (SIGINT/SIGTERM) stops all members after their checkpoints and is raised."""
    from .stops import TrainingInterrupted
    from .train import train_from_config

    results: list[Union[dict, BaseException]] = []
    for job in jobs:
        try:
            results.append(train_from_config(job.cfg, job.run_dir, job.choices, on_evaluation=job.on_evaluation,
                                             resume_from=job.resume_from, overrides=job.overrides))
        except TrainingInterrupted:
            raise
        except Exception as err:  # noqa: BLE001 - a member's failure is its result
            results.append(err)
    return results
