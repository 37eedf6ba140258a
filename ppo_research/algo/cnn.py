"""The convolutional actor-critic for pixels (``network=nature_cnn``).

Mnih et al. (2015)'s network as PPO's Atari experiments used it: on a stack of 84x84 grayscale
frames (uint8, scaled to [0, 1] here), conv 32 8x8 stride 4, conv 64 4x4 stride 2, conv 64 3x3
stride 1, a dense layer of 512, all ReLU; a policy head (categorical) and a value head share
that trunk. Orthogonal init: gain sqrt(2) in the trunk, 0.01 for the policy, 1 for the value.

A population's members train as one stacked module (``algo/stacking.py``): its forward runs each
member's own layers on that member's rows, one member after another. A CNN's cost is arithmetic,
not per-call overhead, so one batched call would buy nothing (grouped convolutions over the
members measured slower here than the loop: docs/benchmarks.md), and each member's forward stays its
solo run's.

``precision="bfloat16"`` runs the convolutions and dense layers under torch's bfloat16 autocast
(a speed switch: about 1.5x faster forward and backward on a CPU with AVX512-BF16, docs/benchmarks.md);
the weights, gradients, Adam and everything after the network (logits, values, the loss) stay
float32. The default, float32, is the plain path.
"""
from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from .distributions import Categorical, Distribution
from .networks import ActorCritic

#: (out channels, kernel, stride) of the three conv layers.
CONV_LAYERS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
#: ``network.precision``: the arithmetic of the network's layers
PRECISIONS = ("float32", "bfloat16")


def _init(layer: nn.Module, gain: float | None) -> nn.Module:
    if gain is not None:  # orthogonal weights, zero bias; None keeps torch's default init
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return layer


class NatureCNN(ActorCritic):
    #: takes image observations (uint8 [C, H, W]) rather than flat ones (run/loop/build.py checks)
    image_observations = True
    #: a population's stacked parameters go through ``_member_outputs``, member by member
    stackable = True

    def __init__(self, obs_space: gym.Space, action_space: gym.Space, hidden_size: int = 512,
                 ortho_init: bool = True, hidden_gain: float = math.sqrt(2), policy_gain: float = 0.01,
                 value_gain: float = 1.0, channels_last: bool = True, precision: str = "float32"):
        super().__init__()
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 3:
            raise ConfigError("network", "nature_cnn", f"an env with image observations [C, H, W]; this one has "
                                                       f"{obs_space}")
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ConfigError("network", "nature_cnn", f"an env with a Discrete action space (its policy is "
                                                       f"categorical); this one has {action_space}")
        if precision not in PRECISIONS:
            raise ConfigError("network.precision", precision, f"one of {', '.join(PRECISIONS)}")
        if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
            raise ConfigError("network.hidden_size", hidden_size, "a positive int")
        gain = hidden_gain if ortho_init else None
        channels, height, width = obs_space.shape
        layers: list[nn.Module] = []
        for out, kernel, stride in CONV_LAYERS:
            layers += [_init(nn.Conv2d(channels, out, kernel, stride), gain), nn.ReLU()]
            channels, height, width = out, (height - kernel) // stride + 1, (width - kernel) // stride + 1
        if height < 1 or width < 1:
            raise ConfigError("network", "nature_cnn", f"images of at least 36x36 pixels; these are "
                                                       f"{obs_space.shape[1]}x{obs_space.shape[2]}")
        self.trunk = nn.Sequential(*layers, nn.Flatten(), _init(nn.Linear(channels * height * width, hidden_size),
                                                                gain), nn.ReLU())
        self.policy_head = _init(nn.Linear(hidden_size, int(action_space.n)), policy_gain if ortho_init else None)
        self.value_head = _init(nn.Linear(hidden_size, 1), value_gain if ortho_init else None)
        self._dist_cls = Categorical
        self.channels_last = bool(channels_last)
        self.precision = precision

    @property
    def distribution_class(self) -> type:
        return Categorical

    def scaled(self, obs: torch.Tensor) -> torch.Tensor:
        """uint8 frames as floats in [0, 1], laid out for the convolutions."""
        x = obs.float() / 255.0
        if self.channels_last:  # NHWC: the CPU's convolutions run ~1.4x faster (docs/performance.md); same maths
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.scaled(obs))

    def _outputs(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy logits and values (float32): this network's on [B, C, H, W], or every member's
        on [S, B, C, H, W] when its parameters are a population's stacked ones ([S, ...])."""
        if self.precision == "float32":
            return self._layers(obs)
        with torch.autocast(obs.device.type, dtype=torch.bfloat16):
            logits, value = self._layers(obs)
        return logits.float(), value.float()

    def _layers(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.value_head.weight.dim() == 2:
            features = self.features(obs)  # one trunk pass for both heads
            return self.policy_head(features), self.value_head(features).squeeze(-1)
        size = len(obs)
        layers = [*self.trunk, self.policy_head, self.value_head]
        # each layer's (weight, bias) per member: row k of the stacked ones (unbind: one backward for
        # all rows), the bias flattened from its broadcasting shape [1, n]; ReLU and Flatten have none
        rows = [list(zip(layer.weight.unbind(0), (b.view(-1) for b in layer.bias.unbind(0))))
                if isinstance(layer, (nn.Conv2d, nn.Linear)) else [(None, None)] * size for layer in layers]
        outputs = [self._member_outputs(obs[k], [(layer, *rows[i][k]) for i, layer in enumerate(layers)])
                   for k in range(size)]
        return torch.stack([logits for logits, _ in outputs]), torch.stack([value for _, value in outputs])

    def _member_outputs(self, obs: torch.Tensor, layers: list) -> tuple[torch.Tensor, torch.Tensor]:
        """One member's logits and values from its own rows of the stacked parameters (``layers``:
        the trunk's, then the two heads', each with the member's weight and bias), computed as
        the network's own layers compute them."""
        *trunk, (_, wp, bp), (_, wv, bv) = layers
        x = self.scaled(obs)
        for layer, w, b in trunk:
            if isinstance(layer, nn.Conv2d):
                x = F.conv2d(x, w, b, layer.stride)
            elif isinstance(layer, nn.Linear):
                x = F.linear(x, w, b)
            else:  # ReLU, Flatten
                x = layer(x)
        return F.linear(x, wp, bp), F.linear(x, wv, bv).squeeze(-1)

    def distribution(self, obs: torch.Tensor) -> Distribution:
        return Categorical(self._outputs(obs)[0])

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self._outputs(obs)[1]

    def forward(self, obs: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        logits, value = self._outputs(obs)
        return Categorical(logits), value
