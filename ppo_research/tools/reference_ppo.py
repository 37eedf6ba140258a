"""Reference PPO: a straightforward single-file implementation with standard PyTorch components.

The benchmark times this file side by side with ppo_research as a speed reference. It is PPO
(Schulman et al. 2017) written the plain way: ``nn.Sequential`` actor and critic, a state-independent
log-std parameter, ``torch.distributions``, Adam, GAE, the clipped surrogate objective and
K epochs of shuffled minibatches, on a gymnasium ``SyncVectorEnv`` with gymnasium's standard
wrappers. It depends on nothing else in the package.

Defaults are the PPO paper's MuJoCo settings: one env, 2048 steps per rollout, 10 epochs,
minibatch 64, Adam 3e-4, gamma 0.99, lambda 0.95, clip 0.2, value coefficient 0.5, no entropy bonus,
gradient norm clipped at 0.5.

    python -m ppo_research.tools.reference_ppo --env HalfCheetah-v5 --steps 20480 --seed 0

prints one JSON line: ``{"global_step", "wall_time_s", "sps", "train_return"}`` (train_return: the
mean of the last 20 episodes' returns). SPS is end-to-end training throughput (rollout and update)
over the training loop; environment construction is not timed. ``--episodes FILE`` also writes
every finished episode as a JSON line ``{"global_step", "return"}``: the run's learning curve.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical, Normal

DEFAULTS = {
    "learning_rate": 3e-4,
    "anneal_lr": False,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "clip_coef": 0.2,
    "vf_coef": 0.5,
    "ent_coef": 0.0,
    "max_grad_norm": 0.5,
    "norm_adv": True,
}


def make_env(env_id: str, gamma: float = 0.99):
    """A thunk for SyncVectorEnv; continuous-control envs get the usual normalisation wrappers."""

    def thunk():
        env = gym.make(env_id)
        env = gym.wrappers.RecordEpisodeStatistics(env)  # innermost: records the raw return
        if isinstance(env.action_space, gym.spaces.Box):
            env = gym.wrappers.ClipAction(env)
            env = gym.wrappers.NormalizeObservation(env)
            env = gym.wrappers.TransformObservation(
                env, lambda obs: np.clip(obs, -10.0, 10.0), env.observation_space)
            env = gym.wrappers.NormalizeReward(env, gamma=gamma)
            env = gym.wrappers.TransformReward(env, lambda r: float(np.clip(r, -10.0, 10.0)))
        return env

    return thunk


def layer(in_dim: int, out_dim: int, gain: float = np.sqrt(2)) -> nn.Linear:
    linear = nn.Linear(in_dim, out_dim)
    nn.init.orthogonal_(linear.weight, gain)
    nn.init.constant_(linear.bias, 0.0)
    return linear


class Agent(nn.Module):
    def __init__(self, obs_dim: int, action_space: gym.Space):
        super().__init__()
        self.continuous = isinstance(action_space, gym.spaces.Box)
        out_dim = int(np.prod(action_space.shape)) if self.continuous else int(action_space.n)
        self.critic = nn.Sequential(
            layer(obs_dim, 64), nn.Tanh(),
            layer(64, 64), nn.Tanh(),
            layer(64, 1, gain=1.0),
        )
        self.actor = nn.Sequential(
            layer(obs_dim, 64), nn.Tanh(),
            layer(64, 64), nn.Tanh(),
            layer(64, out_dim, gain=0.01),
        )
        if self.continuous:
            self.log_std = nn.Parameter(torch.zeros(out_dim))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def dist(self, obs: torch.Tensor):
        out = self.actor(obs)
        if self.continuous:
            return Normal(out, self.log_std.exp().expand_as(out))
        return Categorical(logits=out)

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor | None = None):
        """Action (sampled if not given), its log-prob, the entropy and the value."""
        dist = self.dist(obs)
        if action is None:
            action = dist.sample()
        if self.continuous:
            return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1), self.value(obs)
        return action, dist.log_prob(action), dist.entropy(), self.value(obs)


def train(env_id: str, total_timesteps: int, seed: int = 0, num_envs: int = 1, num_steps: int = 2048,
          num_epochs: int = 10, minibatch_size: int = 64, episodes: Optional[str] = None, **kw) -> dict:
    args = settings(DEFAULTS, kw)
    seed_all(seed, 1)
    envs = gym.vector.SyncVectorEnv(
        [make_env(env_id, args["gamma"]) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,  # done step returns the reset obs
    )
    envs.action_space.seed(seed)
    agent = Agent(int(np.prod(envs.single_observation_space.shape)), envs.single_action_space)
    return run(envs, agent, args, seed, total_timesteps, num_steps, num_epochs, minibatch_size, episodes=episodes)


def settings(defaults: dict, kw: dict) -> dict:
    unknown = set(kw) - set(defaults)
    if unknown:
        raise TypeError(f"unknown arguments: {sorted(unknown)}")
    return {**defaults, **kw}


def seed_all(seed: int, threads: int) -> None:
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(envs, agent, args: dict, seed: int, total_timesteps: int, num_steps: int, num_epochs: int,
        minibatch_size: int, obs_dtype=torch.float32, lost_life=None, episodes: Optional[str] = None) -> dict:
    """PPO on ``envs`` with ``agent``: rollouts of ``num_steps``, GAE, then the update epochs.
    ``lost_life(info, done)``, if given, marks the steps that are terminal for learning only (a
    lost life in an Atari game that goes on); it first sees the reset's info, with ``done=None``.
    ``episodes``: a file that gets each finished episode's step and return as a JSON line."""
    gamma, lam = args["gamma"], args["gae_lambda"]
    optimizer = torch.optim.Adam(agent.parameters(), lr=args["learning_rate"], eps=1e-5)
    num_envs = envs.num_envs
    batch_size = num_envs * num_steps
    num_iterations = max(1, total_timesteps // batch_size)
    obs_shape = envs.single_observation_space.shape
    as_obs = lambda o: torch.as_tensor(o, dtype=obs_dtype).reshape(-1, *obs_shape)  # noqa: E731
    discrete = isinstance(envs.single_action_space, gym.spaces.Discrete)
    action_shape = envs.single_action_space.shape

    obs_buf = torch.zeros((num_steps, num_envs) + obs_shape, dtype=obs_dtype)
    actions_buf = torch.zeros((num_steps, num_envs) + action_shape, dtype=torch.long if discrete else torch.float32)
    logprobs_buf = torch.zeros((num_steps, num_envs))
    rewards_buf = torch.zeros((num_steps, num_envs))
    dones_buf = torch.zeros((num_steps, num_envs))
    values_buf = torch.zeros((num_steps, num_envs))

    episode_returns: list[float] = []  # every finished episode's, in order
    log = open(episodes, "w", buffering=1) if episodes else None  # line-buffered: a killed run keeps its curve
    global_step = 0
    next_obs, info = envs.reset(seed=seed)
    next_obs = as_obs(next_obs)
    if lost_life is not None:
        lost_life(info, None)
    start = time.perf_counter()

    for iteration in range(num_iterations):
        alpha = 1.0 - iteration / num_iterations
        if args["anneal_lr"]:
            optimizer.param_groups[0]["lr"] = alpha * args["learning_rate"]
        clip_coef = args["clip_coef"] * (alpha if args.get("anneal_clip") else 1.0)

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
            finished = len(episode_returns)
            reward, done = episode_ends(agent, reward, terminated, truncated, info, gamma, episode_returns, as_obs)
            if log is not None:
                for episode_return in episode_returns[finished:]:
                    log.write(json.dumps({"global_step": global_step, "return": episode_return}) + "\n")
            if lost_life is not None:
                done = np.logical_or(done, lost_life(info, done))
            rewards_buf[step] = reward
            dones_buf[step] = torch.as_tensor(done, dtype=torch.float32)
            next_obs = as_obs(obs)

        with torch.no_grad():
            next_value = agent.value(next_obs)
        advantages, returns = gae(rewards_buf, values_buf, dones_buf, next_value, gamma, lam)
        batch = (obs_buf.reshape((batch_size,) + obs_shape), actions_buf.reshape((batch_size,) + action_shape),
                 logprobs_buf.reshape(-1), advantages.reshape(-1), returns.reshape(-1))
        update(agent, optimizer, batch, num_epochs, minibatch_size, clip_coef, args)

    envs.close()
    if log is not None:
        log.close()
    return result(global_step, start, episode_returns[-20:])


def episode_ends(agent, reward, terminated, truncated, info, gamma: float, recent_returns: list, as_obs):
    """The step's rewards as a tensor, with a truncated episode bootstrapped from its final
    observation (``as_obs`` makes it a batch of one), and whether each env's episode ended;
    finished episodes' returns go to ``recent_returns``."""
    reward = torch.as_tensor(reward, dtype=torch.float32)
    done = np.logical_or(terminated, truncated)
    if done.any():
        final = info["final_info"]
        for i in np.flatnonzero(final.get("_episode", np.zeros(len(done), bool))):
            recent_returns.append(float(final["episode"]["r"][i]))
        # A time-limit truncation is not a real end: bootstrap from the final observation.
        for i in np.flatnonzero(np.logical_and(truncated, ~terminated)):
            with torch.no_grad():
                reward[i] += gamma * agent.value(as_obs(info["final_obs"][i]))[0]
    return reward, done


def gae(rewards, values, dones, next_value, gamma: float, lam: float):
    """GAE advantages and returns; dones[t] says the episode ended at step t, so nothing flows
    back from t + 1."""
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros(rewards.shape[1])
    for t in reversed(range(rewards.shape[0])):
        next_v = next_value if t == rewards.shape[0] - 1 else values[t + 1]
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_v * not_done - values[t]
        last_gae = delta + gamma * lam * not_done * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


def update(agent, optimizer, batch: tuple, num_epochs: int, minibatch_size: int, clip_coef: float, args: dict) -> None:
    """K epochs of shuffled minibatches of the clipped surrogate, the value loss and the entropy bonus."""
    b_obs, b_actions, b_logprobs, b_advantages, b_returns = batch
    batch_size = len(b_logprobs)
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


def result(global_step: int, start: float, recent_returns: list) -> dict:
    wall_time = time.perf_counter() - start
    return {
        "global_step": global_step,
        "wall_time_s": wall_time,
        "sps": global_step / max(wall_time, 1e-9),
        "train_return": float(np.mean(recent_returns)) if recent_returns else None,
    }


def add_ppo_arguments(parser: argparse.ArgumentParser, defaults: dict, env: str, steps: int, num_envs: int,
                      num_steps: int, num_epochs: int, minibatch_size: int) -> None:
    """The options both references share, with their defaults: the env, the sizes, PPO's coefficients."""
    parser.add_argument("--env", default=env)
    parser.add_argument("--steps", type=int, default=steps, help="total agent steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-envs", type=int, default=num_envs)
    parser.add_argument("--num-steps", type=int, default=num_steps, help="steps per env per rollout")
    parser.add_argument("--num-epochs", type=int, default=num_epochs)
    parser.add_argument("--minibatch-size", type=int, default=minibatch_size)
    parser.add_argument("--lr", type=float, default=defaults["learning_rate"])
    parser.add_argument("--gamma", type=float, default=defaults["gamma"])
    parser.add_argument("--gae-lambda", type=float, default=defaults["gae_lambda"])
    parser.add_argument("--clip-coef", type=float, default=defaults["clip_coef"])
    parser.add_argument("--vf-coef", type=float, default=defaults["vf_coef"])
    parser.add_argument("--ent-coef", type=float, default=defaults["ent_coef"])
    parser.add_argument("--max-grad-norm", type=float, default=defaults["max_grad_norm"])
    parser.add_argument("--episodes", metavar="FILE", help="write each finished episode's step and return (JSON lines)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_ppo_arguments(parser, DEFAULTS, "HalfCheetah-v5", 20480, 1, 2048, 10, 64)
    parser.add_argument("--anneal-lr", action="store_true")
    a = parser.parse_args(argv)
    result = train(a.env, a.steps, seed=a.seed, num_envs=a.num_envs, num_steps=a.num_steps,
                   num_epochs=a.num_epochs, minibatch_size=a.minibatch_size, learning_rate=a.lr,
                   anneal_lr=a.anneal_lr, gamma=a.gamma, gae_lambda=a.gae_lambda, clip_coef=a.clip_coef,
                   vf_coef=a.vf_coef, ent_coef=a.ent_coef, max_grad_norm=a.max_grad_norm, episodes=a.episodes)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
