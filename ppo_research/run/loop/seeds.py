"""Every random stream of a run, derived from its seed through ``numpy.random.SeedSequence``.

A run's seed is the entropy of one SeedSequence tree; each stream is a child addressed by a
spawn key ``(stream, index...)``:

    (0, i)      training env i (its reset RNG, hence its start states)
    (1, j)      evaluation episode j (the same j in every evaluation of the run)
    (2,)        torch's global generator: action noise, minibatch shuffling, weight init
    (3,)        python's ``random`` and numpy's legacy global generator
    (4, k, i)   training env i when the envs restart fresh at resume k (a non-exact resume)
    (5,)        a population's torch generator between its members' own streams (member 0's
                seed; each member's (2,) stream is its own, as in its solo run)

SeedSequence hashes the seed and the key together, so no two (seed, stream, index) share a
stream: unlike ``seed + i``, env i+1 of seed 0 is not env i of seed 1, and seed s+1 replays
none of seed s's evaluation episodes. Any non-negative integer is a valid seed.
"""
from __future__ import annotations

import random

import numpy as np
import torch

TRAIN_ENV, EVAL_EPISODE, TORCH, GLOBAL, RESTART_ENV, POPULATION = range(6)


def stream_seed(seed: int, *key: int, bits: int = 64) -> int:
    """A ``bits``-bit integer seed for the stream ``key`` of run ``seed``."""
    words = np.random.SeedSequence(seed, spawn_key=key).generate_state(1, np.uint64 if bits == 64 else np.uint32)
    return int(words[0])


def env_seeds(seed: int, num_envs: int) -> list[int]:
    return [stream_seed(seed, TRAIN_ENV, i) for i in range(num_envs)]


def restart_env_seeds(seed: int, restart: int, num_envs: int) -> list[int]:
    return [stream_seed(seed, RESTART_ENV, restart, i) for i in range(num_envs)]


def eval_episode_seed(seed: int, episode: int) -> int:
    return stream_seed(seed, EVAL_EPISODE, episode)


def seed_globals(seed: int) -> None:
    """Seed torch's, python's and numpy's global generators from their own streams."""
    torch.manual_seed(stream_seed(seed, TORCH))
    state = stream_seed(seed, GLOBAL, bits=32)
    random.seed(state)
    np.random.seed(state)
