"""The sub-envs' state in a checkpoint: what makes a resumed env continue bit for bit.

Checkpoints are taken between iterations. A sub-env's future is then fixed by its dynamics
state and RNG, its wrappers' counters (TimeLimit's elapsed steps) and, for MuJoCo, every array
of MjData (derived quantities and the solver's warm start included: positions alone would not
reproduce the next step bit for bit). Classic control envs keep their whole state in plain
attributes; an Atari game's is its emulator's (ALE's state with its RNG) plus the frames its
wrappers hold (the max-pooling buffer, the frame stack); other envs (Box2D, third-party) cannot
be captured: they restart with fresh episodes.
"""
from __future__ import annotations

import collections

import gymnasium as gym
import numpy as np

from ...errors import CheckpointError
from ..rundir.checkpoint import generator_state, make_generator
from .vector import SerialVectorEnv

PLAIN = (bool, int, float, np.ndarray, np.generic, type(None))


def restorable(env: gym.Env) -> bool:
    """Envs whose whole dynamics state is plain attributes (classic control), MjData arrays or an
    Atari emulator's state."""
    return (type(env).__module__.startswith("gymnasium.envs.classic_control") or mj_data(env) is not None
            or ale(env) is not None)


def ale(env: gym.Env):
    """The Atari emulator (ale-py's ALEInterface) of an ALE env, else None."""
    emulator = getattr(env, "ale", None)
    return emulator if type(emulator).__module__.startswith("ale_py") else None


def mj_data(env: gym.Env):
    data = getattr(env, "data", None)
    return data if type(data).__module__.startswith("mujoco") else None


def plain_attrs(obj) -> dict:
    """Plain attributes, and lists or deques of equal arrays (frame buffers) as ``frames(...)``."""
    attrs = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in vars(obj).items() if isinstance(v, PLAIN)}
    attrs.update({k: frames(v) for k, v in vars(obj).items() if is_frames(v)})
    return attrs


def is_frames(value) -> bool:
    """A list or deque of arrays of one shape and dtype (a wrapper's frame buffer or stack)."""
    return (isinstance(value, (list, collections.deque)) and len(value) > 0
            and all(isinstance(a, np.ndarray) and a.shape == value[0].shape and a.dtype == value[0].dtype
                    for a in value))


def frames(value) -> dict:
    return {"frames": np.stack(value), "deque": isinstance(value, collections.deque),
            "maxlen": getattr(value, "maxlen", None)}


def unframes(state: dict):
    items = [a.copy() for a in np.asarray(state["frames"])]
    return collections.deque(items, maxlen=state["maxlen"]) if state["deque"] else items


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
    emulator = ale(env.unwrapped)
    if emulator is not None:  # the emulator with its RNG (sticky actions), as bytes
        state["ale"] = np.frombuffer(emulator.cloneState(include_rng=True).serialize(), np.uint8).copy()
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
            elif is_frames(current.get(key)) and isinstance(value, dict):
                setattr(wrapper, key, unframes(value))
    env.unwrapped.np_random = make_generator(state["np_random"])
    if "ale" in state:
        import ale_py  # installed: the env is an ALE env

        ale(env.unwrapped).restoreState(ale_py.ALEState(np.asarray(state["ale"], np.uint8).tobytes()))
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
