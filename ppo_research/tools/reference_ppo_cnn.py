"""Reference PPO on pixels: a straightforward single-file CNN PPO with standard PyTorch components.

The benchmark times this file side by side with ppo_research on Atari games, as it times
``reference_ppo.py`` (the MLP one) on flat observations. It is PPO (Schulman et al. 2017, sec. 6.4)
written the plain way: the Nature CNN of Mnih et al. (2015) (conv 32 8x8/4, conv 64 4x4/2, conv 64
3x3/1, dense 512, ReLU) as one trunk shared by a categorical policy head and a value head,
orthogonal init (gain sqrt(2) in the trunk, 0.01 for the policy, 1 for the value),
``torch.distributions``, Adam, GAE, the clipped surrogate objective and K epochs of shuffled
minibatches. Its GAE, update epochs and episode bookkeeping are ``reference_ppo.py``'s; it depends
on nothing else in the package.

The envs are gymnasium + ale-py with gymnasium's standard wrappers, in a ``SyncVectorEnv``:
``ALE/<Game>-v5`` made with ``frameskip=1`` and ``repeat_action_probability=0``;
``AtariPreprocessing`` (up to 30 no-ops after a reset, frame skip 4 with max-pooling, 84x84
grayscale); ``FrameStackObservation(4)`` (uint8 [4, 84, 84], scaled to [0, 1] in the network);
``RecordEpisodeStatistics`` (the raw game score); the reward's sign for learning. A lost life is
terminal for learning (no bootstrap past it) while the game goes on, read from ALE's ``lives``.
There is no fire-on-reset wrapper: the policy presses FIRE itself.

Defaults are the PPO paper's Atari settings (Table 5): 8 envs, horizon 128, 3 epochs, minibatch
32 x 8, Adam 2.5e-4 x alpha, clip 0.1 x alpha (alpha annealed linearly from 1 to 0), value
coefficient 1, entropy 0.01, gamma 0.99, lambda 0.95; gradient norm clipped at 0.5.

    python -m ppo_research.tools.reference_ppo_cnn --env ALE/Breakout-v5 --steps 4096 --seed 0

prints the JSON line ``reference_ppo.py`` prints (the same training loop, ``reference_ppo.run``).
"""
from __future__ import annotations

import argparse
import json

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical

from .reference_ppo import add_ppo_arguments, run, seed_all, settings

#: Table 5's settings (the keys of reference_ppo.DEFAULTS, plus the annealed clip and torch threads)
DEFAULTS = {
    "learning_rate": 2.5e-4,
    "anneal_lr": True,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "clip_coef": 0.1,
    "anneal_clip": True,
    "vf_coef": 1.0,
    "ent_coef": 0.01,
    "max_grad_norm": 0.5,
    "norm_adv": True,
    "torch_threads": 1,
}


def make_env(env_id: str):
    """A thunk for SyncVectorEnv: the game with the standard Atari wrappers."""

    def thunk():
        import ale_py

        gym.register_envs(ale_py)
        env = gym.make(env_id, frameskip=1, repeat_action_probability=0.0)
        env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84,
                                              terminal_on_life_loss=False, grayscale_obs=True)
        env = gym.wrappers.FrameStackObservation(env, 4)
        env = gym.wrappers.RecordEpisodeStatistics(env)  # inside the reward clipping: the raw score
        return gym.wrappers.TransformReward(env, lambda r: float(np.sign(r)))

    return thunk


def layer(module: nn.Module, gain: float = np.sqrt(2)) -> nn.Module:
    nn.init.orthogonal_(module.weight, gain)
    nn.init.constant_(module.bias, 0.0)
    return module


class Agent(nn.Module):
    def __init__(self, obs_shape: tuple[int, int, int], num_actions: int):
        super().__init__()
        channels, height, width = obs_shape
        for kernel, stride in ((8, 4), (4, 2), (3, 1)):
            height, width = (height - kernel) // stride + 1, (width - kernel) // stride + 1
        self.trunk = nn.Sequential(
            layer(nn.Conv2d(channels, 32, 8, stride=4)), nn.ReLU(),
            layer(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten(),
            layer(nn.Linear(64 * height * width, 512)), nn.ReLU(),
        )
        self.actor = layer(nn.Linear(512, num_actions), gain=0.01)
        self.critic = layer(nn.Linear(512, 1), gain=1.0)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return self.trunk(obs.float() / 255.0)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.features(obs)).squeeze(-1)

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor | None = None):
        """Action (sampled if not given), its log-prob, the entropy and the value: one trunk pass."""
        hidden = self.features(obs)
        dist = Categorical(logits=self.actor(hidden))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(hidden).squeeze(-1)


def train(env_id: str, total_timesteps: int, seed: int = 0, num_envs: int = 8, num_steps: int = 128,
          num_epochs: int = 3, minibatch_size: int = 256, episodes: str | None = None, **kw) -> dict:
    args = settings(DEFAULTS, kw)
    seed_all(seed, args["torch_threads"])
    envs = gym.vector.SyncVectorEnv(
        [make_env(env_id) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,  # done step returns the reset obs
    )
    envs.action_space.seed(seed)
    agent = Agent(envs.single_observation_space.shape, int(envs.single_action_space.n))
    return run(envs, agent, args, seed, total_timesteps, num_steps, num_epochs, minibatch_size,
               obs_dtype=torch.uint8, lost_life=LifeLoss(), episodes=episodes)  # frames stay bytes


class LifeLoss:
    """Episodic life: the step that loses a life ends the episode for learning only (ALE's lives)."""

    def __init__(self):
        self.lives = None

    def __call__(self, info: dict, done) -> np.ndarray | None:
        lives, self.lives = self.lives, np.asarray(info["lives"])
        if done is None:  # the reset
            return None
        return np.logical_and(self.lives < lives, ~done)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_ppo_arguments(parser, DEFAULTS, "ALE/Breakout-v5", 4096, 8, 128, 3, 256)  # steps: 4 frames each
    parser.add_argument("--no-anneal", action="store_true", help="keep the learning rate and clip range constant")
    a = parser.parse_args(argv)
    result = train(a.env, a.steps, seed=a.seed, num_envs=a.num_envs, num_steps=a.num_steps,
                   num_epochs=a.num_epochs, minibatch_size=a.minibatch_size, learning_rate=a.lr,
                   anneal_lr=not a.no_anneal, anneal_clip=not a.no_anneal, gamma=a.gamma, gae_lambda=a.gae_lambda,
                   clip_coef=a.clip_coef, vf_coef=a.vf_coef, ent_coef=a.ent_coef, max_grad_norm=a.max_grad_norm,
                   episodes=a.episodes)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
