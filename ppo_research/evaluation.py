"""Deterministic evaluation on a separate env, with the training normalisation frozen."""
from __future__ import annotations

import numpy as np
import torch

from .config import EnvConfig
from .envs import ActionAdapter, ObsNormalizer, make_env
from .networks import ActorCritic

EVAL_SEED_OFFSET = 1_000_003  # eval episodes never share seeds with training envs


class Evaluator:
    def __init__(self, cfg: EnvConfig, episodes: int, seed: int):
        self.env = make_env(cfg)
        self.actions = ActionAdapter(self.env.action_space, cfg.action_mode)
        self.episodes, self.seed = episodes, seed + EVAL_SEED_OFFSET

    @torch.inference_mode()
    def __call__(self, policy: ActorCritic, obs_norm: ObsNormalizer) -> np.ndarray:
        """Returns of ``episodes`` episodes with the mean action. Episode j always uses seed
        ``seed + j``, so evaluations differ only through the policy."""
        returns = np.zeros(self.episodes)
        for j in range(self.episodes):
            obs, _ = self.env.reset(seed=self.seed + j)
            done = False
            while not done:
                x = torch.from_numpy(obs_norm(obs[None], update=False))
                action = policy.distribution(x).mode().numpy()[0]
                obs, reward, terminated, truncated, _ = self.env.step(self.actions(action))
                returns[j] += float(reward)
                done = terminated or truncated
        return returns

    def close(self) -> None:
        self.env.close()
