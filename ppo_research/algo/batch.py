"""Rollout storage and the batch the PPO update learns from.

``Rollout`` holds T steps of N envs as [T, N, ...] numpy arrays, allocated once and refilled
every iteration; ``Batch`` is its valid (non-reset) transitions flattened to torch tensors,
with the advantages and value targets of step 2 of the algorithm.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Rollout:
    """[T, N, ...] arrays of one rollout."""

    obs: np.ndarray
    actions: np.ndarray
    log_probs: np.ndarray  # log pi_old(a|s)
    dist_params: np.ndarray  # pi_old's parameters, for the analytic KL
    values: np.ndarray  # V_old(s)
    rewards: np.ndarray
    terminated: np.ndarray
    episode_end: np.ndarray  # terminated or truncated
    valid: np.ndarray  # False on NEXT_STEP reset steps
    last_value: np.ndarray  # V(obs_T), [N]

    @classmethod
    def allocate(cls, num_steps: int, num_envs: int, obs_shape: tuple, action_shape: tuple,
                 dist_params: int, obs_dtype=np.float32) -> "Rollout":
        """Zeroed storage; observations in ``obs_dtype`` (uint8 for images: a quarter of float32's memory)."""
        f32 = lambda *shape: np.zeros((num_steps, num_envs, *shape), np.float32)  # noqa: E731
        return cls(obs=np.zeros((num_steps, num_envs, *obs_shape), obs_dtype), actions=f32(*action_shape), log_probs=f32(), dist_params=f32(dist_params),
                   values=f32(), rewards=f32(), terminated=f32(), episode_end=f32(),
                   valid=np.zeros((num_steps, num_envs), bool), last_value=np.zeros(num_envs, np.float32))

    @property
    def next_values(self) -> np.ndarray:
        """V of the observation each step returned (a truncated episode's final obs included)."""
        return np.concatenate([self.values[1:], self.last_value[None]], axis=0)


@dataclass
class Batch:
    """The valid transitions of a rollout, flattened: what the update learns from."""

    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    dist_params: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor  # value targets R_t = A_t + V_old(s_t)

    @classmethod
    def from_rollout(cls, rollout: Rollout, advantages: np.ndarray) -> "Batch":
        keep = rollout.valid.reshape(-1)
        flat = lambda a: torch.from_numpy(a.reshape(keep.shape[0], *a.shape[2:])[keep])  # noqa: E731
        values = flat(rollout.values)
        adv = flat(advantages)
        return cls(flat(rollout.obs), flat(rollout.actions), flat(rollout.log_probs), flat(rollout.dist_params),
                   values, adv, adv + values)

    def __len__(self) -> int:
        return self.obs.shape[0]

    def to(self, device: torch.device) -> "Batch":
        """The batch on ``device`` (the networks'; on the CPU the same tensors)."""
        return Batch(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))

    def permuted(self, order: torch.Tensor) -> "Batch":
        """The batch in a new order: gathered once per epoch, so minibatches are cheap slices."""
        return Batch(*(getattr(self, f.name)[order] for f in dataclasses.fields(self)))
