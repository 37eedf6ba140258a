"""Actor-critic networks. Each class is one `network=` option.

The observation and action spaces are passed at build time by the trainer
(``run/loop/build.py``: the spaces are keyword arguments of the constructor), never written into the config.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from .distributions import Categorical, DiagGaussian, Distribution, TanhGaussian
from .mirror_spec import MirrorSpec

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "elu": F.elu, "gelu": F.gelu, "silu": F.silu}
STD_PARAMS = ("exp", "softplus")
SQUASHES = ("none", "tanh")


def _std_raw_init(std_param: str, std_init: Optional[float], std_min: float, log_std_init: float) -> float:
    """The free std parameter's initial value (``raw``) that gives the initial std.

    The initial std is ``std_init``, or exp(log_std_init) when std_init is None (today's
    default: log_std_init = 0, std 1). exp: std = exp(raw) + std_min, so raw = log(std - std_min);
    softplus: std = softplus(raw) + std_min, so raw = log(expm1(std - std_min)).
    """
    if std_param not in STD_PARAMS:
        raise ConfigError("network.std_param", std_param, f"one of {', '.join(STD_PARAMS)}")
    if std_min < 0:
        raise ConfigError("network.std_min", std_min, "a value >= 0")
    if std_init is not None and log_std_init != 0.0:
        raise ConfigError("network.std_init", std_init, f"null when network.log_std_init={log_std_init} is set "
                                                        "(both give the initial std: set one)")
    if std_init is None and std_param == "exp" and std_min == 0.0:
        return float(log_std_init)  # exactly today's initial log-std
    std = math.exp(log_std_init) if std_init is None else std_init
    if not std > std_min:
        key, value = ("network.std_init", std_init) if std_init is not None else ("network.log_std_init", log_std_init)
        raise ConfigError(key, value, f"an initial std above network.std_min={std_min}")
    excess = std - std_min
    return math.log(excess) if std_param == "exp" else math.log(math.expm1(excess))


class ActorCritic(nn.Module):
    """The interface the trainer talks to: an action distribution and a state value per observation."""

    def distribution(self, obs: torch.Tensor) -> Distribution:
        raise NotImplementedError

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, obs: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        return self.distribution(obs), self.value(obs)

    def distribution_from_params(self, params: torch.Tensor) -> Distribution:
        """Rebuild a distribution from ``Distribution.params()`` stored in the rollout."""
        return self._dist_cls.from_params(params)

    @property
    def device(self) -> torch.device:
        """Where its parameters are (``device=``): observations go there, results come back."""
        return next(self.parameters()).device

    def mirror_spec(self) -> Optional[MirrorSpec]:
        """This network's maths for the numpy rollout path (``mirror_spec.MirrorSpec``), or None
        to act with torch. Declare one only for maths the spec describes exactly."""
        return None


class MLP(nn.Module):
    """Linear layers with an activation between them (and after the last if ``activate_last``).

    The forward calls ``F.linear`` on the layers' parameters rather than each submodule: at
    PPO's minibatch sizes the per-module call overhead costs as much as the maths.
    """

    def __init__(self, sizes: Sequence[int], activation: str, gains: Sequence[float | None], activate_last: bool):
        super().__init__()
        self.layers = nn.ModuleList(_linear(n_in, n_out, g) for n_in, n_out, g in zip(sizes[:-1], sizes[1:], gains))
        self.activation, self.activate_last = activation, activate_last
        self._act = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = linear(x, layer.weight, layer.bias)
            if i < last or self.activate_last:
                x = self._act(x)
        return x


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x W^T + b; with a population's stacked parameters (weight [S, out, in], bias [S, 1, out],
    x [S, B, in]: ``algo/stacking.py``) one batched matmul computes every member's layer."""
    if weight.dim() == 3:
        return torch.baddbmm(bias, x, weight.transpose(1, 2))
    return F.linear(x, weight, bias)


def _numpy(layer: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    return layer.weight.detach().cpu().numpy().T.copy(), layer.bias.detach().cpu().numpy().copy()


def _linear(n_in: int, n_out: int, gain: float | None) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    if gain is not None:  # orthogonal init, zero bias; None keeps torch's default init
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return layer


class _Heads(ActorCritic):
    """What both MLP variants share: the options (one signature, so one config schema), the
    policy distribution (Gaussian for Box, Categorical for Discrete) and the value head size.
    Subclasses build their layers in ``_build``."""

    #: the forward also computes a population's stacked parameters (algo/stacking.py)
    stackable = True

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        ortho_init: bool = True,  # orthogonal weights, zero biases; False keeps torch's init
        hidden_gain: float = math.sqrt(2),
        policy_gain: float = 0.01,
        value_gain: float = 1.0,
        log_std_init: float = 0.0,
        state_dependent_std: bool = False,
        log_std_min: float = -20.0,  # clamp of the final log-std, as in the seed
        log_std_max: float = 2.0,
        std_param: str = "exp",  # std = exp(raw) + std_min, or softplus(raw) + std_min
        std_init: Optional[float] = None,  # initial std; None = exp(log_std_init)
        std_min: float = 0.0,  # added to the transformed std
        squash: str = "none",  # "tanh": actions are tanh of the Gaussian sample (TanhGaussian)
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError("network.activation", activation, f"one of {sorted(ACTIVATIONS)}")
        if not hidden_sizes or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden_sizes):
            raise ConfigError("network.hidden_sizes", list(hidden_sizes), "a non-empty list of positive ints")
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
            raise ConfigError("env.id", obs_space, "a flat Box observation space")
        self.obs_dim = int(obs_space.shape[0])
        self.hidden_sizes = [int(h) for h in hidden_sizes]
        self.activation = activation
        self.hidden_gain = hidden_gain if ortho_init else None
        self._policy_gain = policy_gain if ortho_init else None
        self._value_gain = value_gain if ortho_init else None
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.state_dependent_std = state_dependent_std
        self.std_param, self.std_min, self.squash = std_param, float(std_min), squash
        self._std_raw_init = _std_raw_init(std_param, std_init, std_min, log_std_init)
        if squash not in SQUASHES:
            raise ConfigError("network.squash", squash, f"one of {', '.join(SQUASHES)}")

        # The free std parameter (state-independent case): ``log_std`` for exp, ``std_raw`` for
        # softplus (the softplus input), None otherwise.
        self.log_std = self.std_raw = None
        if isinstance(action_space, gym.spaces.Box):
            self._dist_cls = TanhGaussian if squash == "tanh" else DiagGaussian
            self.action_dim = int(np.prod(action_space.shape))
            head_out = 2 * self.action_dim if state_dependent_std else self.action_dim
            if not state_dependent_std:
                free = nn.Parameter(torch.full((self.action_dim,), self._std_raw_init))
                if std_param == "exp":
                    self.log_std = free
                else:
                    self.std_raw = free
        elif isinstance(action_space, gym.spaces.Discrete):
            self._dist_cls = Categorical
            if state_dependent_std:
                raise ConfigError("network.state_dependent_std", True, "false for a discrete action space")
            if squash != "none":
                raise ConfigError("network.squash", squash, "none for a discrete action space")
            head_out = int(action_space.n)
        else:
            raise ConfigError("env.id", type(action_space).__name__, "Box or Discrete action spaces")
        self._head_out = head_out
        self._build()

    @property
    def distribution_class(self) -> type:
        """The policy's distribution: DiagGaussian, TanhGaussian (``squash=tanh``) or Categorical."""
        return self._dist_cls

    def _build(self) -> None:
        raise NotImplementedError

    def _mlp(self, n_out: int | None, out_gain: float | None) -> MLP:
        """Hidden layers, then an output layer of ``n_out`` units unless ``n_out`` is None."""
        sizes = [self.obs_dim, *self.hidden_sizes] + ([n_out] if n_out else [])
        gains = [self.hidden_gain] * len(self.hidden_sizes) + [out_gain]
        return MLP(sizes, self.activation, gains, activate_last=n_out is None)

    def _init_std_bias(self, head: nn.Linear) -> None:
        if self.state_dependent_std and self._dist_cls is not Categorical:
            with torch.no_grad():  # start the std half at the initial std
                head.bias[self.action_dim:] = self._std_raw_init

    def _spec(self, trunk: list, policy: list, value: list) -> MirrorSpec:
        gaussian = self._dist_cls is not Categorical
        log_std = None
        if gaussian and not self.state_dependent_std:
            with torch.no_grad():
                log_std = self.action_log_std(self.log_std if self.std_param == "exp" else self.std_raw)
            log_std = log_std.cpu().numpy().copy()
        return MirrorSpec(trunk=[_numpy(layer) for layer in trunk], policy=[_numpy(layer) for layer in policy],
                          value=[_numpy(layer) for layer in value], activation=self.activation,
                          distribution="gaussian" if gaussian else "categorical", log_std=log_std,
                          log_std_bounds=(self.log_std_min, self.log_std_max), std_param=self.std_param,
                          std_min=self.std_min, squash=None if self.squash == "none" else self.squash)

    def action_log_std(self, raw: torch.Tensor) -> torch.Tensor:
        """The Gaussian's log-std from the free std parameter or head output ``raw``:
        log(exp(raw) + std_min) or log(softplus(raw) + std_min), clamped to
        [log_std_min, log_std_max] (as the seed does, but differentiably: the gradient is zero
        outside the range). exp with std_min = 0 is raw itself."""
        if self.std_param == "exp":
            log_std = raw if self.std_min == 0.0 else torch.logaddexp(raw, torch.tensor(math.log(self.std_min)))
        else:
            log_std = torch.log(F.softplus(raw) + self.std_min)
        return log_std.clamp(self.log_std_min, self.log_std_max)

    def _make_distribution(self, head_out: torch.Tensor) -> Distribution:
        if self._dist_cls is Categorical:
            return Categorical(head_out)
        if self.state_dependent_std:
            mean, raw = head_out.chunk(2, dim=-1)
        else:
            mean, raw = head_out, (self.log_std if self.std_param == "exp" else self.std_raw)
        return self._dist_cls(mean, self.action_log_std(raw))


class MLPActorCritic(_Heads):
    """Separate actor and critic MLPs (the PPO paper's network: 64x64 tanh)."""

    def _build(self) -> None:
        self.actor = self._mlp(self._head_out, self._policy_gain)
        self.critic = self._mlp(1, self._value_gain)
        self._init_std_bias(self.actor.layers[-1])

    def distribution(self, obs: torch.Tensor) -> Distribution:
        return self._make_distribution(self.actor(obs))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def mirror_spec(self) -> MirrorSpec:
        return self._spec([], list(self.actor.layers), list(self.critic.layers))


class SharedMLPActorCritic(_Heads):
    """One MLP trunk feeding a policy head and a value head."""

    def _build(self) -> None:
        self.trunk = self._mlp(None, None)
        self.policy_head = _linear(self.hidden_sizes[-1], self._head_out, self._policy_gain)
        self.value_head = _linear(self.hidden_sizes[-1], 1, self._value_gain)
        self._init_std_bias(self.policy_head)

    def distribution(self, obs: torch.Tensor) -> Distribution:
        return self._make_distribution(self._head(self.policy_head, self.trunk(obs)))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self._head(self.value_head, self.trunk(obs)).squeeze(-1)

    def forward(self, obs: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        features = self.trunk(obs)  # one trunk pass for both heads
        return (self._make_distribution(self._head(self.policy_head, features)),
                self._head(self.value_head, features).squeeze(-1))

    def mirror_spec(self) -> MirrorSpec:
        return self._spec(list(self.trunk.layers), [self.policy_head], [self.value_head])

    @staticmethod
    def _head(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return linear(x, layer.weight, layer.bias)
