"""The optimizer: Adam over one flat parameter buffer, for one network or a population of them.

PPO's networks are many tiny tensors (14 for the paper's actor + critic), so per-tensor
overhead dominates a minibatch step. Every parameter and gradient is a view into one contiguous
buffer, so Adam, the grad-norm clip and zeroing the gradients are a few operations each.

A population's S members share the buffer member-major ([S, P]: row k is member k's
parameters, ``algo/stacking.py``). Everything per member stays per member: the step count
(members may skip steps: early stopping, fewer minibatches, divergence), the learning rate, the
gradient-norm clip. The maths is torch.optim.Adam(fused=True)'s and clip_grad_norm_'s, row by row.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .stacking import stack_members


def flatten_parameters(module: nn.Module) -> nn.Parameter:
    """Re-seat ``module``'s parameters and their gradients as views of one flat buffer.

    Returns the flat parameter, whose ``.grad`` holds every gradient; autograd accumulates into
    the views in place. Zero gradients with ``flat.grad.zero_()`` (never set them to None: that
    would detach the views).
    """
    return stack_members([module])[1]


class FlatAdam:
    """Adam with per-member step counts, learning rates and global grad-norm clipping.

    ``networks``: one network, or a population's member networks (same architecture). After
    construction their parameters live in ``flat`` ([S * P]); ``module`` computes all members
    at once (the network itself when S = 1).
    """

    def __init__(self, networks: nn.Module | Sequence[nn.Module], lr: float | Sequence[float], eps: float,
                 betas: tuple[float, float] = (0.9, 0.999)):
        nets = [networks] if isinstance(networks, nn.Module) else list(networks)
        self.size = len(nets)
        self.module, self.flat = stack_members(nets)
        self.rows = self.flat.data.view(self.size, -1)  # [S, P]
        self.grad_rows = self.flat.grad.view(self.size, -1)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.eps = float(eps)
        self.set_lr(lr)
        self.steps = torch.zeros(self.size, 1, dtype=torch.float64)  # Adam's t, per member
        self.exp_avg = torch.zeros_like(self.rows)
        self.exp_avg_sq = torch.zeros_like(self.rows)
        # per member: the rows the fused kernel takes (views, made once)
        self._step_views = list(self.steps.view(-1).unbind())
        self._param_rows, self._grad_rows = list(self.rows.unbind()), list(self.grad_rows.unbind())
        self._exp_avg_rows, self._exp_avg_sq_rows = list(self.exp_avg.unbind()), list(self.exp_avg_sq.unbind())

    def set_lr(self, lr: float | Sequence[float]) -> None:
        lrs = [float(lr)] * self.size if isinstance(lr, (int, float)) else [float(x) for x in lr]
        if len(lrs) != self.size:
            raise ValueError(f"{len(lrs)} learning rates for {self.size} members")
        self.lrs = lrs

    def zero_grad(self) -> None:
        self.flat.grad.zero_()

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """Scale each member's gradient to global norm <= max_norm (clip_grad_norm_'s maths);
        returns the pre-clip norms ([S], a 0-d tensor for one network)."""
        norm = torch.linalg.vector_norm(self.grad_rows, dim=1, keepdim=True)
        self.grad_rows.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
        return norm.view(-1) if self.size > 1 else norm.view(())

    @torch.no_grad()
    def step(self, members: Optional[torch.Tensor] = None) -> None:
        """One Adam step for ``members`` (a bool [S] mask; None = all). The others' parameters
        and moments stay exactly as they are, whatever their gradient holds.

        Each member's row is one tensor of torch's fused Adam kernel, the one
        ``torch.optim.Adam(fused=True)`` runs (one pass over the buffer instead of ~10), called once
        per distinct learning rate among the stepping members."""
        chosen = range(self.size) if members is None else [k for k, on in enumerate(members.tolist()) if on]
        by_lr: dict[float, list[int]] = {}
        for k in chosen:
            by_lr.setdefault(self.lrs[k], []).append(k)
        for lr, ks in by_lr.items():
            steps = [self._step_views[k] for k in ks]
            torch._foreach_add_(steps, 1.0)  # as torch.optim.Adam does before its fused kernel
            torch._fused_adam_([self._param_rows[k] for k in ks], [self._grad_rows[k] for k in ks],
                               [self._exp_avg_rows[k] for k in ks], [self._exp_avg_sq_rows[k] for k in ks], [], steps,
                               lr=lr, beta1=self.beta1, beta2=self.beta2, weight_decay=0.0, eps=self.eps,
                               amsgrad=False, maximize=False)

    # -- state: the whole population, or one member's share (a run's checkpoint) ---------------

    def member_state(self, k: int) -> dict:
        return {"step": int(self.steps[k, 0]), "exp_avg": self.exp_avg[k].cpu().clone(),  # host copies: a
                "exp_avg_sq": self.exp_avg_sq[k].cpu().clone(), "lr": self.lrs[k]}  # checkpoint loads anywhere

    def load_member_state(self, k: int, state: dict) -> None:
        if "state" in state:  # a single run's torch.optim.Adam state (checkpoints before populations)
            adam = state["state"][0]
            state = {"step": float(adam["step"]), "exp_avg": adam["exp_avg"], "exp_avg_sq": adam["exp_avg_sq"]}
        if state["exp_avg"].shape != self.exp_avg[k].shape:
            raise ValueError(f"optimizer state of {state['exp_avg'].numel()} parameters for a network of "
                             f"{self.exp_avg[k].numel()}")
        self.steps[k, 0] = float(state["step"])
        self.exp_avg[k] = state["exp_avg"]
        self.exp_avg_sq[k] = state["exp_avg_sq"]

    def state_dict(self) -> dict:
        return {"members": [self.member_state(k) for k in range(self.size)]}

    def load_state_dict(self, state: dict) -> None:
        if "members" not in state:
            state = {"members": [state]}
        if len(state["members"]) != self.size:
            raise ValueError(f"optimizer state of {len(state['members'])} members for {self.size}")
        for k, member in enumerate(state["members"]):
            self.load_member_state(k, member)
