"""The least time a population member's env step can cost on this machine: a bound, not a forecast.

However many members share a process, each must still step its own env once per env step and
push each of its samples through the network's matmuls ``num_epochs`` times (forward and
backward) plus once in the rollout. So

    floor (us per member-step) = env step + update matmul FLOPs / the core's matmul peak

and a population's aggregate SPS can never exceed ``1e6 / floor``; over a solo run of
``solo_us`` per step it can gain at most ``solo_us / floor``. Everything else (elementwise work,
normalisation, storage, Python) is left out, so the true limit is lower still. The three parts
are measured here: the env as the trainer makes it (gymnasium's wrappers included), the FLOPs
counted by ``torch.utils.flop_counter`` on the built network, the peak as the best of a few
large single-threaded matmuls (the rate no small PPO matmul beats).
"""
from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

# torch is imported where it is used: the population launcher times env steps with this module
# and has no other use for it


def matmul_peak_gflops(size: int = 1024, repeats: int = 5) -> float:
    """The best rate of a ``size`` x ``size`` float32 matmul on this process's torch threads."""

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up: kernel selection, page faults
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def update_flops_per_sample(network, obs_shape: tuple, num_epochs: int, batch: int = 64) -> float:
    """Matmul FLOPs one collected sample costs: ``num_epochs`` forward-and-backward passes (the
    gradient of log pi and V: the matmuls of every PPO loss) plus the rollout's forward."""

    obs = torch.zeros(batch, *obs_shape)
    with torch.no_grad():
        actions = network.distribution(obs).sample()
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            network(obs)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        dist, value = network(obs)
        (dist.log_prob(actions).sum() + value.sum()).backward()
    network.zero_grad(set_to_none=True)
    return (num_epochs * counter.get_total_flops() + forward) / batch


def env_step_us(make, steps: int = 3000, seed: int = 0, warm_up: int = 200) -> float:
    """Microseconds per step of one env from ``make()``, random actions, reset when an episode ends."""
    env = make()
    try:
        env.reset(seed=seed)
        env.action_space.seed(seed)
        actions = [env.action_space.sample() for _ in range(256)]
        for i in range(warm_up):
            if any(env.step(actions[i % 256])[2:4]):
                env.reset()
        start = time.perf_counter()
        for i in range(steps):
            if any(env.step(actions[i % 256])[2:4]):
                env.reset()
        return 1e6 * (time.perf_counter() - start) / steps
    finally:
        env.close()


def member_step_floor(make, network, obs_shape: tuple, num_epochs: int) -> dict:
    """The three measured parts and the floor, in us per member-step."""
    env_us = env_step_us(make)
    flops = update_flops_per_sample(network, obs_shape, num_epochs)
    peak = matmul_peak_gflops()
    arithmetic_us = flops / peak / 1e3
    return {"floor_env_us": env_us, "floor_flops_per_step": flops, "floor_peak_gflops": peak,
            "floor_arithmetic_us": arithmetic_us, "floor_us_per_member_step": env_us + arithmetic_us}

