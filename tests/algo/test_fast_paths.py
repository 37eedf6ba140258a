"""The optimised paths compute what a plain PyTorch PPO computes, on the same batch.

Reference: nn.Sequential actor and critic, torch.distributions.Normal with argument validation,
torch.optim.Adam (default implementation) and torch.nn.utils.clip_grad_norm_.
"""
from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import CONF_DIR, build_trainer, compose_config
from hydra.utils import instantiate
from torch import nn
from torch.distributions import Normal

from ppo_research.algo.batch import Batch
from ppo_research.algo.inference import NumpyPolicy, TorchPolicy, rollout_policy
from ppo_research.algo.networks import MLPActorCritic, SharedMLPActorCritic

OBS = gym.spaces.Box(-np.inf, np.inf, (11,))


SPACES = {"box": gym.spaces.Box(-1, 1, (3,)), "discrete": gym.spaces.Discrete(5)}
NETWORK_KWARGS = {"tanh": {}, "relu": {"activation": "relu"}, "sde": {"state_dependent_std": True}}
# a state-dependent std is for Box actions only
POLICY_CASES = [pytest.param(SPACES[s], NETWORK_KWARGS[k], id=f"{k}-{s}")
                for s in SPACES for k in NETWORK_KWARGS if not (s == "discrete" and k == "sde")]


@pytest.mark.parametrize("net_cls", [MLPActorCritic, SharedMLPActorCritic])
@pytest.mark.parametrize("space, kwargs", POLICY_CASES)
def test_numpy_rollout_policy_matches_torch(net_cls, space, kwargs):
    torch.manual_seed(0)
    policy = net_cls(OBS, space, **kwargs)
    with torch.no_grad():  # move off the near-zero init so the comparison means something
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    obs = np.random.default_rng(0).normal(size=(8, 11)).astype(np.float32)
    fast, plain = NumpyPolicy(policy), TorchPolicy(policy)

    torch.manual_seed(1)
    action, log_prob, value, params = fast.act(obs)
    with torch.no_grad():
        dist, ref_value = policy(torch.from_numpy(obs))
        ref_log_prob = dist.log_prob(torch.as_tensor(action))
    np.testing.assert_allclose(value, ref_value.numpy(), rtol=1e-5, atol=1e-5)
    # numpy forms log N(a) from the noise it drew, torch from (a - mean) / std: float32 round-off
    # through exp(log_std) and the subtraction reaches ~3e-5 on values of order 1 (seen on the
    # state-dependent std, whose log-std varies per sample)
    np.testing.assert_allclose(log_prob, ref_log_prob.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(params, dist.params().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast.value(obs), plain.value(obs), rtol=1e-5, atol=1e-5)
    if isinstance(space, gym.spaces.Box):  # same generator, same draws as the torch path
        torch.manual_seed(1)
        ref_action = plain.act(obs)[0]
        np.testing.assert_allclose(action, ref_action, rtol=1e-5, atol=1e-5)


#: the options for flat observations (nature_cnn takes images and acts with torch: tests/algo/test_cnn.py)
NETWORK_OPTIONS = sorted(p.stem for p in (CONF_DIR / "network").glob("*.yaml") if p.stem != "nature_cnn")


@pytest.mark.parametrize("option", NETWORK_OPTIONS)
@pytest.mark.parametrize("space", [gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(5)], ids=["box", "discrete"])
def test_every_network_option_acts_in_numpy_as_in_torch(option, space):
    """Each conf/network option, built as a run builds it, is mirrored with its own maths."""
    torch.manual_seed(0)
    policy = instantiate(compose_config([f"network={option}"]).network, obs_space=OBS, action_space=space)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    actor = rollout_policy(policy)
    obs = np.random.default_rng(0).normal(size=(8, 11)).astype(np.float32)
    with torch.no_grad():
        dist, value = policy(torch.from_numpy(obs))
    np.testing.assert_allclose(actor.value(obs), value.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(actor.mode(obs), dist.mode().numpy(), rtol=1e-5, atol=1e-5)
    torch.manual_seed(1)
    _, log_prob, _, params = actor.act(obs)
    np.testing.assert_allclose(params, dist.params().numpy(), rtol=1e-5, atol=1e-5)


class DoubledMean(MLPActorCritic):
    """A user's network: the parent's layers, a different distribution."""

    def distribution(self, obs):
        dist = super().distribution(obs)
        dist.mean = 2.0 * dist.mean + 1.0
        return dist


def test_a_subclass_that_changes_the_distribution_gets_torchs_numbers():
    torch.manual_seed(0)
    policy = DoubledMean(OBS, gym.spaces.Box(-1, 1, (3,)))
    actor = rollout_policy(policy)
    assert isinstance(actor, TorchPolicy)  # it declared no mirror of its own maths
    obs = np.random.default_rng(0).normal(size=(8, 11)).astype(np.float32)
    with torch.no_grad():
        expected = policy.distribution(torch.from_numpy(obs)).mode().numpy()
    np.testing.assert_allclose(actor.mode(obs), expected, rtol=1e-6)
    assert np.abs(expected).min() > 0.5  # 2 * (near-zero mean) + 1: the parent's maths would give ~0


def test_numpy_categorical_samples_follow_the_probabilities():
    torch.manual_seed(0)
    policy = MLPActorCritic(OBS, gym.spaces.Discrete(4), policy_gain=3.0)
    obs = np.zeros((20_000, 11), np.float32) + 0.5
    action, *_ = NumpyPolicy(policy).act(obs)
    with torch.no_grad():
        probs = policy.distribution(torch.from_numpy(obs[:1])).logits.exp()[0].numpy()
    np.testing.assert_allclose(np.bincount(action, minlength=4) / len(action), probs, atol=0.015)


def plain_ppo_loss(actor, critic, log_std, batch: Batch, idx, epsilon, vf_coef, ent_coef):
    """The textbook minibatch loss, written without any of the framework's pieces."""
    obs, actions = batch.obs[idx], batch.actions[idx]
    dist = Normal(actor(obs), log_std.exp().expand(len(idx), -1), validate_args=True)
    log_prob = dist.log_prob(actions).sum(-1)
    adv = batch.advantages[idx]
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    ratio = torch.exp(log_prob - batch.log_probs[idx])
    policy_loss = -torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * adv).mean()
    value_loss = 0.5 * ((critic(obs).squeeze(-1) - batch.returns[idx]) ** 2).mean()
    return policy_loss + vf_coef * value_loss - ent_coef * dist.entropy().sum(-1).mean()


def sequential_copy(mlp) -> nn.Sequential:
    layers = []
    for i, layer in enumerate(mlp.layers):
        layers.append(copy.deepcopy(layer))
        if i < len(mlp.layers) - 1:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def test_trainer_minibatch_loss_gradients_and_step_match_plain_pytorch(tmp_path):
    trainer = build_trainer(["env=halfcheetah", "algo.num_steps=256", "algo.minibatch_size=64",
                             "algo.ent_coef=0.01", "total_timesteps=256", "progress=false"], tmp_path)
    try:
        with torch.no_grad():  # a policy that has moved, so ratios differ from 1 and some clip
            for p in trainer.member.policy.parameters():
                p.add_(0.05 * torch.randn_like(p))
        trainer.member.actor.sync()
        rollout, _ = trainer.member.collector.collect(trainer.member.actor)
        advantages = trainer.member.estimator(rollout.rewards, rollout.values, rollout.next_values, rollout.terminated,
                                       rollout.episode_end, rollout.valid)
        batch = Batch.from_rollout(rollout, advantages)
        with torch.no_grad():
            for p in trainer.member.policy.parameters():
                p.add_(0.05 * torch.randn_like(p))
        idx = torch.arange(64)
        actor, critic = sequential_copy(trainer.member.policy.actor), sequential_copy(trainer.member.policy.critic)
        log_std = nn.Parameter(trainer.member.policy.log_std.detach().clone())

        # the framework's path
        algo = trainer.member.cfg.algo
        pb, value = trainer.update.policy_batch(batch, idx)
        total = (trainer.member.loss(pb) + algo.vf_coef * trainer.update.value_loss(value, batch.values[idx], batch.returns[idx])
                 - algo.ent_coef * pb.dist.entropy().mean())
        trainer.optimizer.zero_grad()
        total.backward()

        # the plain path
        reference = plain_ppo_loss(actor, critic, log_std, batch, idx, 0.2, algo.vf_coef, algo.ent_coef)
        reference.backward()
        assert total.item() == pytest.approx(reference.item(), rel=1e-5)
        assert ((pb.ratio - 1).abs() > 0.2).any(), "no sample was clipped: the comparison is too easy"

        fast_grads = [p.grad for p in trainer.member.policy.actor.parameters()] + \
                     [p.grad for p in trainer.member.policy.critic.parameters()] + [trainer.member.policy.log_std.grad]
        plain_params = [*actor.parameters(), *critic.parameters(), log_std]
        for fast_grad, p in zip(fast_grads, plain_params):
            torch.testing.assert_close(fast_grad, p.grad, rtol=1e-4, atol=1e-6)

        # one optimiser step: fused Adam on the flat buffer vs per-tensor Adam
        plain_adam = torch.optim.Adam(plain_params, lr=algo.learning_rate, eps=algo.adam_eps)
        torch.nn.utils.clip_grad_norm_(plain_params, algo.max_grad_norm)
        plain_adam.step()
        trainer.optimizer.clip_grad_norm(algo.max_grad_norm)
        trainer.optimizer.step()
        fast_params = [*trainer.member.policy.actor.parameters(), *trainer.member.policy.critic.parameters(), trainer.member.policy.log_std]
        for fast_p, p in zip(fast_params, plain_params):
            torch.testing.assert_close(fast_p, p, rtol=1e-5, atol=1e-6)
    finally:
        trainer.close()


@pytest.mark.parametrize("net_cls", [MLPActorCritic, SharedMLPActorCritic])
@pytest.mark.parametrize("space,kwargs", [(gym.spaces.Box(-1, 1, (3,)), {}),
                                          (gym.spaces.Box(-1, 1, (3,)), {"state_dependent_std": True}),
                                          (gym.spaces.Discrete(5), {})], ids=["box", "sde", "discrete"])
def test_numpy_mode_matches_torch_mode(net_cls, space, kwargs):
    """Evaluation acts with NumpyPolicy.mode: the same deterministic action as the network's."""
    torch.manual_seed(0)
    policy = net_cls(OBS, space, policy_gain=1.0, **kwargs)
    obs = np.random.default_rng(1).normal(size=(16, 11)).astype(np.float32)
    np.testing.assert_allclose(NumpyPolicy(policy).mode(obs), TorchPolicy(policy).mode(obs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("space,kwargs,envs", [(gym.spaces.Box(-1, 1, (3,)), {}, 1),
                                               (gym.spaces.Box(-1, 1, (3,)), {}, 5),  # 15 numbers a step
                                               (gym.spaces.Box(-1, 1, (3,)), {}, 6),  # 18: drawn step by step
                                               (gym.spaces.Box(-1, 1, (2,)), {"state_dependent_std": True}, 2),
                                               (gym.spaces.Discrete(5), {}, 40)], ids=["box", "box15", "box18", "sde", "discrete"])
@pytest.mark.parametrize("members", [1, 3])
def test_a_rollout_drawn_ahead_acts_as_one_drawn_step_by_step(space, kwargs, envs, members):
    """begin_rollout draws a rollout's noise in one call per generator: the same actions and
    log-probs as drawing at every step, and the generators end in the same state."""
    from ppo_research.algo.inference import StackedNumpyPolicy

    torch.manual_seed(0)
    policies = [MLPActorCritic(OBS, space, **kwargs) for _ in range(members)]
    obs = np.random.default_rng(0).normal(size=(members, envs, 11)).astype(np.float32)
    steps = 7

    def acts(ahead: bool):
        generators = [torch.Generator().manual_seed(10 + k) for k in range(members)]
        torch.manual_seed(3)
        if members == 1:
            actor, shape, x = NumpyPolicy(policies[0]), obs.shape[1:2], obs[0]
        else:
            actor = StackedNumpyPolicy([NumpyPolicy(p) for p in policies], generators)
            shape, x = obs.shape[:2], obs
        if ahead:
            actor.begin_rollout(steps, shape)
        out = [[a.copy() for a in actor.act(x)[:2]] for _ in range(steps)]
        return out, [g.get_state() for g in generators] + [torch.get_rng_state()]

    (by_step, states), (drawn_ahead, states_ahead) = acts(False), acts(True)
    for step, step_ahead in zip(by_step, drawn_ahead):
        for a, b in zip(step, step_ahead):
            np.testing.assert_array_equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(states, states_ahead))
    assert not np.array_equal(by_step[0][0], by_step[1][0])  # the steps did draw


@pytest.mark.parametrize("fast", [True, False])
def test_fast_paths_switch_every_fast_path_on_or_off(tmp_path, fast, monkeypatch):
    """algo.fast_paths: the numpy mirror in the rollout and evaluation, the compiled bookkeeping
    and the hand-written gradient, or the plain path (the torch network, numpy, autograd)."""
    from ppo_research.algo import update as update_module
    from ppo_research.run.envs import bookkeeping

    monkeypatch.setattr(bookkeeping, "COMPILE_FROM_STEPS", 0)  # this short run loads the kernel too

    trainer = build_trainer(["env=pendulum", f"algo.fast_paths={str(fast).lower()}", "total_timesteps=256",
                             "algo.num_steps=128", "algo.num_envs=2", "algo.minibatch_size=64", "algo.num_epochs=1",
                             "eval.episodes=1", "progress=false"], tmp_path)
    member = trainer.member
    assert isinstance(member.actor, NumpyPolicy if fast else TorchPolicy)
    assert member.envs.compiled is fast
    assert trainer.update.settings.fast_paths is fast
    made = []
    real = update_module.hand_gradient_for
    update_module.hand_gradient_for = lambda *a, **k: made.append(real(*a, **k)) or made[-1]
    try:
        trainer.train()
    finally:
        update_module.hand_gradient_for = real
        trainer.close()
    assert (made != [] and made[0] is not None) if fast else made == []
    assert isinstance(member.evaluator._actor, NumpyPolicy if fast else TorchPolicy)


def test_only_a_run_long_enough_to_pay_for_it_loads_the_compiled_bookkeeping(tmp_path):
    """Loading the kernel costs ~0.5 s a process (bookkeeping.COMPILE_FROM_STEPS): a short run
    takes the numpy step (the same numbers: tests/run/envs/test_bookkeeping.py), a long one the kernel."""
    from ppo_research.run.envs.bookkeeping import COMPILE_FROM_STEPS

    def compiled(total_timesteps: int) -> bool:
        trainer = build_trainer(["env=cartpole", f"total_timesteps={total_timesteps}", "algo.num_envs=2",
                                 "algo.num_steps=128", "progress=false"], tmp_path / str(total_timesteps))
        try:
            return trainer.member.envs.compiled
        finally:
            trainer.close()

    vector_steps = 2 * 128 * (COMPILE_FROM_STEPS // 128)  # env steps of a run whose last iteration ends just under
    assert not compiled(vector_steps)
    assert compiled(vector_steps + 2 * 128)


@pytest.mark.slow
def test_the_plain_path_learns_as_the_fast_one(tmp_path):
    """CartPole, 25k steps, 6 seeds per path (measured: every run of both paths ends at 500;
    the mean training return over the run 352.0 fast, 335.9 plain). Tolerances: each run's
    final evaluation >= 450, and the plain path's mean training return within 15% of the fast
    path's."""
    import json

    from helpers import run_cli

    means = {}
    for fast in ("true", "false"):
        sweep = tmp_path / fast
        proc = run_cli(["-m", "env=cartpole", "total_timesteps=25000", "seed=0,1,2,3,4,5", f"algo.fast_paths={fast}",
                        "logger=none", "progress=false", "hydra/launcher=population", "hydra.launcher.processes=2",
                        f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=1800)
        assert proc.returncode == 0, proc.stderr[-3000:]
        curves = []
        for job in range(6):
            summary = json.loads((sweep / str(job) / "summary.json").read_text())
            assert summary["eval_return"] >= 450, (fast, job, summary["eval_return"])
            rows = [json.loads(line) for line in (sweep / str(job) / "metrics.jsonl").read_text().splitlines()]
            returns = [r["episode_return"] for r in rows if "episode_return" in r]
            curves.append(sum(returns) / len(returns))
        means[fast] = sum(curves) / len(curves)
    assert abs(means["false"] - means["true"]) <= 0.15 * means["true"], means
