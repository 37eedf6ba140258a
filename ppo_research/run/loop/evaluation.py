"""Evaluation on a separate env, with the training normalisation frozen: the policy's mode, or
(``eval.deterministic=false``, Discrete actions) actions sampled from the evaluation's own stream."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ...algo.inference import rollout_policy
from ...algo.networks import ActorCritic
from ..config.schema import EnvConfig
from ..envs.training import ActionAdapter, ObsNormalizer, make_env
from .seeds import eval_episode_seed


class Evaluator:
    def __init__(self, cfg: EnvConfig, episodes: int, seed: int, record: bool = False, fast: bool = True,
                 deterministic: bool = True):
        self.env = make_env(cfg, render_mode="rgb_array" if record else None)
        self.actions = ActionAdapter(self.env.action_space, cfg.action_mode)
        self.episodes = episodes
        self.seed = seed
        self.record = record  # keep the first episode's frames for the logger's video
        self.frames: list[np.ndarray] = []
        self.fps = int(self.env.metadata.get("render_fps") or 30)
        self._actor = None
        self.fast = fast  # the numpy mirror of the policy where it has one (algo.fast_paths)
        self.deterministic = deterministic  # false: Discrete actions only (run/config/schema.py checks)

    def episode_seed(self, episode: int) -> int:
        """The seed episode ``episode`` of every evaluation starts from (run/loop/seeds.py)."""
        return eval_episode_seed(self.seed, episode)

    def __call__(self, policy: ActorCritic, obs_norm: ObsNormalizer) -> np.ndarray:
        """Returns of ``episodes`` episodes with the mode (or sampled) action. Episode j always starts
        from the run's evaluation stream j (run/loop/seeds.py), so evaluations differ only through
        the policy; sampled actions draw from a generator of that stream too, never the training's."""
        if self._actor is None or self._actor.policy is not policy:
            self._actor = rollout_policy(policy, fast=self.fast)  # the rollout's inference path
        actor = self._actor
        actor.sync()
        returns = np.zeros(self.episodes)
        self.frames = []
        for j in range(self.episodes):
            obs, _ = self.env.reset(seed=self.episode_seed(j))
            draws = np.random.default_rng(self.episode_seed(j))
            self._render(j)
            done = False
            while not done:
                x = obs_norm(obs[None], update=False)
                action = actor.mode(x)[0] if self.deterministic else sample(policy, x, draws)
                obs, reward, terminated, truncated, _ = self.env.step(self.actions(action))
                self._render(j)
                returns[j] += float(reward)
                done = terminated or truncated
        return returns

    def _render(self, episode: int) -> None:
        if not self.record or episode != 0:
            return
        try:
            self.frames.append(self.env.render())
        except Exception as err:  # no pygame / no OpenGL: evaluate on, without video
            warnings.warn(f"evaluation video disabled: {type(err).__name__}: {err}", stacklevel=2)
            self.record, self.frames = False, []

    def close(self) -> None:
        self.env.close()


@torch.inference_mode()
def sample(policy: ActorCritic, obs: np.ndarray, draws: np.random.Generator) -> int:
    """One action drawn from the policy's categorical distribution at ``obs`` (a batch of one)."""
    probs = policy.distribution(torch.from_numpy(obs).to(policy.device)).params()[0].exp().double().cpu().numpy()
    return int(draws.choice(len(probs), p=probs / probs.sum()))
