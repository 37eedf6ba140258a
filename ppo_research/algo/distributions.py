"""Action distributions with closed-form log-prob and KL (and entropy, where one exists).

Small hand-written classes instead of ``torch.distributions``: no argument validation and no
object graph per call on the hot path, and the parameters can be stored in the rollout so the
analytic KL(pi_old || pi_new) is available to the losses.

``TanhGaussian`` (a Gaussian squashed into (-1, 1)) has no closed-form entropy: its
``entropy()`` is a one-sample, reparameterised Monte-Carlo estimate (see the class).
"""
from __future__ import annotations

import math
from typing import Optional, Protocol

import torch

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


class Distribution(Protocol):
    """What the trainer and the losses need from a policy's action distribution."""

    def sample(self) -> torch.Tensor: ...
    def mode(self) -> torch.Tensor: ...
    def log_prob(self, actions: torch.Tensor) -> torch.Tensor: ...
    def entropy(self) -> torch.Tensor: ...
    def kl(self, other: "Distribution") -> torch.Tensor:
        """Per-sample KL(self || other)."""
        ...
    def params(self) -> torch.Tensor:
        """Parameters as one [batch, k] tensor, to rebuild the distribution later."""
        ...


class DiagGaussian:
    """Independent Gaussian per action dimension; log-prob and entropy sum over dimensions.

    ``log_std`` may be per sample ([batch, d]) or shared ([d], the state-independent case);
    a shared one is broadcast only where needed, which keeps the autograd graph small.
    """

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor):
        self.mean = mean
        self.log_std = log_std

    @classmethod
    def from_params(cls, params: torch.Tensor) -> "DiagGaussian":
        mean, log_std = params.chunk(2, dim=-1)
        return cls(mean, log_std)

    def params(self) -> torch.Tensor:
        return torch.cat([self.mean, self.log_std.expand_as(self.mean)], dim=-1)

    def sample(self) -> torch.Tensor:
        return self.mean + self.log_std.exp() * torch.randn_like(self.mean)

    def mode(self) -> torch.Tensor:
        return self.mean

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        z = (actions - self.mean) * torch.exp(-self.log_std)
        d = self.mean.shape[-1]
        return -0.5 * z.pow(2).sum(-1) - (self.log_std.sum(-1) + d * _HALF_LOG_2PI)

    def entropy(self) -> torch.Tensor:
        # H = sum_i (log sigma_i + 0.5 * log(2 pi e)); the seed's -p*log p is not an entropy.
        d = self.mean.shape[-1]
        return (self.log_std.sum(-1) + d * (0.5 + _HALF_LOG_2PI)).expand(self.mean.shape[:-1])

    def kl(self, other: "DiagGaussian") -> torch.Tensor:
        log_ratio = self.log_std - other.log_std
        mean_term = ((self.mean - other.mean) * torch.exp(-other.log_std)).pow(2)
        return 0.5 * (torch.exp(2.0 * log_ratio) + mean_term - 1.0).sum(-1) - log_ratio.sum(-1)


def log1m_tanh_sq(u: torch.Tensor) -> torch.Tensor:
    """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for any u."""
    return 2.0 * (_LOG_2 - u - torch.nn.functional.softplus(-2.0 * u))


class TanhGaussian(DiagGaussian):
    """a = tanh(u) with u ~ N(mean, std^2) per dimension: a Gaussian squashed into (-1, 1).

    ``mean`` and ``log_std`` are those of u; ``params()``/``from_params`` store them as
    DiagGaussian does.

    - log-prob, by the change of variables: log pi(a) = log N(u) - sum_i log(1 - tanh(u_i)^2),
      u = atanh(a). Actions are clamped to +-(1 - 1e-6) before atanh (float32 tanh rounds to
      +-1 beyond |u| ~ 9), so a saturated action's log-prob is that of |u| = atanh(1 - 1e-6) ~ 7.25;
      the rollout's log pi_old is computed from the stored action the same way, so the ratio
      pi/pi_old is exactly 1 before the first step.
    - KL(p || q) is the Gaussians' analytic KL: KL is invariant under the bijection tanh.
    - entropy has no closed form. ``entropy()`` returns H[N(mean, std)] + sum_i log(1 - tanh(u_i)^2)
      for one fresh u = mean + std * eps per state (eps from torch's generator): an unbiased
      estimate of the squashed entropy whose gradient (reparameterised) is unbiased too. It is
      noisy per state and averages over a minibatch; ``mode()`` is tanh(mean).
    """

    #: actions are clamped to +-(1 - ACTION_EPS) before atanh
    ACTION_EPS = 1e-6

    def sample(self) -> torch.Tensor:
        return torch.tanh(super().sample())

    def mode(self) -> torch.Tensor:
        return torch.tanh(self.mean)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        bound = 1.0 - self.ACTION_EPS
        u = torch.atanh(actions.clamp(-bound, bound))
        return super().log_prob(u) - log1m_tanh_sq(u).sum(-1)

    #: its entropy is a sampled estimate: ``entropy(noise)`` takes the standard-normal draws
    entropy_draws = True

    def entropy(self, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``noise``: the draws eps (shaped like ``mean``); default torch.randn_like(mean) from
        torch's global generator."""
        eps = torch.randn_like(self.mean) if noise is None else noise
        u = self.mean + self.log_std.exp() * eps
        return super().entropy() + log1m_tanh_sq(u).sum(-1)


class Categorical:
    """Categorical over discrete actions, parameterised by (unnormalised) logits."""

    def __init__(self, logits: torch.Tensor, normalized: bool = False):
        # Normalise once; stored params are already normalised, so rebuilding them is exact.
        self.logits = logits if normalized else logits - torch.logsumexp(logits, dim=-1, keepdim=True)

    @classmethod
    def from_params(cls, params: torch.Tensor) -> "Categorical":
        return cls(params, normalized=True)

    def params(self) -> torch.Tensor:
        return self.logits

    def sample(self) -> torch.Tensor:
        return torch.multinomial(self.logits.exp(), 1).squeeze(-1)

    def mode(self) -> torch.Tensor:
        return self.logits.argmax(-1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        logits = self.logits.expand(*actions.shape, self.logits.shape[-1])  # broadcast sample dims
        return logits.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.logits.exp() * self.logits).sum(-1)

    def kl(self, other: "Categorical") -> torch.Tensor:
        return (self.logits.exp() * (self.logits - other.logits)).sum(-1)
