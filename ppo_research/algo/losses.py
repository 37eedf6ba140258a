"""Policy surrogate objectives. Each class is one `loss=` option.

A loss supplies only its policy term and its own state (beta). The update owns what all losses
share: value loss, entropy bonus, gradient clipping, summing the terms. A new loss is a
``PolicyLoss`` with a per-sample ``surrogate`` (the objective to maximise, for each sample's
ratio, advantage, ...) plus a YAML file in conf/loss/ (docs/extending.md); written with tensor
operations, it runs in a single run and in a population (where each member's samples are a row
of the batch) as it is.

Notation as in the seed notebook: r_t = pi_theta(a_t|s_t) / pi_old(a_t|s_t), A_t the advantage.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import ConfigError
from .distributions import Distribution

GRANULARITIES = ("iteration", "epoch", "minibatch")


@dataclass
class PolicyBatch:
    """What a policy term may depend on, for one minibatch."""

    log_prob: torch.Tensor  # log pi_theta(a|s), with gradient
    old_log_prob: torch.Tensor  # log pi_old(a|s), from the rollout
    advantages: torch.Tensor
    dist: Distribution  # pi_theta(.|s)
    old_dist: Distribution  # pi_old(.|s)

    #: [S, B] valid samples of a population's padded minibatch (algo/update.py); None: all valid
    mask: Optional[torch.Tensor] = None

    def __post_init__(self):
        self.log_ratio = self.log_prob - self.old_log_prob
        self.ratio = self.log_ratio.exp()
        if self.mask is not None:
            self._count = self.mask.sum(-1, keepdim=True)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """The minibatch mean of per-sample ``x``: a scalar for one run's [B]; for a population's
        [S, B], each member's mean over its valid samples, [S, 1]."""
        if x.dim() == 1:
            return x.mean()
        if self.mask is None:
            return x.mean(-1, keepdim=True)
        return torch.where(self.mask, x, 0.0).sum(-1, keepdim=True) / self._count


class PolicyLoss:
    """Interface of a policy objective; the base class is a loss with no state."""

    #: clip range, for losses that clip; the trainer reports clip_fraction against it
    epsilon: Optional[float] = None
    #: when the loss's state adapts to the measured KL: one of GRANULARITIES, or None
    adapt_every: Optional[str] = None

    def __call__(self, batch: PolicyBatch) -> torch.Tensor:
        """The policy term to minimise: minus the minibatch mean of ``surrogate``. A scalar, or
        [S, 1] for a population's minibatch (``batch.mean`` takes each member's mean)."""
        return -batch.mean(self.surrogate(batch))

    def surrogate(self, batch: PolicyBatch) -> torch.Tensor:
        """The objective to maximise, per sample: a tensor shaped like ``batch.ratio``. In a
        population, members' values of ``MEMBER_VALUES`` (epsilon, beta) arrive as [S, 1]
        tensors that broadcast over each member's row (``member_view``)."""
        raise NotImplementedError

    def divergence(self, batch: PolicyBatch) -> torch.Tensor:
        """Per-sample divergence the loss measures; default the analytic KL(pi_old || pi_theta)."""
        return batch.old_dist.kl(batch.dist)

    def observe_kl(self, kl: float, granularity: str) -> None:
        """Called with the mean divergence from pi_old after every iteration, and also after
        every epoch or minibatch when ``adapt_every`` asks for it."""

    def schedule(self, alpha: float) -> None:
        """Called before every iteration with alpha, the fraction of the run still to go (1 at the
        start, linearly down to 1/iterations): a loss whose settings anneal with it (the PPO
        paper's Atari clip 0.1 x alpha) sets them here."""

    def log_values(self) -> dict[str, float]:
        """The loss's state for the metrics row of the iteration that just ended. Called once per
        iteration, after its ADAPT step; statistics over the iteration restart from here."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _check_epsilon(epsilon, key="loss.epsilon"):
    if epsilon is not None and not 0.0 < epsilon < 1.0:
        raise ConfigError(key, epsilon, "a value in (0, 1)")


class ClipLoss(PolicyLoss):
    """L^CLIP = E[min(r A, clip(r, 1-eps, 1+eps) A)]; with ``anneal_epsilon`` eps = epsilon x alpha,
    alpha falling linearly from 1 over the run (the PPO paper's Atari setting, Table 5)."""

    def __init__(self, epsilon: float = 0.2, anneal_epsilon: bool = False):
        _check_epsilon(epsilon)
        self.epsilon = self.initial_epsilon = epsilon
        self.anneal_epsilon = anneal_epsilon

    def schedule(self, alpha: float) -> None:
        if self.anneal_epsilon:
            self.epsilon = self.initial_epsilon * alpha

    def log_values(self) -> dict[str, float]:
        return {"epsilon": self.epsilon} if self.anneal_epsilon else {}

    def surrogate(self, batch: PolicyBatch) -> torch.Tensor:
        return clipped_surrogate(batch.ratio, batch.advantages, self.epsilon)


class CPILoss(PolicyLoss):
    """L^CPI = E[r A]: no clipping and no penalty (the paper's first row)."""

    def surrogate(self, batch: PolicyBatch) -> torch.Tensor:
        return batch.ratio * batch.advantages


class PGLoss(PolicyLoss):
    """L^PG = E[log pi_theta(a|s) A]: the plain policy gradient, no ratio, clip or penalty.

    Its gradient is E[grad log pi_theta A], the likelihood-ratio (REINFORCE with a baseline)
    estimator, which equals L^CPI's gradient at theta = theta_old. With ``algo.num_epochs`` > 1
    every later step takes that gradient at the current theta on pi_old's samples with no
    importance correction (use num_epochs=1 for the textbook on-policy estimator).
    """

    def surrogate(self, batch: PolicyBatch) -> torch.Tensor:
        return batch.log_prob * batch.advantages


#: the loss hyperparameters members of a population may differ in (run/loop/train.py)
MEMBER_VALUES = ("epsilon", "beta")


def member_view(losses: list[PolicyLoss], device: Optional[torch.device] = None) -> PolicyLoss:
    """One loss object computing every member's term: the members' own values of
    ``MEMBER_VALUES`` as [S, 1] tensors (on ``device``) where they differ (their state, e.g. an adapted beta,
    stays in the members' objects). Members of different ``SURROGATES`` kinds are computed as
    the KL penalty with epsilon = inf for no clipping and beta = 0 for no penalty."""
    if len(losses) == 1:
        return losses[0]
    if len({type(loss) for loss in losses}) > 1 or len({loss.epsilon is None for loss in losses}) > 1:
        return _surrogate_view(losses, device)  # other kinds, or a penalty with and one without clipping
    view = copy.copy(losses[0])
    for name in MEMBER_VALUES:
        values = [getattr(loss, name, None) for loss in losses]
        if values[0] is not None and any(v != values[0] for v in values):
            setattr(view, name, torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1))
    return view


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, epsilon: float) -> torch.Tensor:
    return torch.min(ratio * advantages, ratio.clamp(1.0 - epsilon, 1.0 + epsilon) * advantages)


class KLPenaltyLoss(PolicyLoss):
    """L^KLPEN = E[r A] - beta * KL, with beta adapted by the 1.5 / 2 rule or held fixed.

    Defaults are the paper's: KL(pi_old || pi_theta) computed analytically, beta adapted once
    per policy update from d = the batch mean KL: d < d_targ / 1.5 halves beta, d > d_targ * 1.5
    doubles it. ``epsilon`` adds the clipped surrogate in place of r A (clip + penalty).
    """

    def __init__(
        self,
        beta: float = 1.0,
        kl_target: float = 0.01,
        adaptive: bool = True,
        adapt_every: str = "iteration",
        direction: str = "forward",
        estimator: str = "analytic",
        low_threshold: float = 1.5,
        high_threshold: float = 1.5,
        factor: float = 2.0,
        beta_min: Optional[float] = None,
        beta_max: Optional[float] = None,
        epsilon: Optional[float] = None,
    ):
        if beta < 0:
            raise ConfigError("loss.beta", beta, "a value >= 0")
        if adaptive and beta == 0:
            raise ConfigError("loss.beta", beta, "a value > 0 when adaptive (halving or doubling 0 stays 0)")
        if kl_target <= 0:
            raise ConfigError("loss.kl_target", kl_target, "a value > 0")
        if adapt_every not in GRANULARITIES:
            raise ConfigError("loss.adapt_every", adapt_every, f"one of {', '.join(GRANULARITIES)}")
        if direction not in ("forward", "reverse"):
            raise ConfigError("loss.direction", direction, "forward (KL(old||new)) or reverse (KL(new||old))")
        if estimator not in ("analytic", "k1", "k3"):
            raise ConfigError("loss.estimator", estimator, "one of analytic, k1, k3")
        for key, value in (("loss.low_threshold", low_threshold), ("loss.high_threshold", high_threshold),
                           ("loss.factor", factor)):
            if value < 1.0:
                raise ConfigError(key, value, "a value >= 1")
        if beta_min is not None and beta_max is not None and beta_min > beta_max:
            raise ConfigError("loss.beta_min", beta_min, f"at most loss.beta_max={beta_max}")
        _check_epsilon(epsilon)
        self.beta = float(beta)
        self.kl_target = kl_target
        self.adapt_every = adapt_every if adaptive else None
        self.direction, self.estimator = direction, estimator
        self.low_threshold, self.high_threshold, self.factor = low_threshold, high_threshold, factor
        self.beta_min, self.beta_max = beta_min, beta_max
        self.epsilon = epsilon
        self._restart_window()

    def surrogate(self, batch: PolicyBatch) -> torch.Tensor:
        """r A, or the clipped surrogate with ``epsilon`` (the penalty is taken apart: ``__call__``)."""
        if self.epsilon is None:
            return batch.ratio * batch.advantages
        return clipped_surrogate(batch.ratio, batch.advantages, self.epsilon)

    def __call__(self, batch: PolicyBatch) -> torch.Tensor:
        """-(E[surrogate] - beta E[KL]): the two means taken apart, as the paper writes it."""
        return -(batch.mean(self.surrogate(batch)) - self.beta * batch.mean(self.divergence(batch)))

    def divergence(self, batch: PolicyBatch) -> torch.Tensor:
        if self.estimator == "analytic":
            if self.direction == "forward":
                return batch.old_dist.kl(batch.dist)
            return batch.dist.kl(batch.old_dist)
        # Sample estimators with a ~ pi_old; reverse KL is importance-weighted by r.
        r, log_r = batch.ratio, batch.log_ratio
        if self.direction == "forward":
            return -log_r if self.estimator == "k1" else (r - 1.0) - log_r
        return r * log_r if self.estimator == "k1" else r * log_r - (r - 1.0)

    def observe_kl(self, kl: float, granularity: str) -> None:
        if granularity == self.adapt_every:
            self.beta = self.next_beta(self.beta, kl)
            self._low, self._high = min(self._low, self.beta), max(self._high, self.beta)
            self._kl_last = kl

    def _restart_window(self) -> None:
        """Start an iteration's record of beta: its range (from the current value) and the
        last d the rule saw."""
        self._low = self._high = self.beta
        self._kl_last = float("nan")

    def next_beta(self, beta: float, d: float) -> float:
        """The adaptive rule: one step of beta given the measured divergence d."""
        if d < self.kl_target / self.low_threshold:
            beta = beta / self.factor
        elif d > self.kl_target * self.high_threshold:
            beta = beta * self.factor
        if self.beta_min is not None:
            beta = max(beta, self.beta_min)
        if self.beta_max is not None:
            beta = min(beta, self.beta_max)
        return beta

    def log_values(self) -> dict[str, float]:
        """``beta``: its value at the end of the iteration (what the next iteration starts from).
        When beta adapts within an iteration (adapt_every = epoch | minibatch) also ``beta_min``
        and ``beta_max``, the range of the values it took in the iteration (its starting value
        included), and ``kl_last``, the last d the rule saw (nan if the rule never ran)."""
        values = {"beta": self.beta}
        if self.adapt_every in ("epoch", "minibatch"):
            values.update(beta_min=self._low, beta_max=self._high, kl_last=self._kl_last)
        self._restart_window()
        return values

    def state_dict(self) -> dict:
        return {"beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        self.beta = float(state["beta"])
        self._restart_window()


#: One family: each is E[min(r A, clip(r, 1-eps, 1+eps) A)] - beta KL for some epsilon (inf: no
#: clipping, where the min is r A exactly) and beta (0: no penalty), so one population may mix them.
SURROGATES = (CPILoss, ClipLoss, KLPenaltyLoss)
_UNPENALISED = KLPenaltyLoss(beta=0.0, adaptive=False)  # the view's settings when no member has a penalty


def _surrogate_view(losses: list[PolicyLoss], device: Optional[torch.device]) -> "KLPenaltyLoss":
    """The KL penalty computing members of mixed ``SURROGATES`` kinds, or with and without
    epsilon. Its other settings are its penalised members' (which share them), or the defaults:
    run/loop/train.py groups only such."""
    kinds = {type(loss).__name__ for loss in losses if type(loss) not in SURROGATES}
    if kinds:
        raise ValueError(f"members with and without epsilon, or of different kinds, are computed together only "
                         f"among {', '.join(c.__name__ for c in SURROGATES)}, not {', '.join(sorted(kinds))}")
    penalised = [loss for loss in losses if isinstance(loss, KLPenaltyLoss)]
    view = copy.copy(penalised[0] if penalised else _UNPENALISED)
    epsilons = [float("inf") if loss.epsilon is None else loss.epsilon for loss in losses]
    view.epsilon = None if all(e == float("inf") for e in epsilons) else torch.tensor(epsilons, device=device).view(-1, 1)
    betas = [loss.beta if isinstance(loss, KLPenaltyLoss) else 0.0 for loss in losses]
    view.beta = torch.tensor(betas, device=device).view(-1, 1)
    return view
