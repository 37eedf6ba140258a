"""The convolutional actor-critic for pixels (``network=nature_cnn``).

Mnih et al. (2015)'s network as PPO's Atari experiments used it: on a stack of 84x84 grayscale
frames (uint8, scaled to [0, 1] here), conv 32 8x8 stride 4, conv 64 4x4 stride 2, conv 64 3x3
stride 1, a dense layer of 512, all ReLU; a policy head (categorical) and a value head share
that trunk. Orthogonal init: gain sqrt(2) in the trunk, 0.01 for the policy, 1 for the value.
"""
from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn

from ..errors import ConfigError
from .distributions import Categorical, Distribution
from .networks import ActorCritic

#: (out channels, kernel, stride) of the three conv layers.
CONV_LAYERS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))


def _init(layer: nn.Module, gain: float | None) -> nn.Module:
    if gain is not None:  # orthogonal weights, zero bias; None keeps torch's default init
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return layer


class NatureCNN(ActorCritic):
    #: takes image observations (uint8 [C, H, W]) rather than flat ones (run/loop/build.py checks)
    image_observations = True

    def __init__(self, obs_space: gym.Space, action_space: gym.Space, hidden_size: int = 512,
                 ortho_init: bool = True, hidden_gain: float = math.sqrt(2), policy_gain: float = 0.01,
                 value_gain: float = 1.0, channels_last: bool = True):
        super().__init__()
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 3:
            raise ConfigError("network", "nature_cnn", f"an env with image observations [C, H, W]; this one has "
                                                       f"{obs_space}")
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ConfigError("network", "nature_cnn", f"an env with a Discrete action space (its policy is "
                                                       f"categorical); this one has {action_space}")
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

    @property
    def distribution_class(self) -> type:
        return Categorical

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() / 255.0
        if self.channels_last:  # NHWC: the CPU's convolutions run ~1.4x faster (docs/performance.md); same maths
            x = x.contiguous(memory_format=torch.channels_last)
        return self.trunk(x)

    def distribution(self, obs: torch.Tensor) -> Distribution:
        return Categorical(self.policy_head(self.features(obs)))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value_head(self.features(obs)).squeeze(-1)

    def forward(self, obs: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        features = self.features(obs)  # one trunk pass for both heads
        return Categorical(self.policy_head(features)), self.value_head(features).squeeze(-1)
