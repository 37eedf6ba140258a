"""What an update reports: per member, the mean loss terms over the steps it took, the fraction
of clipped ratios, the epochs it ran and how far the updated policy moved from pi_old.

Kept apart from the PPO step (``algo/update.py``), which hands each step's terms and ratios to
``UpdateReport.record`` and asks for the ``summary`` at the end.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from .losses import PolicyLoss
from .members import Minibatch

#: clip_fraction is reported against the loss's epsilon, or this for losses without one
DEFAULT_CLIP_REPORT = 0.2


def report_epsilon(losses: Sequence[PolicyLoss], device: torch.device) -> float | torch.Tensor:
    """What clip_fraction counts against: each member's loss's epsilon, or DEFAULT_CLIP_REPORT
    for a loss without one (a float, or [S, 1] on ``device`` where members differ)."""
    values = [DEFAULT_CLIP_REPORT if loss.epsilon is None else loss.epsilon for loss in losses]
    return values[0] if all(v == values[0] for v in values) else torch.tensor(values, device=device).view(-1, 1)


class UpdateReport:
    """Collects every step's loss terms and pre-step ratios (reduced once, at the end)."""

    def __init__(self, losses: Sequence[PolicyLoss], device: torch.device):
        self.size, self.device = len(losses), device
        self.epsilon = report_epsilon(losses, device)
        self.steps: list[tuple[torch.Tensor, list[bool]]] = []  # per step: terms [S, 3], who stepped
        self.clip_hits: list[tuple] = []  # per step: pre-step ratios, mask, epsilon

    def record(self, policy_loss: torch.Tensor, value_loss: torch.Tensor, entropy: torch.Tensor,
               ratio: torch.Tensor, mb: Minibatch) -> None:
        self.steps.append((torch.stack([policy_loss, value_loss, entropy], -1).detach().reshape(self.size, 3),
                           mb.stepping))
        self.clip_hits.append((ratio.detach(), mb.mask, self.epsilon))  # pre-step, as PPO reports them

    def summary(self, results: list, divergences: Callable[[], dict[str, list[float]]],
                epochs: list[int]) -> list[Optional[dict]]:
        """Fill in the result of every member still training ({}) in ``results``: mean terms over
        its steps (nan if it took none), clip fraction, epochs, and ``divergences()`` (per key,
        one value per member; computed once, only if needed)."""
        nan = float("nan")
        S = self.size
        if self.steps:
            terms = torch.stack([t for t, _ in self.steps]).cpu()  # [M, S, 3]: one read from the device
            took = torch.tensor([who for _, who in self.steps])  # [M, S]
            counts = took.sum(0)
            sums = torch.where(took[..., None], terms, 0.0).sum(0)
            means = (sums / counts.clamp(min=1)[:, None]).tolist()
            if S == 1:  # a single run's mean, as it always was
                means = [terms[:, 0].mean(0).tolist()]
            fractions = self._clip_fractions(took)
            counts = counts.tolist()
        else:
            means, fractions, counts = [[nan] * 3] * S, [nan] * S, [0] * S
        divergence = None
        for k in range(S):
            if results[k] != {}:
                continue
            if divergence is None:
                divergence = divergences()
            stepped = counts[k] > 0
            policy_loss, value_loss, entropy = means[k] if stepped else (nan, nan, nan)
            results[k] = {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
                          "clip_fraction": fractions[k] if stepped else nan, "epochs": epochs[k],
                          **{key: values[k] for key, values in divergence.items()}}
        return results

    def _clip_fractions(self, took: torch.Tensor) -> list[float]:
        """Per member: the fraction of its pre-step ratios with |r - 1| > epsilon, over the
        minibatches it stepped on."""
        if self.size == 1:  # one reduction over every step's ratios
            ratios = torch.cat([r for r, _, _ in self.clip_hits])
            return [((ratios - 1.0).abs() > self.clip_hits[0][2]).float().mean().item()]
        hits = torch.zeros(self.size, dtype=torch.float64, device=self.device)
        samples = torch.zeros(self.size, dtype=torch.float64, device=self.device)
        for (ratio, mask, eps), who in zip(self.clip_hits, took.to(self.device)):
            valid = torch.ones_like(ratio, dtype=torch.bool) if mask is None else mask
            valid = valid & who[:, None]
            hits += (((ratio - 1.0).abs() > eps) & valid).sum(-1)
            samples += valid.sum(-1)
        return (hits / samples.clamp(min=1)).tolist()
