"""Config schemas and validation.

The top-level keys are typed dataclasses (one docstring line per field). Group nodes that
select an implementation with ``_target_`` (loss, advantage, network) are checked against the
constructor they name: unknown keys, wrong types and out-of-range values all fail here, before
any environment starts, with one line naming the key, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from gymnasium import spaces
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ...errors import ConfigError


def _in(lo=None, hi=None, lo_open=False, hi_open=False):
    """Range metadata for a numeric field."""
    return {"range": (lo, hi, lo_open, hi_open)}


@dataclass
class AlgoConfig:
    num_envs: int = field(default=1, metadata=_in(1))  # parallel environments N
    num_steps: int = field(default=2048, metadata=_in(1))  # rollout horizon T per env
    num_epochs: int = field(default=10, metadata=_in(1))  # K epochs over each batch
    minibatch_size: int = field(default=64, metadata=_in(1))  # samples per Adam step
    learning_rate: float = field(default=3e-4, metadata=_in(0, None, True))  # Adam step size
    anneal_lr: bool = False  # linearly decay the learning rate to 0 over the run
    adam_eps: float = field(default=1e-5, metadata=_in(0, None, True))  # Adam epsilon
    adam_beta1: float = field(default=0.9, metadata=_in(0, 1, False, True))  # Adam's first-moment decay (momentum)
    adam_beta2: float = field(default=0.999, metadata=_in(0, 1, False, True))  # Adam's second-moment decay
    max_grad_norm: Optional[float] = field(default=0.5, metadata=_in(0, None, True))  # global grad-norm clip; null = off
    vf_coef: float = field(default=0.5, metadata=_in(0))  # weight of the value loss
    ent_coef: float = field(default=0.0, metadata=_in(0))  # weight of the entropy bonus
    clip_value_loss: Optional[float] = field(default=None, metadata=_in(0, None, True))  # clip V around old V; null = off
    value_loss: str = field(default="mse", metadata={"choices": ("mse", "huber")})  # 0.5 (V - R)^2, or Huber with huber_delta
    huber_delta: float = field(default=1.0, metadata=_in(0, None, True))  # Huber: quadratic for |V - R| <= delta, linear beyond
    normalize_advantage: str = field(default="minibatch", metadata={"choices": ("off", "batch", "minibatch")})  # where advantages are standardised
    recompute_advantages: bool = False  # re-estimate advantages and targets with the current V at the start of each epoch after the first
    target_kl: Optional[float] = field(default=None, metadata=_in(0, None, True))  # stop the epochs before any minibatch whose k3 estimate of KL(pi_old || pi), taken on that minibatch before its step, exceeds 1.5 x target_kl; null = off
    fast_paths: bool = True  # where they apply: the hand-written gradient, the numpy rollout mirror, the compiled env bookkeeping (runs of 20,000+ steps per env); false = the plain path (autograd, the torch network, numpy bookkeeping)


@dataclass
class EnvConfig:
    id: str = "Pendulum-v1"  # gymnasium id
    backend: str = field(default="gymnasium", metadata={"choices": ("gymnasium", "envpool")})  # the training envs: gymnasium's, or EnvPool's C++ pool (the envpool extra; docs/extending.md); evaluation is gymnasium's
    vectorization: str = field(default="sync", metadata={"choices": ("sync", "async")})  # vector env kind (gymnasium backend; envpool takes sync)
    envpool_threads: int = field(default=1, metadata=_in(1, 1024))  # EnvPool's worker threads, at most num_envs used (backend=envpool only)
    normalize_obs: bool = False  # running mean/std observation normalisation
    normalize_reward: bool = False  # scale rewards by the std of the discounted return
    clip_obs: Optional[float] = field(default=10.0, metadata=_in(0, None, True))  # clip normalised obs; null = off
    clip_reward: Optional[float] = field(default=10.0, metadata=_in(0, None, True))  # clip scaled reward; null = off
    action_mode: str = field(default="clip", metadata={"choices": ("clip", "rescale", "none")})  # Box actions: clip to bounds, map [-1,1] to bounds, or pass through
    max_episode_steps: Optional[int] = field(default=None, metadata=_in(1))  # override the env's time limit
    kwargs: dict = field(default_factory=dict)  # passed to gymnasium.make
    preprocess: str = field(default="none", metadata={"choices": ("none", "atari")})  # atari: the standard Atari preprocessing, uint8 [4, 84, 84] frame stacks (run/envs/atari.py, the atari extra)
    episodic_life: bool = False  # a lost life is terminal for learning (no bootstrap past it); episodes stay whole games (env.preprocess=atari)
    sign_reward: bool = False  # learn from sign(reward) (Atari's reward clipping); logged episode returns stay raw


@dataclass
class EvalConfig:
    every: int = field(default=10, metadata=_in(0))  # evaluate every N iterations (0 = only at the end)
    episodes: int = field(default=10, metadata=_in(1, 100_000))  # episodes per evaluation (at most 100,000)
    deterministic: bool = True  # act with the policy's mode; false: sample (Discrete actions), e.g. Atari, where an argmax policy can stall a game


@dataclass
class CheckpointConfig:
    every: int = field(default=10, metadata=_in(0))  # checkpoint every N iterations (0 = only at the end)
    keep: int = field(default=3, metadata=_in(1))  # how many recent checkpoints to keep


@dataclass
class Config:
    seed: int = field(default=0, metadata=_in(0))  # any non-negative integer: the root of every random stream (run/loop/seeds.py)
    total_timesteps: int = field(default=200_000, metadata=_in(1))  # env steps to train for
    torch_threads: int = field(default=1, metadata=_in(1))  # torch intra-op threads
    device: str = field(default="auto", metadata={"choices": ("auto", "cpu", "cuda")})  # where the networks and the update run: auto = the GPU when torch sees one, else the CPU (docs/performance.md, "GPU")
    progress: bool = True  # print a progress line per iteration
    resume: Optional[str] = None  # run directory to resume in place
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # Groups selecting an implementation by _target_; after validation, {_target_, **typed kwargs}.
    loss: Any = None
    advantage: Any = None
    network: Any = None
    logger: Any = None


# ---------------------------------------------------------------------------------------------
# validation

def _check_type(key: str, value: Any, tp) -> Any:
    """Check ``value`` against annotation ``tp``; ints are accepted where floats belong."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _check_type(key, value, args[0])
    if tp is Any or tp is inspect.Parameter.empty:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, value, "an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, value, "a number")
        if not math.isfinite(value):
            raise ConfigError(key, value, "a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, value, "a string")
        return value
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple) or str(tp).startswith("typing.Sequence"):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, value, "a list")
        return list(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, value, "a mapping")
        return value
    return value


def _check_range(key: str, value: Any, meta: dict) -> None:
    if value is None:
        return
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(key, value, f"one of {', '.join(meta['choices'])}")
    if "range" in meta:
        lo, hi, lo_open, hi_open = meta["range"]
        if lo is not None and (value <= lo if lo_open else value < lo) or \
           hi is not None and (value >= hi if hi_open else value > hi):
            lo_s = "-inf" if lo is None else f"{lo}"
            hi_s = "inf" if hi is None else f"{hi}"
            raise ConfigError(key, value, f"a value in {'(' if lo_open or lo is None else '['}{lo_s}, "
                                          f"{hi_s}{')' if hi_open or hi is None else ']'}")


def _build_dataclass(cls, node: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in node:
        if key not in known:
            raise ConfigError(f"{prefix}{key}", node[key], f"a key of {prefix.rstrip('.') or 'the top level'}: "
                                                              f"{', '.join(sorted(known))}")
    values = {}
    for name, f in known.items():
        key = f"{prefix}{name}"
        if name not in node:
            continue
        value = node[name]
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(key, value, "a mapping")
            values[name] = _build_dataclass(tp, value, key + ".")
            continue
        if tp is Any:
            values[name] = value
            continue
        value = _check_type(key, value, tp)
        _check_range(key, value, f.metadata)
        values[name] = value
    return cls(**values)


def resolve_target(path: str, key: str):
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"{key}._target_", path, "an importable class") from None


def construct(node: dict, **runtime_kwargs):
    """Build the class a validated group node names (``validate`` typed its arguments)."""
    kwargs = {k: v for k, v in node.items() if k != "_target_"}
    return resolve_target(node["_target_"], "_target_")(**kwargs, **runtime_kwargs)


def check_target_kwargs(group: str, node: dict, skip: tuple[str, ...] = ()) -> dict:
    """Check a ``_target_`` node's keys and value types against the constructor's signature."""
    if not isinstance(node, dict) or "_target_" not in node:
        raise ConfigError(group, node, "a mapping with a _target_")
    cls = resolve_target(node["_target_"], group)
    sig = inspect.signature(cls)
    hints = typing.get_type_hints(cls.__init__)
    params = {n: p for n, p in sig.parameters.items() if n not in skip and n != "self"}
    kwargs = {}
    for key, value in node.items():
        if key == "_target_":
            continue
        if key not in params:
            raise ConfigError(f"{group}.{key}", value, f"a parameter of {cls.__name__}: {', '.join(params)}")
        kwargs[key] = _check_type(f"{group}.{key}", value, hints.get(key, Any))
    return kwargs


def validate(cfg: DictConfig) -> Config:
    """Check the composed config and return it as typed dataclasses (groups stay mappings).

    The groups' keys and value types are checked against the constructors they name; their
    own range checks run when ``build`` constructs them. Nothing here starts an environment.
    """
    try:
        node = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:  # e.g. an interpolation to a key that does not exist
        key = getattr(err, "full_key", None) or "config"
        raw = OmegaConf.to_container(cfg, resolve=False)
        for part in key.split("."):
            raw = raw.get(part) if isinstance(raw, dict) else None
        raise ConfigError(key, raw, f"a resolvable value ({str(err).strip().splitlines()[0]})") from None
    node.pop("hydra", None)
    config = _build_dataclass(Config, node, "")
    algo = config.algo
    batch = algo.num_envs * algo.num_steps
    if algo.minibatch_size > batch:
        raise ConfigError("algo.minibatch_size", algo.minibatch_size,
                          f"at most the batch size num_envs*num_steps={batch}")
    if batch % algo.minibatch_size:
        raise ConfigError("algo.minibatch_size", algo.minibatch_size,
                          f"a divisor of the batch size num_envs*num_steps={batch}")
    if config.env.backend == "envpool" and config.env.vectorization != "sync":
        raise ConfigError("env.vectorization", config.env.vectorization,
                          "sync with env.backend=envpool (EnvPool runs its envs in its own threads: env.envpool_threads)")
    for group in ("loss", "advantage", "logger", "network"):  # typed, ready to construct
        skip = ("obs_space", "action_space") if group == "network" else ()
        setattr(config, group, {"_target_": node[group]["_target_"], **check_target_kwargs(group, node[group], skip)})
    check_log_std_bounds(config.network)
    return config


def check_log_std_bounds(network: dict) -> None:
    """The log-std clamp must be an interval: with min > max every std is pinned to one value."""
    low, high = network.get("log_std_min"), network.get("log_std_max")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
        raise ConfigError("network.log_std_min", low, f"at most network.log_std_max={high}")


def check_action_space_settings(config: Config, network: dict, action_space) -> None:
    """Settings that only mean something for one kind of action space, checked against the env's.

    Continuous-only (Box): a state-dependent Gaussian std, a tanh-squashed policy, and
    ``env.action_mode=rescale`` (maps [-1, 1] onto the Box bounds). A tanh-squashed policy acts in
    (-1, 1), so on a Box whose bounds are not [-1, 1] it needs ``env.action_mode=rescale``.
    Discrete-only: sampled evaluation (``eval.deterministic=false``).
    """

    kind = type(action_space).__name__
    squash = network.get("squash", "none")
    if isinstance(action_space, spaces.Box) and squash == "tanh" and config.env.action_mode != "rescale" \
            and not (np.all(action_space.low == -1.0) and np.all(action_space.high == 1.0)):
        raise ConfigError("env.action_mode", config.env.action_mode,
                          f"rescale with network.squash=tanh on {config.env.id}, whose action bounds are not "
                          "[-1, 1] (tanh actions lie in (-1, 1))")
    if not config.eval.deterministic and not isinstance(action_space, spaces.Discrete):
        raise ConfigError("eval.deterministic", False, f"true for {config.env.id}, whose action space is {kind} "
                                                       "(sampled evaluation is for Discrete actions)")
    if isinstance(action_space, spaces.Discrete):
        if squash != "none":
            raise ConfigError("network.squash", squash,
                              f"none for {config.env.id}, whose action space is {kind} (a Gaussian-policy option)")
        if network.get("state_dependent_std"):
            raise ConfigError("network.state_dependent_std", network["state_dependent_std"],
                              f"false for {config.env.id}, whose action space is {kind} (a Gaussian-policy option)")
        if config.env.action_mode == "rescale":
            raise ConfigError("env.action_mode", config.env.action_mode,
                              f"clip or none for {config.env.id}, whose action space is {kind} "
                              "(rescale maps [-1, 1] onto Box bounds)")


def register_base_config() -> None:
    """Store the dataclass defaults as Hydra's ``base_config`` (a plain mapping, so Hydra does
    no type conversion of its own and ``validate`` gives every error in one line)."""

    defaults = OmegaConf.to_container(OmegaConf.structured(Config))
    ConfigStore.instance().store(name="base_config", node=defaults)
