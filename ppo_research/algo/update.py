"""The PPO update (step 3 of the algorithm): K epochs of minibatch Adam on one batch.

Batch in, statistics out. The loss object supplies the policy term (and its beta); this
module owns what every loss shares: the value loss, the entropy bonus, advantage
standardisation, gradient clipping, early stopping on KL and the divergence measurements.

    loss = policy term + c_v * value loss - c_e * entropy

The value loss is 0.5 (V - R)^2 or the Huber loss of V - R (quadratic within huber_delta,
linear beyond), optionally against V clipped around V_old (the max of the two). With
``recompute_advantages`` the advantages and targets are re-estimated with the current value
function at the start of every epoch after the first (``advantages.AdvantageRefresh``).

One update serves a population (``algo/stacking.py``): S members, each with its own batch,
loss object, shuffling and minibatch split, step together through one stacked forward per
minibatch. Members' batches differ in length (reset steps are masked out), so minibatch j of
every member is padded to the longest and means are taken over each member's valid samples
(``PolicyBatch.mean``). A member takes no step once its minibatches are used up, target_kl
stops it, or its loss turns non-finite (it is reported failed; the others go on). With S = 1
nothing is padded and the tensors are the plain [B] ones of a single run.
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
FIELDS = ("obs", "actions", "log_probs", "dist_params", "values", "advantages", "returns")

#: what the update returns, instead of statistics, for a batch with no sample
SKIPPED = {"update_skipped": True, "epochs": 0}

Refresh = Callable[[], tuple[torch.Tensor, torch.Tensor]]


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


class _Padded:
    """The members' batches as [S, N_max, ...] tensors (a member's rows past its length are
    padding, ``mask`` False). For one member: its own [N, ...] tensors, no mask."""

    def __init__(self, batches: Sequence[Batch]):
        self.lengths = [len(b) for b in batches]
        self.single = len(batches) == 1
        width = max(self.lengths)
        self.mask = None
        if not self.single and min(self.lengths) < width:
            self.mask = torch.arange(width)[None, :] < torch.tensor(self.lengths)[:, None]
        self.fields = {}
        for name in FIELDS:
            self.fields[name] = self._pad([getattr(b, name) for b in batches], width)

    def _pad(self, tensors: list[torch.Tensor], width: int) -> torch.Tensor:
        if self.single:
            return tensors[0]
        if all(len(t) == width for t in tensors):
            return torch.stack(tensors)
        out = tensors[0].new_zeros((len(tensors), width, *tensors[0].shape[1:]))
        for k, t in enumerate(tensors):
            out[k, :len(t)] = t
        return out

    def refill(self, batches: Sequence[Batch], names: Sequence[str]) -> None:
        """Pad ``names`` again from ``batches`` (the same lengths as before; the other fields stand)."""
        for name in names:
            self.fields[name] = self._pad([getattr(b, name) for b in batches], max(self.lengths))

    def batch(self) -> Batch:
        return Batch(*(self.fields[name] for name in FIELDS))


class _EpochLayout:
    """Where each member's shuffled samples go in an epoch's gathered [S, width] tensors:
    minibatch j of every member side by side in columns ``cols`` (as wide as the longest
    member's minibatch j), a member's shorter minibatch padded and masked. Fixed for a whole
    update: the members' sample counts and splits do not change between epochs."""

    def __init__(self, slices: list[list[slice]]):
        S, count = len(slices), max(len(sl) for sl in slices)
        self.destinations = [[] for _ in range(S)]  # per member: column of each of its shuffled positions
        self.minibatches = []  # per j: (columns, mask or None, lengths)
        start = 0
        for j in range(count):
            lengths = [sl[j].stop - sl[j].start if j < len(sl) else 0 for sl in slices]
            width = max(lengths)
            for k in range(S):
                self.destinations[k].append(torch.arange(start, start + lengths[k]))
            mask = None
            if min(lengths) < width:
                mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
            self.minibatches.append((slice(start, start + width), mask, lengths))
            start += width
        self.width = start
        self.destinations = [torch.cat(d) for d in self.destinations]


class _Members:
    """Where each member stands during one update: its result (None: not taking part; SKIPPED:
    no sample; {} while it trains, ``failed`` if it diverged), whether it still steps, and the
    epoch (1-based) in which it stopped early (0: it did not)."""

    def __init__(self, batches: Sequence[Batch], taking_part: list[bool]):
        self.results: list[Optional[dict]] = [None if not part else (dict(SKIPPED) if len(b) == 0 else {})
                                              for part, b in zip(taking_part, batches)]
        self.active = [r == {} for r in self.results]
        self.stopped_in = [0] * len(batches)

    def stop(self, which: list[bool], stepping: list[bool], epoch: int,
             failure: Optional[Callable[[int], NonFiniteError]] = None) -> None:
        """Members ``which`` take no further step, from this minibatch on (``failure``: why, per member)."""
        for k, now in enumerate(which):
            if now:
                stepping[k] = self.active[k] = False
                self.stopped_in[k] = epoch + 1
                if failure is not None:
                    self.results[k]["failed"] = failure(k)

    def epochs(self, run: int) -> list[int]:
        """Per member, the epochs it ran (``run``: the update's)."""
        return [stopped or run for stopped in self.stopped_in]


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
        self.ent_coef = coefs[0] if len(set(coefs)) == 1 else torch.tensor(coefs).view(-1, 1)
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
        batches = [batches] if single else list(batches)
        refreshes = [refreshes] if single or refreshes is None or callable(refreshes) else list(refreshes)
        refreshes = refreshes * self.size if len(refreshes) == 1 and self.size > 1 else refreshes
        results = self._update(batches, refreshes, [True] * self.size if members is None else list(members))
        if single and "failed" in (results[0] or {}):
            raise results[0]["failed"]
        return results[0] if single else results

    def _update(self, batches: list[Batch], refreshes: list, taking_part: list[bool]) -> list[Optional[dict]]:
        s, S = self.settings, self.size
        members = _Members(batches, taking_part)
        if not any(members.active):
            return members.results
        if s.recompute_advantages and any(refreshes[k] is None for k in range(S) if members.active[k]):
            raise ValueError("recompute_advantages needs a refresh (advantages.AdvantageRefresh)")
        if s.normalize_advantage == "batch":
            for k, b in enumerate(batches):
                if members.active[k]:
                    b.advantages = standardise(b.advantages)
        batches = [b if members.active[k] else _placeholder(batches, members.active) for k, b in enumerate(batches)]
        padded = _Padded(batches)
        slices = [minibatch_slices(len(b), s.minibatch_size) for b in batches]
        layout = None if padded.single else _EpochLayout(slices)
        steps: list[tuple[torch.Tensor, list[bool]]] = []  # per minibatch: terms [S, 3], who stepped
        clip_hits: list[tuple] = []  # per minibatch: pre-step ratios, mask, epsilon (reduced at the end)
        epochs_run = 0
        hand = hand_gradient_for(self.net, member_view(self.losses), s, self.ent_coef)
        report_epsilon = self._report_epsilon()
        with torch.set_grad_enabled(hand is None):  # a hand-written gradient needs no graph
            for epoch in range(s.num_epochs):
                epochs_run = epoch + 1
                if epoch > 0 and s.recompute_advantages:
                    self._refresh_advantages(batches, refreshes, members.active, padded)
                stepped_this_epoch = [False] * S
                for j, (mb, mask, stepping, lengths) in enumerate(self._minibatches(padded, layout, slices,
                                                                                    members.active)):
                    pb, value = self.policy_batch(mb, with_value=True, mask=mask, forward=hand and hand.forward)
                    if s.target_kl is not None:  # moved far enough: stop before this step
                        k3 = pb.mean((pb.ratio - 1.0) - pb.log_ratio).detach().reshape(-1).tolist()
                        members.stop([stepping[k] and k3[k] > 1.5 * s.target_kl for k in range(S)], stepping, epoch)
                    if not any(stepping):
                        continue
                    loss_view = member_view(self.losses)
                    terms = self._loss_terms(loss_view, pb, value, mb, lengths, stepping)
                    total = terms[-1]
                    finite = torch.isfinite(total).reshape(-1).tolist()
                    diverged = [stepping[k] and not finite[k] for k in range(S)]
                    members.stop(diverged, stepping, epoch, failure=lambda k: _non_finite(*terms[:3], k, epoch, j))
                    if not any(stepping):
                        continue
                    gradient = hand and (lambda: hand.backward(pb, loss_view, value, mb.actions, mb.returns,
                                                               not self.no_entropy_bonus))
                    self.step(total, None if all(stepping) else torch.tensor(stepping), gradient)
                    stepped_this_epoch = [a or b for a, b in zip(stepped_this_epoch, stepping)]
                    steps.append((torch.stack(terms[:3], -1).detach().reshape(S, 3), stepping))
                    clip_hits.append((pb.ratio.detach(), pb.mask, report_epsilon))  # pre-step, as PPO reports them
                    if self._adapting("minibatch"):  # d after this step, on this minibatch
                        self._observe_kl(self._divergences(mb, mask)["kl"], stepping, "minibatch")
                if self._adapting("epoch") and any(stepped_this_epoch):  # only after an epoch that stepped
                    self._observe_kl(self._divergences(padded.batch(), padded.mask)["kl"], stepped_this_epoch, "epoch")
                if not any(members.active):
                    break
        self._check_parameters(members.results)
        return self._summarise(members.results, steps, clip_hits, padded, members.epochs(epochs_run))

    def _refresh_advantages(self, batches: list[Batch], refreshes: list, active: list[bool], padded: _Padded) -> None:
        """recompute_advantages: each stepping member's advantages and targets re-estimated with
        its current value function, in its batch and in ``padded``."""
        for k, b in enumerate(batches):
            if active[k]:
                advantages, b.returns = refreshes[k]()
                b.advantages = standardise(advantages) if self.settings.normalize_advantage == "batch" else advantages
        padded.refill(batches, ("advantages", "returns"))

    def _loss_terms(self, loss_view: PolicyLoss, pb: PolicyBatch, value: torch.Tensor, mb: Batch, lengths: list[int],
                    stepping: list[bool]) -> tuple[torch.Tensor, ...]:
        """(policy term, value loss, entropy, total) on one minibatch, each a scalar or [S, 1]."""
        s = self.settings
        policy_loss = loss_view(pb)
        value_loss = self.value_loss(value, mb.values, mb.returns, pb)
        if self.no_entropy_bonus:  # reported only: kept out of the graph the backward walks
            with torch.no_grad():
                entropy = pb.mean(self._entropy(pb.dist, lengths, stepping))
            return policy_loss, value_loss, entropy, policy_loss + s.vf_coef * value_loss
        entropy = pb.mean(self._entropy(pb.dist, lengths, stepping))
        return policy_loss, value_loss, entropy, policy_loss + s.vf_coef * value_loss - self.ent_coef * entropy

    def _observe_kl(self, kls: list[float], who: list[bool], granularity: str) -> None:
        for k, loss in enumerate(self.losses):
            if who[k]:
                loss.observe_kl(kls[k], granularity)

    def _minibatches(self, padded: _Padded, layout: Optional["_EpochLayout"], slices: list[list[slice]],
                     active: list[bool]):
        """Yield (minibatch, mask, stepping) for one epoch: each member's own shuffle and split,
        minibatch j of every member side by side (padded to the longest of them)."""
        S = self.size
        orders = []
        for k in range(S):
            n = padded.lengths[k]
            if not active[k]:  # draws nothing: a member's stream is as in its solo run
                orders.append(torch.arange(n))
            else:
                orders.append(torch.randperm(n, generator=None if self.generators is None else self.generators[k]))
        if padded.single:
            shuffled = padded.batch().permuted(orders[0])
            for idx in slices[0]:
                if not active[0]:
                    return
                yield Batch(*(getattr(shuffled, f)[idx] for f in FIELDS)), None, [True], [idx.stop - idx.start]
            return
        # one gather per epoch; minibatch j is then a slice of it
        index = torch.zeros(S, layout.width, dtype=torch.long)
        for k in range(S):
            index[k, layout.destinations[k]] = orders[k]
        index += torch.arange(S)[:, None] * max(padded.lengths)  # rows of the fields' [S * N_max, ...] view
        index = index.reshape(-1)
        shuffled = [_gather_rows(padded.fields[f], index) for f in FIELDS]
        for j, (cols, mask, lengths) in enumerate(layout.minibatches):
            stepping = [active[k] and lengths[k] > 0 for k in range(S)]
            if not any(stepping):
                if not any(active):
                    return
                continue
            yield Batch(*(t[:, cols] for t in shuffled)), mask, stepping, lengths

    def _adapting(self, granularity: str) -> bool:
        """Whether some member's loss adapts its state at this granularity (a member with a fixed
        beta shares a population with adaptive ones: ``loss.adaptive`` is a member key)."""
        return any(loss.adapt_every == granularity for loss in self.losses)

    def _entropy(self, dist, lengths: list[int], stepping: list[bool]) -> torch.Tensor:
        """The entropy per sample. A sampled estimate (``entropy_draws``) draws member k's noise
        for its own ``lengths[k]`` samples from ``generators[k]``: the draws of its solo run."""
        if self.generators is None or not getattr(dist, "entropy_draws", False):
            return dist.entropy()
        noise = torch.zeros_like(dist.mean)
        for k, g in enumerate(self.generators):
            if stepping[k]:
                noise[k, :lengths[k]] = torch.randn(lengths[k], dist.mean.shape[-1], generator=g)
        return dist.entropy(noise)

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
        kl = pb.mean(member_view(self.losses).divergence(pb))
        k3 = pb.mean((pb.ratio - 1.0) - pb.log_ratio)
        valid = mask if mask is not None else torch.ones_like(pb.ratio, dtype=torch.bool)
        low = torch.where(valid, pb.ratio, float("inf")).amin(-1)
        high = torch.where(valid, pb.ratio, float("-inf")).amax(-1)
        return {"kl": kl.reshape(-1).tolist(), "approx_kl_k3": k3.reshape(-1).tolist(),
                "ratio_min": low.tolist(), "ratio_max": high.tolist()}

    def _report_epsilon(self) -> float | torch.Tensor:
        """What clip_fraction counts against: each member's loss's epsilon, or DEFAULT_CLIP_REPORT
        for a loss without one (a float, or [S, 1] where members differ)."""
        values = [DEFAULT_CLIP_REPORT if loss.epsilon is None else loss.epsilon for loss in self.losses]
        return values[0] if all(v == values[0] for v in values) else torch.tensor(values).view(-1, 1)

    def _clip_fractions(self, clip_hits: list, took: torch.Tensor) -> list[float]:
        """Per member: the fraction of its pre-step ratios with |r - 1| > epsilon (``_report_epsilon``),
        over the minibatches it stepped on."""
        if self.size == 1:  # one reduction over every step's ratios
            ratios = torch.cat([r for r, _, _ in clip_hits])
            return [((ratios - 1.0).abs() > clip_hits[0][2]).float().mean().item()]
        hits = torch.zeros(self.size, dtype=torch.float64)
        samples = torch.zeros(self.size, dtype=torch.float64)
        for (ratio, mask, eps), who in zip(clip_hits, took):
            valid = torch.ones_like(ratio, dtype=torch.bool) if mask is None else mask
            valid = valid & who[:, None]
            hits += (((ratio - 1.0).abs() > eps) & valid).sum(-1)
            samples += valid.sum(-1)
        return (hits / samples.clamp(min=1)).tolist()

    def _summarise(self, results: list, steps: list, clip_hits: list, padded: _Padded,
                   epochs: list[int]) -> list[Optional[dict]]:
        nan = float("nan")
        S = self.size
        if steps:
            terms = torch.stack([t for t, _ in steps])  # [M, S, 3]
            took = torch.tensor([who for _, who in steps])  # [M, S]
            counts = took.sum(0)
            sums = torch.where(took[..., None], terms, 0.0).sum(0)
            means = (sums / counts.clamp(min=1)[:, None]).tolist()
            if S == 1:  # a single run's mean, as it always was
                means = [terms[:, 0].mean(0).tolist()]
            fractions = self._clip_fractions(clip_hits, took)
            counts = counts.tolist()
        else:
            means, fractions, counts = [[nan] * 3] * S, [nan] * S, [0] * S
        divergence = None
        for k in range(S):
            if results[k] != {}:
                continue
            if divergence is None:
                divergence = self._divergences(padded.batch(), padded.mask)
            stepped = counts[k] > 0
            policy_loss, value_loss, entropy = means[k] if stepped else (nan, nan, nan)
            results[k] = {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
                          "clip_fraction": fractions[k] if stepped else nan, "epochs": epochs[k],
                          **{key: values[k] for key, values in divergence.items()}}
        return results

    def _check_parameters(self, results: list) -> None:
        finite = torch.isfinite(self.optimizer.rows).all(1).tolist()
        for k, ok in enumerate(finite):
            if not ok and results[k] is not None and "failed" not in results[k] and "update_skipped" not in results[k]:
                name = next(name for name, p in self.members[k].named_parameters() if not torch.isfinite(p).all())
                results[k]["failed"] = NonFiniteError(f"non-finite parameter {name} after the update")


def _gather_rows(field: torch.Tensor, flat_index: torch.Tensor) -> torch.Tensor:
    """``field`` [S, N, ...] gathered at ``flat_index`` (rows of its [S * N, ...] view) into [S, W, ...]:
    index_select copies whole rows, about 3x faster here than indexing with two index tensors."""
    S, N = field.shape[:2]
    picked = field.reshape(S * N, *field.shape[2:]).index_select(0, flat_index)
    return picked.view(S, -1, *field.shape[2:])


def _placeholder(batches: list[Batch], active: list[bool]) -> Batch:
    """A stand-in batch for a member taking no part (a copy of the first active member's: it
    only fills the member's rows of the stacked tensors, never stepped on)."""
    first = next(b for b, on in zip(batches, active) if on)
    return Batch(*(getattr(first, f) for f in FIELDS))


def _non_finite(policy_loss, value_loss, entropy, member: int, epoch: int, minibatch: int) -> NonFiniteError:
    pick = (lambda t: t.reshape(-1)[member]) if policy_loss.dim() > 0 else (lambda t: t)  # noqa: E731
    bad = [name for name, term in (("policy_loss", policy_loss), ("value_loss", value_loss),
                                   ("entropy", entropy)) if not torch.isfinite(pick(term))]
    return NonFiniteError(f"non-finite {', '.join(bad) or 'total loss'}", f"epoch {epoch + 1}, minibatch {minibatch + 1}")
