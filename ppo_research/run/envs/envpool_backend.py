"""The training envs on EnvPool (``env.backend=envpool``): N envs of one C++ pool, offered as
``SerialVectorEnv`` offers gymnasium's (``reset(seed=[...])``, ``step``, ``step_into``, ``close``).

What stays as on the gymnasium path (docs/extending.md, "Env backends"):

- the spaces: gymnasium's own (``single_observation_space``/``single_action_space`` are the spaces
  of ``gym.make(env.id)``; EnvPool's must match them in kind, shape and bounds, else the run is
  refused). Observations come back in gymnasium's dtype; actions go to EnvPool in its own (its
  MuJoCo action spaces are float64 where gymnasium's are float32);
- NEXT_STEP autoreset: the step after an episode ends resets that env, ignores its action and
  returns reward 0 with neither flag (EnvPool's own autoreset, which its gymnasium API declares
  as ``AutoresetMode.NEXT_STEP``; tests/run/envs/test_envpool_backend.py checks it step by step);
- truncation: the time limit's last step is ``truncated`` with the episode's real last
  observation, so the rollout bootstraps it as on gymnasium;
- normalisation, reward scaling, episode statistics: ``TrainingEnvs`` and the lock-step
  bookkeeping, the same code as gymnasium's;
- evaluation: on gymnasium's env (run/loop/evaluation.py), whose episodes are seeded one by one
  from the run's evaluation stream, which EnvPool (seeded once, when the pool is made) cannot.

What differs:

- seeds: EnvPool fixes its envs' seeds when the pool is made (``reset(seed=...)`` is ignored),
  so ``reset(seed)`` makes a new pool. Given one integer it seeds env i with ``base + i``; this
  class passes one seed per env instead (EnvPool's ``seed=[...]``): env i's own SeedSequence
  stream, reduced to EnvPool's int32 range (``SEED_BITS``);
- exact resume: EnvPool's internal env state (its simulators, RNGs, step counters) cannot be
  read or written, so a resumed run's envs restart with fresh episodes from the restart seeds,
  as the gymnasium path's non-exact resume does (``exact_state_supported`` is False);
- the dynamics are EnvPool's C++ ports, equal to round-off from the same state on every preset
  except: initial states come from another RNG; rewards arrive as float32; Pendulum-v1 advances
  the angle by the unclipped velocity on a step past the speed limit of 8; an episode that
  terminates on the time limit's step is reported truncated only (gymnasium: both), so that
  one step is bootstrapped (tests/run/envs/test_envpool_backend.py checks each).
"""
from __future__ import annotations

import importlib.metadata
import warnings
from typing import Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space

from ...errors import ConfigError, first_line
from ..config.schema import EnvConfig
from . import atari

#: The install that adds EnvPool (an optional extra of the package).
EXTRA = 'pip install -c constraints.txt -e ".[envpool]"'
#: EnvPool's seeds are int32; each env's 64-bit stream seed keeps its low 31 bits (non-negative).
SEED_BITS = 31


def import_envpool():
    """The ``envpool`` module, or a one-line ConfigError naming the extra that installs it."""
    try:
        import envpool
    except ImportError as err:
        raise ConfigError("env.backend", "envpool", f"gymnasium, or EnvPool installed: {EXTRA} "
                                                    f"({type(err).__name__}: {first_line(err)})") from None
    return envpool


def envpool_version() -> str:
    try:
        return importlib.metadata.version("envpool")
    except importlib.metadata.PackageNotFoundError:
        return "?"


def envpool_seed(seed: int) -> int:
    """EnvPool's seed for an env whose stream seed (run/loop/seeds.py) is ``seed``."""
    return int(seed) % (1 << SEED_BITS)


def make_pool(cfg: EnvConfig, seeds: Sequence[int]):
    """An EnvPool pool of ``len(seeds)`` envs of ``cfg.id``, env i seeded ``envpool_seed(seeds[i])``;
    a one-line ConfigError for an id EnvPool does not have or a keyword it does not take."""
    envpool = import_envpool()
    pool_id, kwargs = cfg.id, dict(cfg.kwargs)
    if cfg.preprocess == "atari":  # EnvPool's own preprocessing, set as the gymnasium stack's (run/envs/atari.py)
        pool_id, kwargs = atari.envpool_id(cfg.id), {**atari.ENVPOOL_SETTINGS, **kwargs}
    if pool_id not in envpool.list_all_envs():
        raise ConfigError("env.id", cfg.id, f"an env EnvPool {envpool_version()} has (one of "
                                            f"envpool.list_all_envs()), or env.backend=gymnasium")
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    key, value = ("env.kwargs", dict(cfg.kwargs)) if cfg.kwargs else ("env.id", cfg.id)
    try:
        with warnings.catch_warnings():  # EnvPool's float64 bounds cast to its float32 Boxes: gymnasium warns
            warnings.filterwarnings("ignore", message=".*precision lowered by casting", category=UserWarning)
            pool = envpool.make_gymnasium(pool_id, num_envs=len(seeds), batch_size=len(seeds),
                                          num_threads=min(cfg.envpool_threads, len(seeds)),
                                          seed=[envpool_seed(s) for s in seeds], **kwargs)
            pool.single_observation_space, pool.single_action_space  # built (and warned about) here
    except Exception as err:  # an unknown keyword (TypeError), a value EnvPool asserts against
        raise ConfigError(key, value, f"settings EnvPool's {cfg.id} accepts, or env.backend=gymnasium "
                                      f"({type(err).__name__}: {first_line(err)})") from None
    mode = pool.metadata.get("autoreset_mode")
    if mode is not None and mode != gym.vector.AutoresetMode.NEXT_STEP:  # a future EnvPool that changed it
        pool.close()
        raise ConfigError("env.backend", "envpool", f"gymnasium (EnvPool {envpool_version()} autoresets in "
                                                    f"{mode}, the trainer needs NEXT_STEP)")
    return pool


def check_spaces_match(cfg: EnvConfig, pool, obs_space: gym.Space, action_space: gym.Space) -> None:
    """EnvPool's spaces must be gymnasium's (``obs_space``/``action_space``) in kind, shape and
    bounds; dtypes may differ (converted at the boundary)."""
    for what, ours, theirs in (("observation", obs_space, pool.single_observation_space),
                               ("action", action_space, pool.single_action_space)):
        same = type(ours) is type(theirs) and ours.shape == theirs.shape
        if same and isinstance(ours, gym.spaces.Discrete):
            same = int(ours.n) == int(theirs.n) and int(ours.start) == int(theirs.start)
        if same and isinstance(ours, gym.spaces.Box):
            same = np.array_equal(ours.low.astype(np.float64), theirs.low.astype(np.float64)) and \
                np.array_equal(ours.high.astype(np.float64), theirs.high.astype(np.float64))
        if not same:
            raise ConfigError("env.backend", "envpool", f"gymnasium for {cfg.id}: EnvPool's {what} space {theirs} "
                                                        f"is not gymnasium's {ours}")


def probe(cfg: EnvConfig, obs_space: gym.Space, action_space: gym.Space) -> None:
    """Before training: EnvPool is installed, has ``cfg.id`` with these settings, its spaces are
    gymnasium's, and one env resets and steps."""
    pool = make_pool(cfg, [0])
    try:
        check_spaces_match(cfg, pool, obs_space, action_space)
        pool.reset()
        action = np.zeros((1, *pool.single_action_space.shape), pool.single_action_space.dtype)
        pool.step(action)
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError("env.backend", "envpool", f"gymnasium for {cfg.id}: EnvPool's env fails to reset or step "
                                                    f"({type(err).__name__}: {first_line(err)})") from None
    finally:
        pool.close()


class EnvPoolVectorEnv:
    """``num_envs`` envs of one EnvPool pool, stepped synchronously (batch size = num_envs).

    ``spaces``: gymnasium's (observation, action) spaces for the env (``training.probe_spaces``):
    the ones the rollout and the checkpoint's space RNGs use, whatever dtypes EnvPool's have.
    """

    def __init__(self, cfg: EnvConfig, num_envs: int, spaces: tuple[gym.Space, gym.Space]):
        self.cfg, self.num_envs = cfg, num_envs
        self.single_observation_space, self.single_action_space = spaces
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.pool = None
        self.last_info: dict = {}
        self._ids = np.arange(num_envs)
        self.seeds: list[int] = []  # the last reset's
        self.first_obs: np.ndarray | None = None  # that reset's observations, until the first step
        self.shared = None  # the population's one pool (run/envs/shared_pool.py) these envs are rows of
        self.row = 0  # ... and which of its rows

    def reset(self, seed: Sequence[int]) -> tuple[np.ndarray, dict]:
        """A new pool seeded ``seed`` (one per env; EnvPool's seeds are fixed when it is made);
        returns the first observations (gymnasium's dtype) and EnvPool's info."""
        if len(seed) != self.num_envs:
            raise ValueError(f"{len(seed)} seeds for {self.num_envs} envs")
        self.close()  # (a shared pool's row leaves it: these envs get a pool of their own again)
        self.seeds = [int(s) for s in seed]
        self.pool = make_pool(self.cfg, self.seeds)
        check_spaces_match(self.cfg, self.pool, self.single_observation_space, self.single_action_space)
        self._action_dtype = self.pool.single_action_space.dtype
        raw, info = self.pool.reset()
        self.last_info = info
        obs = np.empty((self.num_envs, *self.single_observation_space.shape), self.single_observation_space.dtype)
        obs[self._order(info)] = raw
        self.first_obs = obs.copy()
        return obs, info

    def step(self, actions: np.ndarray):
        """(obs, rewards, terminated, truncated, info) as new arrays; ``actions`` has one row per
        env; ``info`` is EnvPool's (its rows by ``info["env_id"]``)."""
        n, space = self.num_envs, self.single_observation_space
        obs, rewards = np.empty((n, *space.shape), space.dtype), np.zeros(n)
        terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
        self.step_into(actions, obs, rewards, terminated, truncated)
        return obs, rewards, terminated, truncated, self.last_info

    def step_into(self, actions: np.ndarray, obs: np.ndarray, rewards: np.ndarray, terminated: np.ndarray,
                  truncated: np.ndarray) -> None:
        """``step``, writing into the caller's arrays (a population's [S, N] rows). An env on its
        reset step gets reward 0 and neither flag (EnvPool's own NEXT_STEP autoreset)."""
        if self.shared is not None:
            raise RuntimeError("these envs are rows of their population's shared pool: they step with it "
                               "(run/envs/shared_pool.py)")
        self.first_obs = None
        raw, reward, term, trunc, info = self.pool.step(np.asarray(actions, self._action_dtype))
        self.last_info = info
        at = self._order(info)
        obs[at], rewards[at], terminated[at], truncated[at] = raw, reward, term, trunc

    def lives(self) -> np.ndarray:
        """Each env's lives left after the last step (an Atari game's; EnvPool's info)."""
        if self.shared is not None:
            return self.shared.lives(self.row)
        out = np.empty(self.num_envs, np.int64)
        out[self._order(self.last_info)] = self.last_info["lives"]
        return out

    def become_rows_of(self, shared, row: int) -> None:
        """From now on these envs are row ``row`` of ``shared`` (run/envs/shared_pool.py), which
        steps them as this pool would: this pool is closed."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        self.shared, self.row = shared, row

    def _order(self, info: dict):
        """Where each returned row goes: EnvPool says which env it is (in order when synchronous)."""
        ids = info.get("env_id")
        if ids is None or np.array_equal(ids, self._ids):
            return slice(None)
        return np.asarray(ids)

    def close(self) -> None:
        if self.shared is not None:
            self.shared.leave(self.row)
            self.shared = None
        if self.pool is not None:
            self.pool.close()
            self.pool = None
