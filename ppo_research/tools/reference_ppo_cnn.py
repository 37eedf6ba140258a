"""Reference PPO on pixels: a straightforward single-file CNN PPO with standard PyTorch components.

The benchmark times this file side by side with ppo_research on Atari games, as it times
``reference_ppo.py`` (the MLP one) on flat observations. It is PPO (Schulman et al. 2017, sec. 6.4)
written the plain way: the Nature CNN of Mnih et al. (2015) (conv 32 8x8/4, conv 64 4x4/2, conv 64
3x3/1, dense 512, ReLU) as one trunk shared by a categorical policy head and a value head,
orthogonal init (gain sqrt(2) in the trunk, 0.01 for the policy, 1 for the value),
``torch.distributions``, Adam, GAE, the clipped surrogate objective and K epochs of shuffled
minibatches. It depends on nothing else in the package.

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

prints one JSON line: ``{"global_step", "wall_time_s", "sps", "train_return"}``. SPS is end-to-end
training throughput (rollout and update) over the training loop; environment construction is not
timed.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from collections import deque

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical

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
          num_epochs: int = 3, minibatch_size: int = 256, **kw) -> dict:
    unknown = set(kw) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown arguments: {sorted(unknown)}")
    args = {**DEFAULTS, **kw}
    gamma, lam = args["gamma"], args["gae_lambda"]

    torch.set_num_threads(args["torch_threads"])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    envs = gym.vector.SyncVectorEnv(
        [make_env(env_id) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,  # done step returns the reset obs
    )
    envs.action_space.seed(seed)
    obs_shape = envs.single_observation_space.shape

    agent = Agent(obs_shape, int(envs.single_action_space.n))
    optimizer = torch.optim.Adam(agent.parameters(), lr=args["learning_rate"], eps=1e-5)

    batch_size = num_envs * num_steps
    num_iterations = max(1, total_timesteps // batch_size)

    obs_buf = torch.zeros((num_steps, num_envs) + obs_shape, dtype=torch.uint8)  # frames stay bytes
    actions_buf = torch.zeros((num_steps, num_envs), dtype=torch.long)
    logprobs_buf = torch.zeros((num_steps, num_envs))
    rewards_buf = torch.zeros((num_steps, num_envs))
    dones_buf = torch.zeros((num_steps, num_envs))
    values_buf = torch.zeros((num_steps, num_envs))

    recent_returns: deque[float] = deque(maxlen=20)
    global_step = 0
    next_obs, info = envs.reset(seed=seed)
    lives = np.asarray(info["lives"])
    next_obs = torch.as_tensor(next_obs)
    start = time.perf_counter()

    for iteration in range(num_iterations):
        alpha = 1.0 - iteration / num_iterations
        if args["anneal_lr"]:
            optimizer.param_groups[0]["lr"] = alpha * args["learning_rate"]
        clip_coef = args["clip_coef"] * (alpha if args["anneal_clip"] else 1.0)

        # Rollout.
        for step in range(num_steps):
            global_step += num_envs
            obs_buf[step] = next_obs
            with torch.no_grad():
                action, logprob, _, value = agent.evaluate(next_obs)
            actions_buf[step] = action
            logprobs_buf[step] = logprob
            values_buf[step] = value

            obs, reward, terminated, truncated, info = envs.step(action.numpy())
            reward = torch.as_tensor(reward, dtype=torch.float32)
            done = np.logical_or(terminated, truncated)
            if done.any():
                final = info["final_info"]
                for i in np.flatnonzero(final.get("_episode", np.zeros(num_envs, bool))):
                    recent_returns.append(float(final["episode"]["r"][i]))
                # A time-limit truncation is not a real end: bootstrap from the final observation.
                for i in np.flatnonzero(np.logical_and(truncated, ~terminated)):
                    final_obs = torch.as_tensor(info["final_obs"][i]).unsqueeze(0)
                    with torch.no_grad():
                        reward[i] += gamma * agent.value(final_obs)[0]
            # Episodic life: the step that loses a life ends the episode for learning only.
            new_lives = np.asarray(info["lives"])
            life_lost = np.logical_and(new_lives < lives, ~done)
            lives = new_lives
            rewards_buf[step] = reward
            dones_buf[step] = torch.as_tensor(np.logical_or(done, life_lost), dtype=torch.float32)
            next_obs = torch.as_tensor(obs)

        # GAE. dones_buf[t] says the episode ended at step t, so nothing flows back from t + 1.
        with torch.no_grad():
            next_value = agent.value(next_obs)
        advantages = torch.zeros_like(rewards_buf)
        last_gae = torch.zeros(num_envs)
        for t in reversed(range(num_steps)):
            next_v = next_value if t == num_steps - 1 else values_buf[t + 1]
            not_done = 1.0 - dones_buf[t]
            delta = rewards_buf[t] + gamma * next_v * not_done - values_buf[t]
            last_gae = delta + gamma * lam * not_done * last_gae
            advantages[t] = last_gae
        returns = advantages + values_buf

        b_obs = obs_buf.reshape((batch_size,) + obs_shape)
        b_actions = actions_buf.reshape(-1)
        b_logprobs = logprobs_buf.reshape(-1)
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)

        # K epochs of shuffled minibatches.
        for _ in range(num_epochs):
            perm = torch.randperm(batch_size)
            for lo in range(0, batch_size, minibatch_size):
                idx = perm[lo:lo + minibatch_size]
                _, new_logprob, entropy, new_value = agent.evaluate(b_obs[idx], b_actions[idx])
                ratio = (new_logprob - b_logprobs[idx]).exp()

                adv = b_advantages[idx]
                if args["norm_adv"] and len(idx) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = -torch.min(ratio * adv, ratio.clamp(1 - clip_coef, 1 + clip_coef) * adv).mean()
                v_loss = 0.5 * ((new_value - b_returns[idx]) ** 2).mean()
                loss = pg_loss + args["vf_coef"] * v_loss - args["ent_coef"] * entropy.mean()

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args["max_grad_norm"])
                optimizer.step()

    wall_time = time.perf_counter() - start
    envs.close()
    return {
        "global_step": global_step,
        "wall_time_s": wall_time,
        "sps": global_step / max(wall_time, 1e-9),
        "train_return": float(np.mean(recent_returns)) if recent_returns else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="ALE/Breakout-v5")
    parser.add_argument("--steps", type=int, default=4096, help="total agent steps (4 frames each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--num-steps", type=int, default=128, help="steps per env per rollout")
    parser.add_argument("--num-epochs", type=int, default=3)
    parser.add_argument("--minibatch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=DEFAULTS["learning_rate"])
    parser.add_argument("--no-anneal", action="store_true", help="keep the learning rate and clip range constant")
    parser.add_argument("--gamma", type=float, default=DEFAULTS["gamma"])
    parser.add_argument("--gae-lambda", type=float, default=DEFAULTS["gae_lambda"])
    parser.add_argument("--clip-coef", type=float, default=DEFAULTS["clip_coef"])
    parser.add_argument("--vf-coef", type=float, default=DEFAULTS["vf_coef"])
    parser.add_argument("--ent-coef", type=float, default=DEFAULTS["ent_coef"])
    parser.add_argument("--max-grad-norm", type=float, default=DEFAULTS["max_grad_norm"])
    a = parser.parse_args(argv)
    result = train(a.env, a.steps, seed=a.seed, num_envs=a.num_envs, num_steps=a.num_steps,
                   num_epochs=a.num_epochs, minibatch_size=a.minibatch_size, learning_rate=a.lr,
                   anneal_lr=not a.no_anneal, anneal_clip=not a.no_anneal, gamma=a.gamma, gae_lambda=a.gae_lambda,
                   clip_coef=a.clip_coef, vf_coef=a.vf_coef, ent_coef=a.ent_coef, max_grad_norm=a.max_grad_norm)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
