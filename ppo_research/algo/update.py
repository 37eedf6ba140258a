"""The PPO update (step 3 of the algorithm): K epochs of minibatch Adam on one batch.

Batch in, statistics out. ``PPOUpdate.ppo_step`` is one minibatch step, as in the paper and in
CleanRL's inner loop:

    loss = policy term + c_v * value loss - c_e * entropy

The loss object supplies the policy term (and its beta); this module owns what every loss
shares: the value loss (0.5 (V - R)^2 or Huber, optionally clipped around V_old), the entropy
bonus, advantage standardisation, gradient clipping, early stopping on KL and the KL the beta
rule observes. With ``recompute_advantages`` the advantages and targets are re-estimated with the
current value function at the start of every epoch after the first.

The same step serves a population: S members, each with its own batch, loss, shuffling and
minibatch split, step together through one stacked forward (``algo/stacking.py``). The step
sees them only through its ``Minibatch`` (who steps, ``stop_where``); padding, masks and
per-member stopping live in ``algo/members.py``, what the update reports in
``algo/update_report.py``. With S = 1 the tensors are the plain [B] ones of a single run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..errors import NonFiniteError
from .batch import Batch
from .hand_gradient import hand_gradient_for
from .losses import PolicyBatch, PolicyLoss, member_view
from .members import SKIPPED, MemberBatches, Minibatch, minibatch_slices  # noqa: F401 (minibatch_slices: API)
from .networks import ActorCritic
from .optim import FlatAdam
from .update_report import UpdateReport


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
    fast_paths: bool = True  # the hand-written gradient where it applies (algo/hand_gradient.py); false: autograd


VALUE_LOSSES = ("mse", "huber")

Refresh = Callable[[], tuple[torch.Tensor, torch.Tensor]]


def kl_k3(log_ratio: torch.Tensor) -> float:
    """The k3 estimate of KL(pi_old || pi): mean of (r - 1) - log r (never negative)."""
    return ((log_ratio.exp() - 1.0) - log_ratio).mean().item()


def huber(error: torch.Tensor, delta: float) -> torch.Tensor:
    """Elementwise Huber loss: 0.5 e^2 for |e| <= delta, delta (|e| - delta / 2) beyond."""
    abs_error = error.abs()
    return torch.where(abs_error <= delta, 0.5 * error.pow(2), delta * (abs_error - 0.5 * delta))


def standardise(x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(x - mean) / (std + 1e-8) over the samples (the last dim; per member for [S, B], over the
    ``mask``ed samples). A single sample is only centred."""
    if x.dim() == 1:
        return (x - x.mean()) / (x.std() + 1e-8) if x.numel() > 1 else x - x.mean()
    if mask is None:
        if x.shape[-1] == 1:
            return x - x.mean(-1, keepdim=True)
        return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-8)
    count = mask.sum(-1, keepdim=True)
    centred = x - torch.where(mask, x, 0.0).sum(-1, keepdim=True) / count.clamp(min=1)
    var = torch.where(mask, centred.pow(2), 0.0).sum(-1, keepdim=True) / (count - 1).clamp(min=1)
    return torch.where(count > 1, centred / (var.sqrt() + 1e-8), centred)


class PPOUpdate:
    """K epochs of minibatch Adam for one network, or for a population's members.

    ``policies``/``losses``: one network and its loss, or the members' (the networks'
    parameters must be the ``optimizer``'s). ``ent_coefs``: per-member entropy coefficients
    (default ``settings.ent_coef``). ``generators``: member k's random draws (minibatch
    shuffling, a sampled entropy estimate's noise) come from ``generators[k]``; default torch's
    global generator.
    """

    def __init__(self, policies: ActorCritic | Sequence[ActorCritic], losses: PolicyLoss | Sequence[PolicyLoss],
                 optimizer: FlatAdam, settings: UpdateSettings, ent_coefs: Optional[Sequence[float]] = None,
                 generators: Optional[Sequence[torch.Generator]] = None):
        if settings.value_loss not in VALUE_LOSSES:
            raise ValueError(f"value_loss={settings.value_loss!r}: expected one of {VALUE_LOSSES}")
        self.members = [policies] if isinstance(policies, nn.Module) else list(policies)
        self.losses = [losses] if isinstance(losses, PolicyLoss) else list(losses)
        self.size = len(self.members)
        if len(self.losses) != self.size or optimizer.size != self.size:
            raise ValueError(f"{self.size} networks, {len(self.losses)} losses, an optimizer of {optimizer.size}")
        self.optimizer, self.settings = optimizer, settings
        self.net = optimizer.module  # all members at once
        coefs = [settings.ent_coef] * self.size if ent_coefs is None else [float(c) for c in ent_coefs]
        self.device = self.policy.device  # the networks' (``device=``): the batches are moved there
        self.ent_coef = coefs[0] if len(set(coefs)) == 1 else torch.tensor(coefs, device=self.device).view(-1, 1)
        self.no_entropy_bonus = all(c == 0.0 for c in coefs)  # the paper's MuJoCo setting
        self.generators = generators

    # one network's update keeps the single-run names
    @property
    def policy(self) -> ActorCritic:
        return self.members[0]

    @property
    def loss(self) -> PolicyLoss:
        return self.losses[0]

    @loss.setter
    def loss(self, loss: PolicyLoss) -> None:
        self.losses[0] = loss

    def __call__(self, batches: Batch | Sequence[Batch], refreshes: Optional[Refresh | Sequence[Optional[Refresh]]] = None,
                 members: Optional[Sequence[bool]] = None):
        """K epochs over each member's batch; returns, per member, the mean loss terms, the
        epochs run and the divergence of the updated policy from pi_old over its whole batch
        (a dict; one dict, not a list, for a single ``Batch``). ``members``: which take part
        (default all); the others' entries are None.

        ``refreshes`` (needed with ``recompute_advantages``) return a member's (advantages,
        returns) re-estimated with the current value function. A batch with no sample (every
        env was on a reset step: possible only with num_steps = 1) takes no step: ``SKIPPED``.
        If target_kl stops a member before its first step, its loss terms and clip_fraction are
        nan (none was computed) and its policy is unchanged. A member whose loss or parameters
        turn non-finite gets ``{"failed": NonFiniteError}`` (raised for a single ``Batch``).
        """
        single = isinstance(batches, Batch)
        batches = [b.to(self.device) for b in ([batches] if single else batches)]
        refreshes = [refreshes] if single or refreshes is None or callable(refreshes) else list(refreshes)
        refreshes = refreshes * self.size if len(refreshes) == 1 and self.size > 1 else refreshes
        results = self._update(batches, refreshes, [True] * self.size if members is None else list(members))
        if single and "failed" in (results[0] or {}):
            raise results[0]["failed"]
        return results[0] if single else results

    def _update(self, batches: list[Batch], refreshes: list, taking_part: list[bool]) -> list[Optional[dict]]:
        s = self.settings
        members = MemberBatches(batches, taking_part, self.generators)
        if not members.anyone_active:
            return members.results
        if s.recompute_advantages and any(refreshes[k] is None for k in range(self.size) if members.active[k]):
            raise ValueError("recompute_advantages needs a refresh (advantages.AdvantageRefresh)")
        if s.normalize_advantage == "batch":
            for k, b in enumerate(batches):
                if members.active[k]:
                    b.advantages = standardise(b.advantages)
        members.lay_out(s.minibatch_size)
        report = UpdateReport(self.losses, self.device)
        hand = hand_gradient_for(self.net, member_view(self.losses, self.device), s, self.ent_coef) if s.fast_paths else None
        epochs_run = 0
        with torch.set_grad_enabled(hand is None):  # a hand-written gradient needs no graph
            for epoch in range(s.num_epochs):
                epochs_run = epoch + 1
                if epoch > 0 and s.recompute_advantages:
                    self._refresh_advantages(members, refreshes)
                for mb in members.minibatches(epoch):
                    self.ppo_step(mb, members, report, hand)
                if self._adapting("epoch") and any(members.stepped_in_epoch):  # only after an epoch that stepped
                    self._observe_kl(self._divergences(*members.whole())["kl"], members.stepped_in_epoch, "epoch")
                if not members.anyone_active:
                    break
        self._check_parameters(members.results)
        return report.summary(members.results, lambda: self._divergences(*members.whole()), members.epochs(epochs_run))

    def ppo_step(self, mb: Minibatch, members: MemberBatches, report: UpdateReport, hand=None) -> None:
        """One minibatch step of PPO (of every member at once; ``mb.stepping`` says who steps)."""
        s = self.settings
        pb, value = self.policy_batch(mb.batch, mask=mb.mask, forward=hand and hand.forward)  # pi_theta, V_theta
        if s.target_kl is not None:  # moved far enough from pi_old: stop before this step
            kl = pb.mean((pb.ratio - 1.0) - pb.log_ratio).detach().reshape(-1).tolist()  # k3 estimate
            mb.stop_where([d > 1.5 * s.target_kl for d in kl])
            if not mb.anyone_steps:
                return
        loss = member_view(self.losses, self.device)
        noise = None if self.generators is None else (lambda: members.entropy_noise(pb.dist.mean, mb))
        policy_loss, value_loss, entropy, total = self.loss_terms(loss, pb, value, mb.batch, noise)
        mb.stop_where([not finite for finite in torch.isfinite(total).reshape(-1).tolist()],
                      failure=lambda k: _non_finite(policy_loss, value_loss, entropy, k, mb.epoch, mb.number))
        if not mb.anyone_steps:
            return
        gradient = hand and (lambda: hand.backward(pb, loss, value, mb.batch.actions, mb.batch.returns,
                                                   not self.no_entropy_bonus))
        self.step(total, mb.who_steps, gradient)  # backward, clip the gradient norm, Adam
        report.record(policy_loss, value_loss, entropy, pb.ratio, mb)
        if self._adapting("minibatch"):  # d after this step, on this minibatch
            self._observe_kl(self._divergences(mb.batch, mb.mask)["kl"], mb.stepping, "minibatch")

    def loss_terms(self, loss: PolicyLoss, pb: PolicyBatch, value: torch.Tensor, batch: Batch,
                   entropy_noise: Optional[Callable[[], torch.Tensor]] = None) -> tuple[torch.Tensor, ...]:
        """(policy term, value loss, entropy, total) on one minibatch, each a scalar or [S, 1]
        (``entropy_noise``: the members' own draws for a sampled entropy estimate)."""
        s = self.settings
        policy_loss = loss(pb)
        value_loss = self.value_loss(value, batch.values, batch.returns, pb)
        if self.no_entropy_bonus:  # reported only: kept out of the graph the backward walks
            with torch.no_grad():
                entropy = pb.mean(self._entropy(pb.dist, entropy_noise))
            return policy_loss, value_loss, entropy, policy_loss + s.vf_coef * value_loss
        entropy = pb.mean(self._entropy(pb.dist, entropy_noise))
        return policy_loss, value_loss, entropy, policy_loss + s.vf_coef * value_loss - self.ent_coef * entropy

    def _refresh_advantages(self, members: MemberBatches, refreshes: list) -> None:
        """recompute_advantages: each stepping member's advantages and targets re-estimated with
        its current value function."""
        for k, b in enumerate(members.batches):
            if members.active[k]:
                advantages, b.returns = refreshes[k]()
                b.advantages = standardise(advantages) if self.settings.normalize_advantage == "batch" else advantages
        members.refresh(("advantages", "returns"))

    def _observe_kl(self, kls: list[float], who: list[bool], granularity: str) -> None:
        for k, loss in enumerate(self.losses):
            if who[k]:
                loss.observe_kl(kls[k], granularity)

    def _adapting(self, granularity: str) -> bool:
        """Whether some member's loss adapts its state at this granularity (a member with a fixed
        beta shares a population with adaptive ones: ``loss.adaptive`` is a member key)."""
        return any(loss.adapt_every == granularity for loss in self.losses)

    @staticmethod
    def _entropy(dist, noise: Optional[Callable[[], torch.Tensor]]) -> torch.Tensor:
        """The entropy per sample (a sampled estimate, ``entropy_draws``, takes ``noise()``)."""
        if noise is None or not getattr(dist, "entropy_draws", False):
            return dist.entropy()
        return dist.entropy(noise())

    def step(self, total: torch.Tensor, members: Optional[torch.Tensor] = None,
             gradient: Optional[Callable[[], None]] = None) -> None:
        """One Adam step on ``total`` (per member: each member's gradient is its own term's),
        with per-member global gradient-norm clipping; ``members``: who steps (default all).
        ``gradient``: writes the gradient of ``total`` by hand (algo/hand_gradient.py) instead of
        autograd's backward."""
        if gradient is not None:  # writes every parameter's gradient
            gradient()
        else:
            self.optimizer.zero_grad()
            (total if total.dim() == 0 else total.sum()).backward()
        if self.settings.max_grad_norm is not None:
            self.optimizer.clip_grad_norm(self.settings.max_grad_norm)
        self.optimizer.step(members)

    def policy_batch(self, batch: Batch, idx=slice(None), with_value: bool = True,
                     mask: Optional[torch.Tensor] = None, forward: Optional[Callable] = None):
        """The policy term's inputs on ``batch[idx]`` (and V(s) when ``with_value``); a
        population's batch is [S, B, ...] with its ``mask``. ``forward``: computes (dist, value)
        in place of the network's own call (a ``HandGradient``'s)."""
        whole = idx == slice(None) or batch.obs.dim() == 3
        pick = (lambda t: t) if whole else (lambda t: t[idx])  # noqa: E731
        obs, net = pick(batch.obs), self.net
        if with_value:
            dist, value = (forward or net)(obs)
        else:
            dist, value = net.distribution(obs), None
        advantages = pick(batch.advantages)
        if self.settings.normalize_advantage == "minibatch" and with_value:
            advantages = standardise(advantages, mask)
        pb = PolicyBatch(log_prob=dist.log_prob(pick(batch.actions)), old_log_prob=pick(batch.log_probs),
                         advantages=advantages, dist=dist,
                         old_dist=net.distribution_from_params(pick(batch.dist_params)), mask=mask)
        return pb, value

    def value_loss(self, value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor,
                   batch: Optional[PolicyBatch] = None) -> torch.Tensor:
        s = self.settings
        clip = s.clip_value_loss
        mean = batch.mean if batch is not None else (lambda x: x.mean())  # noqa: E731
        if s.value_loss == "huber":
            loss = huber(value - returns, s.huber_delta)
            if clip is not None:
                clipped = old_value + (value - old_value).clamp(-clip, clip)
                loss = torch.max(loss, huber(clipped - returns, s.huber_delta))
            return mean(loss)
        loss = (value - returns).pow(2)
        if clip is not None:
            clipped = old_value + (value - old_value).clamp(-clip, clip)
            loss = torch.max(loss, (clipped - returns).pow(2))
        return 0.5 * mean(loss)

    @torch.no_grad()
    def divergence(self, batch: Batch, idx=slice(None)) -> dict:
        """How far the current policy is from pi_old on ``batch[idx]`` (one network): the d the
        beta rule acts on (the loss's own divergence), the k3 estimate, and the ratio range."""
        pb, _ = self.policy_batch(batch, idx, with_value=False)
        return {"kl": self.loss.divergence(pb).mean().item(), "approx_kl_k3": kl_k3(pb.log_ratio),
                "ratio_min": pb.ratio.min().item(), "ratio_max": pb.ratio.max().item()}

    @torch.no_grad()
    def _divergences(self, batch: Batch, mask: Optional[torch.Tensor]) -> dict[str, list[float]]:
        """``divergence`` per member of a (padded) population batch: lists of S floats."""
        if self.size == 1:
            return {key: [value] for key, value in self.divergence(batch).items()}
        pb, _ = self.policy_batch(batch, with_value=False, mask=mask)
        kl = pb.mean(member_view(self.losses, self.device).divergence(pb))
        k3 = pb.mean((pb.ratio - 1.0) - pb.log_ratio)
        valid = mask if mask is not None else torch.ones_like(pb.ratio, dtype=torch.bool)
        low = torch.where(valid, pb.ratio, float("inf")).amin(-1)
        high = torch.where(valid, pb.ratio, float("-inf")).amax(-1)
        return {"kl": kl.reshape(-1).tolist(), "approx_kl_k3": k3.reshape(-1).tolist(),
                "ratio_min": low.tolist(), "ratio_max": high.tolist()}

    def _check_parameters(self, results: list) -> None:
        finite = torch.isfinite(self.optimizer.rows).all(1).tolist()
        for k, ok in enumerate(finite):
            if not ok and results[k] is not None and "failed" not in results[k] and "update_skipped" not in results[k]:
                name = next(name for name, p in self.members[k].named_parameters() if not torch.isfinite(p).all())
                results[k]["failed"] = NonFiniteError(f"non-finite parameter {name} after the update")


def _non_finite(policy_loss, value_loss, entropy, member: int, epoch: int, minibatch: int) -> NonFiniteError:
    pick = (lambda t: t.reshape(-1)[member]) if policy_loss.dim() > 0 else (lambda t: t)  # noqa: E731
    bad = [name for name, term in (("policy_loss", policy_loss), ("value_loss", value_loss),
                                   ("entropy", entropy)) if not torch.isfinite(pick(term))]
    return NonFiniteError(f"non-finite {', '.join(bad) or 'total loss'}", f"epoch {epoch + 1}, minibatch {minibatch + 1}")
