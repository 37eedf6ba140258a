"""A population's EnvPool envs as one pool: a speed path (``algo.fast_paths``), the same numbers.

EnvPool's gain comes from stepping many envs in one call. A population whose members each own a
pool of N envs makes S calls per step, each with a few envs (HalfCheetah's preset: one); the
members stepping in lock step (run/envs/lockstep.py) can make one call on one pool of S x N envs.

Member k's N envs become rows kN .. kN+N-1 of that pool, each seeded with the seed it had in the
member's own pool (EnvPool seeds env by env), so each env steps exactly as it would have there
(tests/run/envs/test_shared_pool.py: bit for bit against the members' own pools). The pool is
formed only from envs that have not stepped since their reset - at a run's first rollout, or its
first after a resume (whose envs restart re-seeded anyway) - and only if its first observations
are the members' own; otherwise the members keep their own pools (the plain path).

A member that ends early (divergence, pruning) stops stepping; its rows go on stepping with zero
actions, unused, so that the others' calls stay one. A row that missed a step can never step again
(it raises): its envs have moved on without it.
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence

import numpy as np

from .envpool_backend import EnvPoolVectorEnv


class SharedPool:
    """One EnvPool pool for the envs of ``members`` (each an ``EnvPoolVectorEnv`` just reset)."""

    def __init__(self, members: Sequence[EnvPoolVectorEnv]):
        first = members[0]
        self.size, self.num_envs = len(members), first.num_envs  # S members of N envs each
        spaces = (first.single_observation_space, first.single_action_space)
        self.envs = EnvPoolVectorEnv(first.cfg, self.size * self.num_envs, spaces)
        self.envs.reset(seed=[s for m in members for s in m.seeds])
        self.same_start = np.array_equal(self.envs.first_obs, np.concatenate([m.first_obs for m in members]))
        S, N, obs_space, action_space = self.size, self.num_envs, spaces[0], spaces[1]
        self._into = (np.zeros((S, N, *obs_space.shape), obs_space.dtype), np.zeros((S, N)), np.zeros((S, N), bool),
                      np.zeros((S, N), bool))  # what a step returns, [S, N, ...]
        self._actions = np.zeros((S, N, *action_space.shape), action_space.dtype)  # retired rows act 0
        self.retired: set[int] = set()
        self.left: set[int] = set()
        if self.same_start:
            for k, m in enumerate(members):
                m.become_rows_of(self, k)
        else:
            self.envs.close()

    def step(self, rows: list[int], actions: np.ndarray):
        """Step every env; ``actions`` [len(rows), N, ...] are those of members ``rows`` (in that
        order). Returns (raw obs, rewards, terminated, truncated), each [len(rows), N, ...]: the
        pool's own arrays when every row steps (valid until the next step), else copies."""
        if self.retired.intersection(rows):
            raise RuntimeError(f"rows {sorted(self.retired.intersection(rows))} of the shared EnvPool missed a "
                               f"step: their envs moved on without them")
        self.retired.update(set(range(self.size)) - set(rows))
        everyone = list(rows) == list(range(self.size))
        if everyone:
            actions = np.reshape(actions, self._actions.shape)
        else:
            self._actions[rows] = actions
            actions = self._actions
        SN = self.size * self.num_envs
        self.envs.step_into(actions.reshape(SN, *actions.shape[2:]), *(a.reshape(SN, *a.shape[2:]) for a in self._into))
        return self._into if everyone else tuple(a[rows] for a in self._into)

    def lives(self, row: int) -> np.ndarray:
        """Row ``row``'s lives left after the last step (an Atari game's)."""
        return self.envs.lives()[row * self.num_envs:(row + 1) * self.num_envs]

    def leave(self, row: int) -> None:
        """Row ``row`` is done with the pool (its envs were closed or reset); the last one closes it."""
        self.left.add(row)
        self.retired.add(row)
        if len(self.left) == self.size:
            self.envs.close()


def share_one_pool(envs: Sequence) -> Optional[SharedPool]:
    """Make the members' envs (``TrainingEnvs.envs``) rows of one shared pool when they can be:
    two or more EnvPool vector envs of one config and size, none stepped since its reset, and the
    shared pool starts where theirs did. Returns the pool, or None (the members keep their own)."""
    if len(envs) < 2 or not all(isinstance(e, EnvPoolVectorEnv) for e in envs):
        return None
    first = envs[0]
    if any(e.shared is not None or e.first_obs is None or e.pool is None or e.cfg != first.cfg
           or e.num_envs != first.num_envs for e in envs):
        return None
    pool = SharedPool(envs)
    if not pool.same_start:  # EnvPool did not seed env by env here: sharing would change the numbers
        warnings.warn(f"EnvPool's {first.cfg.id}: one pool for the population starts elsewhere than the members' "
                      f"own pools; each member keeps its own (slower)", RuntimeWarning, stacklevel=2)
        return None
    return pool
