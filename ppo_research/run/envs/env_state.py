"""The sub-envs' state in a checkpoint: what makes a resumed env continue bit for bit.

Checkpoints are taken between iterations. A sub-env's future is then fixed by its dynamics
state and RNG, its wrappers' counters (TimeLimit's elapsed steps) and, for MuJoCo, every array
of MjData (derived quantities and the solver's warm start included: positions alone would not
reproduce the next step bit for bit). Classic control envs keep their whole state in plain
attributes; other envs (Box2D, third-party) cannot be captured: they restart with fresh episodes.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from ...errors import CheckpointError
from ..rundir.checkpoint import generator_state, make_generator
from .vector import SerialVectorEnv

PLAIN = (bool, int, float, np.ndarray, np.generic, type(None))


def restorable(env: gym.Env) -> bool:
    """Envs whose whole dynamics state is plain attributes (classic control) or MjData arrays."""
    return type(env).__module__.startswith("gymnasium.envs.classic_control") or mj_data(env) is not None


def mj_data(env: gym.Env):
    data = getattr(env, "data", None)
    return data if type(data).__module__.startswith("mujoco") else None


def plain_attrs(obj) -> dict:
    return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in vars(obj).items() if isinstance(v, PLAIN)}


def wrapper_chain(env: gym.Env) -> list:
    chain = [env]
    while hasattr(chain[-1], "env"):
        chain.append(chain[-1].env)
    return chain


def sub_env_state(env: gym.Env) -> dict:
    """Plain attributes of every wrapper and of the env (state, elapsed steps, seeds), its
    np_random, and for MuJoCo every array of MjData (derived quantities and the solver's warm
    start included: positions alone would not reproduce the next step bit for bit)."""

    chain = wrapper_chain(env)
    state = {"classes": [type(w).__name__ for w in chain], "attrs": [plain_attrs(w) for w in chain],
             "np_random": generator_state(env.unwrapped.np_random)}
    data = mj_data(env.unwrapped)
    if data is not None:
        arrays = {}
        for name in dir(data):
            value = getattr(data, name, None) if not name.startswith("_") else None
            if isinstance(value, np.ndarray):
                arrays[name] = value.copy()
        state["mujoco"] = {"time": float(data.time), "arrays": arrays}
    return state


def load_sub_env_state(env: gym.Env, state: dict) -> None:

    chain = wrapper_chain(env)
    if [type(w).__name__ for w in chain] != list(state["classes"]):
        raise CheckpointError(f"checkpoint env wrappers {state['classes']} differ from "
                              f"{[type(w).__name__ for w in chain]}")
    for wrapper, attrs in zip(chain, state["attrs"]):
        current = vars(wrapper)
        for key, value in attrs.items():
            if isinstance(current.get(key), PLAIN):  # never replace an object with plain data
                setattr(wrapper, key, value.copy() if isinstance(value, np.ndarray) else value)
    env.unwrapped.np_random = make_generator(state["np_random"])
    if "mujoco" in state:
        data = mj_data(env.unwrapped)
        data.time = state["mujoco"]["time"]
        for name, value in state["mujoco"]["arrays"].items():
            target = getattr(data, name, None)
            # Per-step scratch (constraint rows, contacts) changes size and is rebuilt by mj_step.
            if isinstance(target, np.ndarray) and target.shape == value.shape:
                target[...] = value


def spaces(envs) -> dict:
    spaces = {"action": envs.action_space, "observation": envs.observation_space}
    if isinstance(envs, SerialVectorEnv):
        for i, env in enumerate(envs.envs):
            spaces[f"{i}.action"] = env.unwrapped.action_space
            spaces[f"{i}.observation"] = env.unwrapped.observation_space
    return spaces


def spaces_rng(envs) -> dict:
    """The spaces' own RNGs (used by ``space.sample()``); None where never seeded or used."""

    return {name: None if getattr(space, "_np_random", None) is None else generator_state(space._np_random)
            for name, space in spaces(envs).items()}


def set_spaces_rng(envs, states: dict) -> None:

    for name, space in spaces(envs).items():
        if states.get(name) is not None:
            space._np_random = make_generator(states[name])
