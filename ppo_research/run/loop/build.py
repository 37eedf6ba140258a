"""Build a run's parts from its composed config: checks first, then each part once, in order.

    groups   each of loss/advantage/network/logger names an importable, concrete class of its
             kind (``loss=null`` or ``loss._target_=builtins.dict`` is refused here)
    config   typed settings (schema, types, ranges, the groups' constructor arguments)
    seed     python, numpy and torch seeded (run/loop/seeds.py) before anything draws from them
    loss, advantage estimator, logger            (their own range checks run here)
    env      one env is made, reset and stepped once with a sampled action: an env that cannot
             be made (missing module or dependency, bad keyword) or fails on its first step
             fails here; its spaces must be ones the framework handles (with env.backend=envpool,
             EnvPool must be installed and have the env, with these spaces and settings)
    action-space settings -> memory -> network

Every check runs before a training env starts, so a bad value fails in one line at once. The
trainer then adds what needs live envs (the vector envs, the optimizer, the rollout path).
"""
from __future__ import annotations

import importlib
import inspect
import math
import secrets
from dataclasses import dataclass, field
from typing import Any

import torch
from gymnasium import spaces
from omegaconf import DictConfig, OmegaConf

from ...algo.advantages import AdvantageEstimator
from ...algo.losses import PolicyLoss
from ...algo.networks import ActorCritic
from ...errors import ConfigError, first_line
from ..config.compose import CONF_DIR, group_options
from ..config.schema import Config, check_action_space_settings, construct, validate
from ..envs.atari import is_image
from ..envs.training import make_env
from ..loggers.base import RunLogger
from .seeds import seed_globals

#: Each group's interface; ``_target_`` must name a concrete class implementing it.
GROUP_INTERFACES = {"loss": PolicyLoss, "advantage": AdvantageEstimator, "network": ActorCritic,
                    "logger": RunLogger}
MAX_TORCH_THREADS = 1024  # torch overflows or aborts (libgomp) somewhere above


def new_run_id() -> str:
    """A run's identity: random, written into run.json and every checkpoint at the run's start."""
    return secrets.token_hex(8)


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
    obs_space: spaces.Space  # the env's (probed once)
    action_space: spaces.Space
    run_id: str = field(default_factory=new_run_id)  # a resume sets the resumed run's


def build(cfg: DictConfig, choices: dict[str, str] | None = None) -> RunParts:
    """Check ``cfg`` and build the run's parts; raises ConfigError naming the first bad value."""
    check_group_targets(cfg)
    config = validate(cfg)
    if config.torch_threads > MAX_TORCH_THREADS:
        raise ConfigError("torch_threads", config.torch_threads, f"at most {MAX_TORCH_THREADS}")
    torch.set_num_threads(config.torch_threads)
    device = resolve_device(config.device)
    seed_globals(config.seed)
    loss = _construct("loss", config.loss)  # the constructors' own range checks run here
    estimator = _construct("advantage", config.advantage)
    logger = _construct("logger", config.logger)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    obs_space, action_space = probe_env(config.env)
    check_observations(config, _import(config.network["_target_"]), obs_space)
    check_action_space_settings(config, resolved["network"], action_space)
    check_memory(config, resolved["network"], obs_space, action_space)
    check_float32("network", config.network)
    check_float32("algo", vars(config.algo))  # e.g. clip_value_loss=1e308 overflowed inside torch
    network = _construct("network", config.network, obs_space=obs_space, action_space=action_space)
    network.to(device)  # initialised on the CPU first: the same initial weights on every device
    return RunParts(config, resolved, dict(choices or {}), loss, estimator, network, logger, obs_space, action_space)


def resolve_device(setting: str) -> torch.device:
    """``device``: auto is the GPU when torch sees one, else the CPU; cuda without a GPU is refused."""
    available = torch.cuda.is_available()
    if setting == "cuda" and not available:
        why = "a CPU-only build" if torch.version.cuda is None else "torch.cuda.is_available() is False"
        raise ConfigError("device", "cuda", f"cpu or auto: torch {torch.__version__} sees no GPU here ({why})")
    return torch.device("cuda" if setting == "cuda" or (setting == "auto" and available) else "cpu")


def check(cfg: DictConfig) -> Config:
    """The same checks as ``build`` (the parts are built and dropped); returns the settings."""
    return build(cfg).config


# ---------------------------------------------------------------------------------------------
# groups



def check_group_targets(cfg: DictConfig) -> None:
    """Each group node is a mapping whose ``_target_`` imports to a concrete class of the
    group's interface (so ``validate`` can read its constructor's signature)."""

    for group, interface in GROUP_INTERFACES.items():
        try:
            node = OmegaConf.select(cfg, group, throw_on_missing=True)
            target = node.get("_target_") if isinstance(node, DictConfig) else None
        except Exception:  # an unresolvable interpolation: validate names it
            continue
        if not isinstance(node, DictConfig):
            raise ConfigError(group, None if node is None else node,
                              f"one of the group's options ({', '.join(group_options(group))}) or a mapping "
                              f"with a _target_")
        if not isinstance(target, str) or not target:
            raise ConfigError(f"{group}._target_", target, f"the import path of a {interface.__name__} class")
        cls = _import(target)
        allowed = f"a concrete {interface.__name__} class (e.g. {_example(group)})"
        if cls is None:
            raise ConfigError(f"{group}._target_", target, f"an importable class: {allowed}")
        if not inspect.isclass(cls) or cls is interface or inspect.isabstract(cls):
            raise ConfigError(f"{group}._target_", target, allowed)
        if interface is AdvantageEstimator:
            if not any("__call__" in vars(k) for k in cls.__mro__[:-1]):
                raise ConfigError(f"{group}._target_", target, allowed)
        elif not issubclass(cls, interface):
            raise ConfigError(f"{group}._target_", target, allowed)
        try:
            inspect.signature(cls)
        except (TypeError, ValueError):
            raise ConfigError(f"{group}._target_", target, allowed) from None


def _import(path: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        return None
    try:
        return getattr(importlib.import_module(module_name), attr)
    except Exception:  # ImportError, AttributeError, or the module failing while it imports
        return None


def _example(group: str) -> str:

    default = {"loss": "clip", "advantage": "gae", "network": "mlp", "logger": "none"}[group]
    try:
        return str(OmegaConf.load(CONF_DIR / group / f"{default}.yaml")["_target_"])
    except Exception:
        return f"{group}={default}"


def _construct(group: str, node: dict, **runtime_kwargs):
    """``construct`` with a constructor's own failure (not a ConfigError) told in one line."""
    try:
        return construct(node, **runtime_kwargs)
    except ConfigError:
        raise
    except (MemoryError, RuntimeError) as err:
        if isinstance(err, MemoryError) or "allocate" in str(err):
            raise ConfigError(group, _short(node), f"a {group} that fits in memory ({first_line(err)})") from None
        raise ConfigError(group, _short(node), f"arguments {node['_target_']} accepts "
                                               f"({type(err).__name__}: {first_line(err)})") from None
    except (TypeError, ValueError, NotImplementedError, AssertionError) as err:
        raise ConfigError(group, _short(node), f"arguments {node['_target_']} accepts "
                                               f"({type(err).__name__}: {first_line(err)})") from None


FLOAT32_MAX = 3.4028234663852886e38


def check_float32(group: str, node: dict) -> None:
    """Settings that become float32 tensors or scalars of float32 maths (the network's, PPO's)
    must be numbers float32 can hold: 1e308 would overflow inside torch, mid-run."""
    for key, value in node.items():
        if isinstance(value, float) and abs(value) > FLOAT32_MAX:
            raise ConfigError(f"{group}.{key}", value, f"a value float32 can hold (|x| <= {FLOAT32_MAX:.4g})")


def _short(node: dict) -> str:
    return str(node.get("_target_", node)).rpartition(".")[2]


# ---------------------------------------------------------------------------------------------
# the env

def probe_env(env_cfg) -> tuple:
    """The env's observation and action spaces, from one env that is made, reset and stepped
    once (then closed): whatever breaks there is a bad ``env.*`` setting, told in one line."""

    key, value = _env_key(env_cfg)
    try:
        env = make_env(env_cfg)
    except ConfigError as err:
        if env_cfg.backend == "envpool":  # EnvPool may have it: say why gymnasium's is needed too
            raise ConfigError(err.key, err.value, f"{err.allowed}; env.backend=envpool needs it in gymnasium "
                                                  "too (its spaces and the evaluation episodes)") from None
        raise
    except Exception as err:  # a module that fails to import, a missing optional dependency, a bad kwarg
        raise ConfigError(key, value, f"{_made(env_cfg)} ({type(err).__name__}: "
                                      f"{first_line(err)})") from None
    try:
        obs_space, action_space = env.observation_space, env.action_space
        check_spaces(env_cfg.id, obs_space, action_space)
        try:
            env.reset(seed=0)
            action_space.seed(0)
            env.step(action_space.sample())
        except Exception as err:
            raise ConfigError(key, value, f"{_steps(env_cfg)} ({type(err).__name__}: "
                                          f"{first_line(err)})") from None
        if isinstance(action_space, spaces.Discrete) and action_space.n < 1:
            raise ConfigError("env.id", env_cfg.id, "an env with at least one action")
        if env_cfg.backend == "envpool":  # the training envs' backend: the same env, spaces and settings there
            from ..envs import envpool_backend
            envpool_backend.probe(env_cfg, obs_space, action_space)
        return obs_space, action_space
    finally:
        try:
            env.close()
        except Exception:
            pass


def _env_key(env_cfg) -> tuple[str, Any]:
    """The setting to blame for an env that fails: its keyword arguments if any were given."""
    if env_cfg.kwargs:
        return "env.kwargs", dict(env_cfg.kwargs)
    return "env.id", env_cfg.id


def _made(env_cfg) -> str:
    return f"keyword arguments that {env_cfg.id} accepts" if env_cfg.kwargs else "an env id that can be made"


def _steps(env_cfg) -> str:
    return f"keyword arguments with which {env_cfg.id} resets and steps" if env_cfg.kwargs else \
        "an env that resets and steps"


SUPPORTED_SPACES = ("a flat Box observation space (shape (n,)) or uint8 images ([C, H, W], env.preprocess=atari), "
                    "and a Box or Discrete action space")


def check_spaces(env_id: str, obs_space, action_space) -> None:
    """Refuse, before training, every space the networks and the rollout cannot handle."""

    problems = []
    flat = isinstance(obs_space, spaces.Box) and len(obs_space.shape) == 1 and obs_space.shape[0] >= 1
    if not flat and not is_image(obs_space):
        problems.append(f"observation space {obs_space}")
    if isinstance(action_space, spaces.Box):
        if len(action_space.shape) < 1 or math.prod(action_space.shape) < 1:
            problems.append(f"action space {action_space}")
    elif not isinstance(action_space, spaces.Discrete):
        problems.append(f"action space {action_space}")
    if problems:
        raise ConfigError("env.id", env_id, f"an env with {SUPPORTED_SPACES}; {env_id} has "
                                            f"{' and '.join(problems)}")


def check_observations(config: Config, network_cls, obs_space) -> None:
    """Image observations need a network that takes images (``image_observations``), flat ones
    one that does not; images are never normalised as floats and episodic life needs lives."""
    image, takes_images = is_image(obs_space), bool(getattr(network_cls, "image_observations", False))
    name = network_cls.__name__
    if image and not takes_images:
        raise ConfigError("network", name, f"a network for images (network=nature_cnn): {config.env.id} has image "
                                           f"observations {obs_space.shape}")
    if takes_images and not image:
        raise ConfigError("network", name, f"a network for flat observations (network=mlp): {config.env.id} has "
                                           f"{obs_space}")
    if image and config.env.normalize_obs:
        raise ConfigError("env.normalize_obs", True, f"false for {config.env.id}: its image observations are "
                                                     "scaled by the network")
    if config.env.episodic_life and config.env.preprocess != "atari":
        raise ConfigError("env.episodic_life", True, "false unless env.preprocess=atari (lives are an Atari game's)")
    if config.env.episodic_life and config.env.backend == "gymnasium" and config.env.vectorization == "async":
        raise ConfigError("env.vectorization", "async", "sync with env.episodic_life=true (the lives are read from "
                                                        "the envs in this process)")


# ---------------------------------------------------------------------------------------------
# memory

def available_memory() -> int | None:
    """Bytes the kernel says a new allocation can still get (MemAvailable), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gb(n: float) -> str:
    return f"{n / 2**30:.3g} GB"


def check_memory(config: Config, network: dict, obs_space, action_space) -> None:
    """The rollout storage and (for MLPs) the network with its gradients and Adam moments must
    fit in the memory available now: found out in one line, not by the kernel's OOM killer."""

    free = available_memory()
    if free is None:
        return
    obs_dim = math.prod(obs_space.shape)
    if isinstance(action_space, spaces.Discrete):
        act_dim, head = 1, int(action_space.n)
    else:
        act_dim = math.prod(action_space.shape)
        head = 2 * act_dim
    algo = config.algo
    steps = algo.num_envs * algo.num_steps
    # float32 storage per step (obs, action, dist params, 6 scalars), the flattened batch copy of
    # it, and the advantages/returns in float64
    obs_bytes = obs_dim * (1 if is_image(obs_space) else 4)  # images are stored as uint8
    per_step = (obs_bytes + 4 * (act_dim + head + 6)) * 2 + 8 * 4
    need = steps * per_step
    if need > free:
        key = "algo.num_steps" if algo.num_steps >= algo.num_envs else "algo.num_envs"
        raise ConfigError(key, getattr(algo, key.split(".")[1]),
                          f"num_envs*num_steps small enough for the rollout to fit in memory ({algo.num_envs}*"
                          f"{algo.num_steps} steps need about {_gb(need)}; {_gb(free)} available)")
    hidden = network.get("hidden_sizes")
    if isinstance(hidden, (list, tuple)) and hidden and all(isinstance(h, int) and not isinstance(h, bool)
                                                           for h in hidden):
        sizes = [obs_dim, *hidden]
        params = sum(a * b + b for a, b in zip(sizes, sizes[1:])) + hidden[-1] * (head + 1)
        net_bytes = 2 * params * 4 * 4  # actor and critic; weights, gradients, two Adam moments
        if net_bytes > free:
            raise ConfigError("network.hidden_sizes", list(hidden),
                              f"a network that fits in memory (about {_gb(net_bytes)} of parameters, gradients "
                              f"and Adam moments; {_gb(free)} available)")
