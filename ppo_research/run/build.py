"""Build a run's parts from its composed config: checks first, then each part once, in order.

    config   typed settings (schema, types, ranges, the groups' constructor arguments)
    seed     python, numpy and torch seeded (run/seeds.py) before anything draws from them
    loss, advantage estimator, logger            (their own range checks run here)
    env spaces -> action-space settings -> network   (one env is made to read the spaces,
                                                      never reset)

Every check runs before a training env starts, so a bad value fails in one line at once. The
trainer then adds what needs live envs (the vector envs, the optimizer, the rollout path).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from ..algo.advantages import AdvantageEstimator
from ..algo.losses import PolicyLoss
from ..algo.networks import ActorCritic
from .config import Config, check_action_space_settings, construct, validate
from .envs import probe_spaces
from .loggers import RunLogger
from .seeds import seed_globals


@dataclass
class RunParts:
    """Everything a run is made of before its envs start."""

    config: Config  # typed settings
    resolved: dict  # the resolved config as plain data: what checkpoints and run.json hold
    choices: dict[str, str]  # the group options it was composed from
    loss: PolicyLoss
    estimator: AdvantageEstimator
    network: ActorCritic
    logger: RunLogger


def build(cfg: DictConfig, choices: dict[str, str] | None = None) -> RunParts:
    """Check ``cfg`` and build the run's parts; raises ConfigError naming the first bad value."""
    config = validate(cfg)
    torch.set_num_threads(config.torch_threads)
    seed_globals(config.seed)
    loss = construct(config.loss)  # the constructors' own range checks run here
    estimator = construct(config.advantage)
    logger = construct(config.logger)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    obs_space, action_space = probe_spaces(config.env)
    check_action_space_settings(config, resolved["network"], action_space)
    network = construct(config.network, obs_space=obs_space, action_space=action_space)
    return RunParts(config, resolved, dict(choices or {}), loss, estimator, network, logger)


def check(cfg: DictConfig) -> Config:
    """The same checks as ``build`` (the parts are built and dropped); returns the settings."""
    return build(cfg).config
