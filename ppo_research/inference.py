"""Rollout inference: act with pi_old on a few observations at a time, as cheaply as possible.

A batch-1 torch forward of the actor and critic costs ~55 us of dispatch overhead; the same
maths in numpy costs a few us. ``NumpyPolicy`` mirrors an MLP actor-critic's weights (re-read
after every update) and samples with torch's global generator, so it draws the same random
numbers as the torch path and a seed still fixes a run. ``TorchPolicy`` is the fallback for
networks it cannot mirror.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .distributions import Categorical, DiagGaussian
from .networks import ActorCritic, MLPActorCritic, SharedMLPActorCritic

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

_NUMPY_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
}


class TorchPolicy:
    """act(obs) -> (action, log_prob, value, dist_params) with the torch network itself."""

    def __init__(self, policy: ActorCritic):
        self.policy = policy

    def sync(self) -> None:
        pass

    @torch.inference_mode()
    def act(self, obs: np.ndarray):
        dist, value = self.policy(torch.from_numpy(obs))
        action = dist.sample()
        return action.numpy(), dist.log_prob(action).numpy(), value.numpy(), dist.params().numpy()

    @torch.inference_mode()
    def value(self, obs: np.ndarray) -> np.ndarray:
        return self.policy.value(torch.from_numpy(obs)).numpy()


def _layers(module: nn.Module):
    """An MLP (or a single Linear head) as a list of ("linear", layer) and ("act", fn) steps."""
    if isinstance(module, nn.Linear):
        return [("linear", module)]
    if module.activation not in _NUMPY_ACTIVATIONS:
        raise TypeError(module.activation)
    act = _NUMPY_ACTIVATIONS[module.activation]
    steps = []
    for i, layer in enumerate(module.layers):
        steps.append(("linear", layer))
        if i < len(module.layers) - 1 or module.activate_last:
            steps.append(("act", act))
    return steps


class NumpyPolicy:
    """A numpy mirror of ``MLPActorCritic`` / ``SharedMLPActorCritic``."""

    def __init__(self, policy: ActorCritic):
        self.policy = policy
        if isinstance(policy, MLPActorCritic):
            self._trunk, self._actor, self._critic = [], _layers(policy.actor), _layers(policy.critic)
        else:
            self._trunk = _layers(policy.trunk)
            self._actor, self._critic = _layers(policy.policy_head), _layers(policy.value_head)
        self.gaussian = policy._dist_cls is DiagGaussian
        self.sync()

    def sync(self) -> None:
        """Re-read the weights (call after every update)."""
        def weights(layers):
            return [(kind, (m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()))
                    if kind == "linear" else (kind, m) for kind, m in layers]
        self.trunk, self.actor, self.critic = weights(self._trunk), weights(self._actor), weights(self._critic)
        if self.gaussian and self.policy.log_std is not None:
            p = self.policy
            self.log_std = p.log_std.detach().clamp(p.log_std_min, p.log_std_max).numpy().copy()

    @staticmethod
    def _run(layers, x: np.ndarray) -> np.ndarray:
        for kind, layer in layers:
            x = x @ layer[0] + layer[1] if kind == "linear" else layer(x)
        return x

    def _heads(self, obs: np.ndarray):
        x = self._run(self.trunk, obs)
        return self._run(self.actor, x), self._run(self.critic, x)[:, 0]

    def act(self, obs: np.ndarray):
        head, value = self._heads(obs)
        if self.gaussian:
            if self.policy.state_dependent_std:
                mean, log_std = np.split(head, 2, axis=-1)
                log_std = np.clip(log_std, self.policy.log_std_min, self.policy.log_std_max)
            else:
                mean, log_std = head, np.broadcast_to(self.log_std, head.shape)
            noise = torch.randn(mean.shape).numpy()  # the torch generator, as the torch path
            action = mean + np.exp(log_std) * noise
            log_prob = (-0.5 * noise**2 - log_std - _HALF_LOG_2PI).sum(-1)
            params = np.concatenate([mean, log_std], axis=-1)
        else:
            logits = head - head.max(-1, keepdims=True)
            logits = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            u = torch.rand(len(logits)).numpy()[:, None]
            action = np.minimum((np.cumsum(np.exp(logits), -1) < u).sum(-1), logits.shape[-1] - 1)
            log_prob = np.take_along_axis(logits, action[:, None], -1)[:, 0]
            params = logits
        return action, log_prob.astype(np.float32), value.astype(np.float32), params.astype(np.float32)

    def value(self, obs: np.ndarray) -> np.ndarray:
        return self._heads(obs)[1].astype(np.float32)


def rollout_policy(policy: ActorCritic):
    """The fastest exact rollout path available for ``policy``."""
    if isinstance(policy, (MLPActorCritic, SharedMLPActorCritic)):
        try:
            return NumpyPolicy(policy)
        except TypeError:  # an activation numpy does not mirror (e.g. GELU)
            pass
    return TorchPolicy(policy)
