"""Environments: gymnasium vector envs plus the normalisation the trainer owns.

Observation normalisation and reward scaling live here rather than in gymnasium's wrappers so
that their statistics are plain arrays: saved in checkpoints, and frozen for evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from .config import ConfigError, EnvConfig


class RunningMeanStd:
    """Running mean and variance (parallel-batch update of Chan et al.)."""

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4

    def update(self, batch: np.ndarray) -> None:
        b_mean, b_var, b_count = batch.mean(0), batch.var(0), batch.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_count
        self.mean = self.mean + delta * b_count / total
        self.var = (self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total) / total
        self.count = total

    def state_dict(self) -> dict:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = np.asarray(state["mean"]), np.asarray(state["var"]), float(state["count"])


class ObsNormalizer:
    """(obs - mean) / std, clipped; statistics updated only while training."""

    def __init__(self, shape, enabled: bool, clip: float | None):
        self.enabled, self.clip = enabled, clip
        self.stats = RunningMeanStd(shape)

    def __call__(self, obs: np.ndarray, update: bool) -> np.ndarray:
        if not self.enabled:
            return obs.astype(np.float32)
        if update:
            self.stats.update(obs)
        out = (obs - self.stats.mean) / np.sqrt(self.stats.var + 1e-8)
        if self.clip is not None:
            out = np.clip(out, -self.clip, self.clip)
        return out.astype(np.float32)


class RewardScaler:
    """Divide rewards by the running std of the discounted return (no mean subtraction)."""

    def __init__(self, num_envs: int, gamma: float, enabled: bool, clip: float | None):
        self.enabled, self.gamma, self.clip = enabled, gamma, clip
        self.stats = RunningMeanStd(())
        self.discounted = np.zeros(num_envs)

    def __call__(self, rewards: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
        if not self.enabled:
            return rewards.astype(np.float32)
        self.discounted = self.discounted * self.gamma + rewards
        self.stats.update(self.discounted)
        self.discounted[episode_end] = 0.0
        out = rewards / np.sqrt(self.stats.var + 1e-8)
        if self.clip is not None:
            out = np.clip(out, -self.clip, self.clip)
        return out.astype(np.float32)

    def state_dict(self) -> dict:
        return {"stats": self.stats.state_dict(), "discounted": self.discounted.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.stats.load_state_dict(state["stats"])
        self.discounted = np.asarray(state["discounted"])


def make_env(cfg: EnvConfig, render_mode: str | None = None) -> gym.Env:
    kwargs = dict(cfg.kwargs)
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    try:
        return gym.make(cfg.id, render_mode=render_mode, **kwargs)
    except gym.error.Error as err:  # unknown id, missing dependency, bad version
        raise ConfigError("env.id", cfg.id, f"a registered gymnasium id ({type(err).__name__}: "
                                            f"{str(err).splitlines()[0]})") from None


def check_env(cfg: EnvConfig) -> None:
    """Fail fast on an unknown id without building the env."""
    try:
        gym.spec(cfg.id)
    except gym.error.Error as err:
        raise ConfigError("env.id", cfg.id, f"a registered gymnasium id ({str(err).splitlines()[0]})") from None


class ActionAdapter:
    """Map policy outputs to env actions for Box spaces: clip, rescale from [-1, 1], or pass."""

    def __init__(self, space: gym.Space, mode: str):
        self.box = isinstance(space, gym.spaces.Box)
        self.mode = mode if self.box else "none"
        if self.box:
            self.low, self.high = space.low.astype(np.float32), space.high.astype(np.float32)

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        if self.mode == "clip":
            return np.clip(actions, self.low, self.high)
        if self.mode == "rescale":
            return self.low + 0.5 * (np.clip(actions, -1.0, 1.0) + 1.0) * (self.high - self.low)
        return actions


@dataclass
class EpisodeTracker:
    """Undiscounted returns and lengths of training episodes, from the raw rewards."""

    num_envs: int
    returns: np.ndarray = field(init=False)
    lengths: np.ndarray = field(init=False)

    def __post_init__(self):
        self.returns = np.zeros(self.num_envs)
        self.lengths = np.zeros(self.num_envs, np.int64)

    def step(self, rewards: np.ndarray, episode_end: np.ndarray, valid: np.ndarray) -> list[tuple[float, int]]:
        self.returns += np.where(valid, rewards, 0.0)
        self.lengths += valid
        done = np.flatnonzero(episode_end)
        finished = [(float(self.returns[i]), int(self.lengths[i])) for i in done]
        self.returns[done] = 0.0
        self.lengths[done] = 0
        return finished


class TrainingEnvs:
    """N vector envs with normalisation; steps return what the rollout stores.

    gymnasium 1.x vector envs autoreset in NEXT_STEP mode: the step after an episode ends is a
    reset step (action ignored, reward 0). ``step`` reports it through ``valid = False``.
    """

    def __init__(self, cfg: EnvConfig, num_envs: int, gamma: float, seed: int):
        self.cfg = cfg
        check_env(cfg)
        make = lambda: make_env(cfg)  # noqa: E731
        vec_cls = gym.vector.SyncVectorEnv if cfg.vectorization == "sync" else gym.vector.AsyncVectorEnv
        self.envs = vec_cls([make for _ in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
        self.num_envs = num_envs
        self.single_observation_space = self.envs.single_observation_space
        self.single_action_space = self.envs.single_action_space
        self.obs_norm = ObsNormalizer(self.single_observation_space.shape, cfg.normalize_obs, cfg.clip_obs)
        self.reward_scaler = RewardScaler(num_envs, gamma, cfg.normalize_reward, cfg.clip_reward)
        self.actions = ActionAdapter(self.single_action_space, cfg.action_mode)
        self.episodes = EpisodeTracker(num_envs)
        raw, _ = self.envs.reset(seed=seed)
        self.obs = self.obs_norm(raw, update=True)
        self.next_is_reset = np.zeros(num_envs, bool)

    def step(self, actions: np.ndarray):
        """Returns (next_obs, scaled_reward, terminated, truncated, valid, finished_episodes)."""
        valid = ~self.next_is_reset
        raw_obs, rewards, terminated, truncated, _ = self.envs.step(self.actions(actions))
        episode_end = terminated | truncated
        finished = self.episodes.step(rewards, episode_end, valid)
        scaled = self.reward_scaler(rewards, episode_end)
        self.obs = self.obs_norm(raw_obs, update=True)
        self.next_is_reset = episode_end
        return self.obs, scaled, terminated, truncated, valid, finished

    def state_dict(self) -> dict:
        return {"obs_norm": self.obs_norm.stats.state_dict(), "reward_scaler": self.reward_scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.obs_norm.stats.load_state_dict(state["obs_norm"])
        self.reward_scaler.load_state_dict(state["reward_scaler"])

    def close(self) -> None:
        self.envs.close()
