"""Environments: gymnasium vector envs (or EnvPool's, ``env.backend=envpool``) plus the
normalisation the trainer owns.

Observation normalisation and reward scaling live here rather than in gymnasium's wrappers so
that their statistics are plain arrays: saved in checkpoints, and frozen for evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from ...errors import ConfigError
from ..config.schema import EnvConfig
from . import bookkeeping
from .atari import is_image, lives, make_atari_env
from .env_state import load_sub_env_state, restorable, set_spaces_rng, spaces_rng, sub_env_state
from .moments import RunningMeanStd, clip
from .vector import SerialVectorEnv


class ObsNormalizer:
    """(obs - mean) / std, clipped; statistics updated only while training. Images (uint8) pass
    as they are: the network scales them."""

    def __init__(self, shape, enabled: bool, clip: float | None, image: bool = False):
        self.enabled, self.clip, self.image = enabled, clip, image
        self.stats = RunningMeanStd(shape)

    def __call__(self, obs: np.ndarray, update: bool) -> np.ndarray:
        if self.image:
            return np.array(obs, np.uint8)
        if not self.enabled:
            return obs.astype(np.float32)
        if update:
            self.stats.update(obs)
        out = (obs - self.stats.mean) / np.sqrt(self.stats.var + 1e-8)
        if self.clip is not None:
            out = clip(out, -self.clip, self.clip)
        return out.astype(np.float32)


class RewardScaler:
    """Divide rewards by the running std of the discounted return (no mean subtraction). The
    statistics and switches; the steps' arithmetic is run/envs/bookkeeping.py's."""

    def __init__(self, num_envs: int, gamma: float, enabled: bool, clip: float | None):
        self.enabled, self.gamma, self.clip = enabled, gamma, clip
        self.stats = RunningMeanStd(())
        self.discounted = np.zeros(num_envs)

    def state_dict(self) -> dict:
        return {"stats": self.stats.state_dict(), "discounted": self.discounted.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.stats.load_state_dict(state["stats"])
        self.discounted = np.asarray(state["discounted"])


def make_env(cfg: EnvConfig, render_mode: str | None = None) -> gym.Env:
    if cfg.preprocess == "atari":
        return make_atari_env(cfg.id, dict(cfg.kwargs), cfg.max_episode_steps, render_mode)
    kwargs = dict(cfg.kwargs)
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    try:
        return gym.make(cfg.id, render_mode=render_mode, **kwargs)
    except gym.error.Error as err:  # unknown id, missing dependency, bad version
        raise ConfigError("env.id", cfg.id, f"a registered gymnasium id ({type(err).__name__}: "
                                            f"{str(err).splitlines()[0]})") from None


def probe_spaces(cfg: EnvConfig) -> tuple[gym.Space, gym.Space]:
    """The env's observation and action spaces, from one env that is made but never reset:
    an unknown id or a bad keyword fails here, before any training env starts."""
    env = make_env(cfg)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


class ActionAdapter:
    """Map policy outputs to env actions for Box spaces: clip, rescale from [-1, 1], or pass."""

    def __init__(self, space: gym.Space, mode: str):
        self.box = isinstance(space, gym.spaces.Box)
        self.mode = mode if self.box else "none"
        if self.box:
            self.low, self.high = space.low.astype(np.float32), space.high.astype(np.float32)

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        if self.mode == "clip":
            return clip(actions, self.low, self.high)
        if self.mode == "rescale":
            return self.low + 0.5 * (np.clip(actions, -1.0, 1.0) + 1.0) * (self.high - self.low)
        return actions


@dataclass
class EpisodeTracker:
    """Undiscounted returns and lengths of the training episodes in flight (raw rewards)."""

    num_envs: int
    returns: np.ndarray = field(init=False)
    lengths: np.ndarray = field(init=False)

    def __post_init__(self):
        self.returns = np.zeros(self.num_envs)
        self.lengths = np.zeros(self.num_envs, np.int64)


class TrainingEnvs:
    """N vector envs with normalisation; steps return what the rollout stores.

    The envs autoreset in gymnasium 1.x's NEXT_STEP mode: the step after an episode ends is a
    reset step (action ignored, reward 0), reported through ``valid = False``. They step through
    ``LockstepEnvs`` (run/envs/lockstep.py), alone or with a population's other members.
    """

    def __init__(self, cfg: EnvConfig, num_envs: int, gamma: float, seeds: list[int], compiled: bool = True):
        self.cfg = cfg
        # the steps' bookkeeping compiled (numba, if installed) or in numpy: the same numbers
        self.compiled = compiled and bookkeeping.compiled_available()
        make = lambda: make_env(cfg)  # noqa: E731
        if cfg.backend == "envpool":  # EnvPool's C++ pool with gymnasium's spaces (run/envs/envpool_backend.py)
            from .envpool_backend import EnvPoolVectorEnv
            self.envs = EnvPoolVectorEnv(cfg, num_envs, probe_spaces(cfg))
        elif cfg.vectorization == "sync":
            self.envs = SerialVectorEnv(make, num_envs)
        else:
            self.envs = gym.vector.AsyncVectorEnv([make] * num_envs, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
        self.num_envs = num_envs
        self.single_observation_space = self.envs.single_observation_space
        self.single_action_space = self.envs.single_action_space
        self.image = is_image(self.single_observation_space)  # stored as uint8, never normalised
        self.obs_norm = ObsNormalizer(self.single_observation_space.shape, cfg.normalize_obs, cfg.clip_obs, self.image)
        self.reward_scaler = RewardScaler(num_envs, gamma, cfg.normalize_reward, cfg.clip_reward)
        self.actions = ActionAdapter(self.single_action_space, cfg.action_mode)
        self.episodes = EpisodeTracker(num_envs)
        raw, _ = self.envs.reset(seed=list(seeds))  # one seed per sub-env (run/loop/seeds.py)
        self.raw_obs_dtype = raw.dtype  # what the compiled bookkeeping is prepared for (bookkeeping.prepare)
        self.obs = self.obs_norm(raw, update=True)
        self.next_is_reset = np.zeros(num_envs, bool)
        self.last_lives = self.lives()  # episodic life: a step that lowers these loses a life

    def lives(self) -> np.ndarray | None:
        """Each env's lives left (Atari games, with ``env.episodic_life``), else None."""
        if not self.cfg.episodic_life:
            return None
        if isinstance(self.envs, SerialVectorEnv):
            return np.array([lives(env) for env in self.envs.envs], np.int64)
        return self.envs.lives()  # EnvPool's (async vectorisation is refused with episodic life)

    # -- checkpoint state ----------------------------------------------------------------------
    # Checkpoints are taken between iterations. The envs' future is then fixed by each sub-env's
    # dynamics state and RNG, its wrappers' counters (TimeLimit's elapsed steps), the vector
    # env's autoreset flags, and what this class carries from step to step: the current
    # (normalised) observation, the running episode returns, the reward scaler's discounted sum.

    @property
    def exact_state_supported(self) -> bool:
        """True when ``state_dict`` captures the sub-envs exactly (see ``sub_env_state``)."""
        return isinstance(self.envs, SerialVectorEnv) and all(
            restorable(env.unwrapped) for env in self.envs.envs)

    def state_dict(self) -> dict:
        state = {"obs_norm": self.obs_norm.stats.state_dict(), "reward_scaler": self.reward_scaler.state_dict(),
                 "obs": self.obs.copy(), "next_is_reset": self.next_is_reset.copy(),
                 "episodes": {"returns": self.episodes.returns.copy(), "lengths": self.episodes.lengths.copy()},
                 "spaces_rng": spaces_rng(self.envs)}
        if self.exact_state_supported:
            state["autoreset"] = self.envs._autoreset_envs.copy()
            state["sub_envs"] = [sub_env_state(env) for env in self.envs.envs]
        return state

    def load_state_dict(self, state: dict, reseed: list[int]) -> bool:
        """Restore the statistics, and the envs exactly where the checkpoint allows it.

        Returns False when the envs could not be restored exactly (async vectorisation, EnvPool,
        or an env whose internals are not plain data, e.g. Box2D): they are then reset with the seeds
        ``reseed`` and the run continues correctly, but not bit-for-bit as if uninterrupted.
        """
        self.obs_norm.stats.load_state_dict(state["obs_norm"])
        self.reward_scaler.load_state_dict(state["reward_scaler"])
        set_spaces_rng(self.envs, state["spaces_rng"])
        if "sub_envs" in state and self.exact_state_supported and len(state["sub_envs"]) == self.num_envs:
            for env, sub in zip(self.envs.envs, state["sub_envs"]):
                load_sub_env_state(env, sub)
            self.envs._autoreset_envs = np.asarray(state["autoreset"], bool).copy()
            self.obs = np.asarray(state["obs"], self.obs.dtype).copy()
            self.last_lives = self.lives()
            self.next_is_reset = np.asarray(state["next_is_reset"], bool).copy()
            self.episodes.returns = np.asarray(state["episodes"]["returns"], np.float64).copy()
            self.episodes.lengths = np.asarray(state["episodes"]["lengths"], np.int64).copy()
            return True
        # Fresh episodes: nothing in flight carries over.
        raw, _ = self.envs.reset(seed=list(reseed))
        self.obs = self.obs_norm(raw, update=True)
        self.next_is_reset = np.zeros(self.num_envs, bool)
        self.last_lives = self.lives()
        self.episodes = EpisodeTracker(self.num_envs)
        self.reward_scaler.discounted = np.zeros(self.num_envs)
        return False

    def close(self) -> None:
        self.envs.close()


# -- sub-env state -------------------------------------------------------------------------------


