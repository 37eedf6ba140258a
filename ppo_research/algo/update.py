"""The PPO update (step 3 of the algorithm): K epochs of minibatch Adam on one batch.

Batch in, statistics out. The loss object supplies the policy term (and its beta); this
module owns what every loss shares: the value loss, the entropy bonus, advantage
standardisation, gradient clipping, early stopping on KL and the divergence measurements.

    loss = policy term + c_v * value loss - c_e * entropy

The value loss is 0.5 (V - R)^2 or the Huber loss of V - R (quadratic within huber_delta,
linear beyond), optionally against V clipped around V_old (the max of the two). With
``recompute_advantages`` the advantages and targets are re-estimated with the current value
function at the start of every epoch after the first (``advantages.AdvantageRefresh``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..errors import NonFiniteError
from .batch import Batch
from .losses import PolicyBatch, PolicyLoss
from .networks import ActorCritic
from .optim import FlatAdam

#: clip_fraction is reported against the loss's epsilon, or this for losses without one
DEFAULT_CLIP_REPORT = 0.2


@dataclass
class UpdateSettings:
    """The update's options (``algo.*`` in the config)."""

    num_epochs: int = 10
    minibatch_size: int = 64
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    max_grad_norm: Optional[float] = 0.5
    clip_value_loss: Optional[float] = None
    normalize_advantage: str = "minibatch"  # off | batch | minibatch
    # stop the epochs before any minibatch whose k3 estimate of KL(pi_old || pi), measured on that
    # minibatch before its step, exceeds 1.5 x target_kl
    target_kl: Optional[float] = None
    value_loss: str = "mse"  # mse: 0.5 (V - R)^2 | huber: Huber loss with huber_delta
    huber_delta: float = 1.0
    recompute_advantages: bool = False  # re-estimate advantages with the current V each epoch after the first


VALUE_LOSSES = ("mse", "huber")

#: what the update returns, instead of statistics, for a batch with no sample
SKIPPED = {"update_skipped": True, "epochs": 0}


def minibatch_slices(n: int, size: int) -> list[slice]:
    """Split n samples into round(n / size) near-equal minibatches.

    n varies with the number of masked reset steps, so fixed-size chunks would leave a ragged
    last minibatch (possibly of one sample) that Adam would weigh like a full one.
    """
    count = max(1, round(n / size))
    edges = [round(i * n / count) for i in range(count + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def kl_k3(log_ratio: torch.Tensor) -> float:
    """The k3 estimate of KL(pi_old || pi): mean of (r - 1) - log r (never negative)."""
    return ((log_ratio.exp() - 1.0) - log_ratio).mean().item()


def huber(error: torch.Tensor, delta: float) -> torch.Tensor:
    """Elementwise Huber loss: 0.5 e^2 for |e| <= delta, delta (|e| - delta / 2) beyond."""
    abs_error = error.abs()
    return torch.where(abs_error <= delta, 0.5 * error.pow(2), delta * (abs_error - 0.5 * delta))


def standardise(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / (x.std() + 1e-8) if x.numel() > 1 else x - x.mean()


class PPOUpdate:
    def __init__(self, policy: ActorCritic, loss: PolicyLoss, optimizer: FlatAdam, settings: UpdateSettings):
        if settings.value_loss not in VALUE_LOSSES:
            raise ValueError(f"value_loss={settings.value_loss!r}: expected one of {VALUE_LOSSES}")
        self.policy, self.loss, self.optimizer, self.settings = policy, loss, optimizer, settings

    def __call__(self, batch: Batch, refresh: Optional[Callable[[], tuple[torch.Tensor, torch.Tensor]]] = None) -> dict:
        """K epochs over ``batch``; returns the mean loss terms, the epochs run, and the
        divergence of the updated policy from pi_old over the whole batch.

        ``refresh`` (needed with ``recompute_advantages``) returns the batch's (advantages,
        returns) re-estimated with the current value function. A batch with no sample (every env
        was on a reset step: possible only with num_steps = 1) takes no step and returns
        ``SKIPPED``. If target_kl stops the update before its first step, the loss terms and
        clip_fraction are nan (none was computed) and the policy is unchanged.
        """
        s = self.settings
        if len(batch) == 0:
            return dict(SKIPPED)
        if s.recompute_advantages and refresh is None:
            raise ValueError("recompute_advantages needs a refresh (advantages.AdvantageRefresh)")
        if s.normalize_advantage == "batch":
            batch.advantages = standardise(batch.advantages)
        minibatches = minibatch_slices(len(batch), s.minibatch_size)
        terms, log_ratios = [], []  # per minibatch, reduced once at the end (no sync per step)
        stop = False
        for epoch in range(s.num_epochs):
            if epoch > 0 and s.recompute_advantages:
                batch.advantages, batch.returns = refresh()
                if s.normalize_advantage == "batch":
                    batch.advantages = standardise(batch.advantages)
            shuffled = batch.permuted(torch.randperm(len(batch)))
            steps_before = len(terms)
            for idx in minibatches:
                pb, value = self.policy_batch(shuffled, idx)
                if s.target_kl is not None and kl_k3(pb.log_ratio.detach()) > 1.5 * s.target_kl:
                    stop = True  # the policy has moved far enough: stop before this step
                    break
                policy_loss = self.loss(pb)
                value_loss = self.value_loss(value, shuffled.values[idx], shuffled.returns[idx])
                entropy = pb.dist.entropy().mean()
                total = policy_loss + s.vf_coef * value_loss - s.ent_coef * entropy
                if not torch.isfinite(total):
                    _raise_non_finite(policy_loss, value_loss, entropy, epoch, len(terms))
                self.step(total)

                terms.append(torch.stack([policy_loss, value_loss, entropy]).detach())
                log_ratios.append(pb.log_ratio.detach())  # pre-step, as PPO reports them
                if self.loss.adapt_every == "minibatch":  # d after this step, on this minibatch
                    self.loss.observe_kl(self.divergence(shuffled, idx)["kl"], "minibatch")
            if self.loss.adapt_every == "epoch" and len(terms) > steps_before:  # only after an epoch that stepped
                self.loss.observe_kl(self.divergence(batch)["kl"], "epoch")
            if stop:
                break
        self._check_parameters()
        return {**self._summarise(terms, log_ratios), "epochs": epoch + 1, **self.divergence(batch)}

    def step(self, total: torch.Tensor) -> None:
        """One Adam step on ``total``, with global gradient-norm clipping."""
        self.optimizer.zero_grad()
        total.backward()
        if self.settings.max_grad_norm is not None:
            self.optimizer.clip_grad_norm(self.settings.max_grad_norm)
        self.optimizer.step()

    def policy_batch(self, batch: Batch, idx=slice(None), with_value: bool = True):
        """The policy term's inputs on ``batch[idx]`` (and V(s) when ``with_value``)."""
        if with_value:
            dist, value = self.policy(batch.obs[idx])
        else:
            dist, value = self.policy.distribution(batch.obs[idx]), None
        advantages = batch.advantages[idx]
        if self.settings.normalize_advantage == "minibatch" and with_value:
            advantages = standardise(advantages)
        pb = PolicyBatch(log_prob=dist.log_prob(batch.actions[idx]), old_log_prob=batch.log_probs[idx],
                         advantages=advantages, dist=dist,
                         old_dist=self.policy.distribution_from_params(batch.dist_params[idx]))
        return pb, value

    def value_loss(self, value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
        s = self.settings
        clip = s.clip_value_loss
        if s.value_loss == "huber":
            loss = huber(value - returns, s.huber_delta)
            if clip is not None:
                clipped = old_value + (value - old_value).clamp(-clip, clip)
                loss = torch.max(loss, huber(clipped - returns, s.huber_delta))
            return loss.mean()
        loss = (value - returns).pow(2)
        if clip is not None:
            clipped = old_value + (value - old_value).clamp(-clip, clip)
            loss = torch.max(loss, (clipped - returns).pow(2))
        return 0.5 * loss.mean()

    @torch.no_grad()
    def divergence(self, batch: Batch, idx=slice(None)) -> dict:
        """How far the current policy is from pi_old on ``batch[idx]``: the d the beta rule acts
        on (the loss's own divergence), the k3 estimate, and the ratio range."""
        pb, _ = self.policy_batch(batch, idx, with_value=False)
        return {"kl": self.loss.divergence(pb).mean().item(), "approx_kl_k3": kl_k3(pb.log_ratio),
                "ratio_min": pb.ratio.min().item(), "ratio_max": pb.ratio.max().item()}

    def _summarise(self, terms: list, log_ratios: list) -> dict:
        if not terms:  # target_kl stopped before the first step: nothing was computed
            nan = float("nan")
            return {"policy_loss": nan, "value_loss": nan, "entropy": nan, "clip_fraction": nan}
        policy_loss, value_loss, entropy = torch.stack(terms).mean(0).tolist()
        log_ratio = torch.cat(log_ratios)
        clip_eps = self.loss.epsilon if self.loss.epsilon is not None else DEFAULT_CLIP_REPORT
        return {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
                "clip_fraction": ((log_ratio.exp() - 1.0).abs() > clip_eps).float().mean().item()}

    def _check_parameters(self) -> None:
        for name, p in self.policy.named_parameters():
            if not torch.isfinite(p).all():
                raise NonFiniteError(f"non-finite parameter {name} after the update")


def _raise_non_finite(policy_loss, value_loss, entropy, epoch: int, minibatch: int):
    bad = [name for name, term in (("policy_loss", policy_loss), ("value_loss", value_loss),
                                   ("entropy", entropy)) if not torch.isfinite(term)]
    raise NonFiniteError(f"non-finite {', '.join(bad) or 'total loss'}", f"epoch {epoch + 1}, minibatch {minibatch + 1}")
