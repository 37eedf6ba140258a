"""The implementation choices of "What Matters in On-Policy RL" (Andrychowicz et al., 2021) as
options, each against an independent reference, plus the logs of iterations with no sample.

References: closed-form softplus/exp in numpy for the std parametrisations; the network's own
torch forward for the numpy rollout mirror; torch.nn.functional.huber_loss for the value loss;
a per-observation, per-step brute-force GAE for recomputed advantages; torch.optim.Adam
(default implementation) for Adam's betas. docs/what_matters.md documents the options.
"""
from __future__ import annotations

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import TINY, build_trainer, compose_config, read_metrics, run_cli
from torch.nn import functional as F

from ppo_research.algo.advantages import GAE, AdvantageRefresh
from ppo_research.algo.batch import Batch
from ppo_research.algo.distributions import DiagGaussian, TanhGaussian
from ppo_research.algo.inference import NumpyPolicy, TorchPolicy, rollout_policy
from ppo_research.algo.losses import ClipLoss
from ppo_research.algo.networks import MLPActorCritic, SharedMLPActorCritic
from ppo_research.algo.optim import FlatAdam
from ppo_research.algo.update import PPOUpdate, UpdateSettings, minibatch_slices
from ppo_research.errors import ConfigError
from ppo_research.run.loop.build import build

OBS = gym.spaces.Box(-np.inf, np.inf, (6,), np.float32)
BOX = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
DISCRETE = gym.spaces.Discrete(4)
CLASSES = [MLPActorCritic, SharedMLPActorCritic]


def softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0.0)


# -- action std parametrisation ------------------------------------------------------------------

@pytest.mark.parametrize("cls", CLASSES)
def test_default_std_is_todays_free_log_std(cls):
    torch.manual_seed(0)
    net = cls(OBS, BOX)
    assert net.std_raw is None and torch.equal(net.log_std.detach(), torch.zeros(3))
    dist = net.distribution(torch.randn(5, 6))
    assert type(dist) is DiagGaussian and torch.equal(dist.log_std, net.log_std)  # log-std is the parameter itself


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("std_param,std_min", [("exp", 0.0), ("exp", 0.05), ("softplus", 0.0), ("softplus", 0.05)])
@pytest.mark.parametrize("sde", [False, True], ids=["free", "state_dependent"])
def test_std_parametrisations_start_at_std_init_and_follow_their_formula(cls, std_param, std_min, sde):
    torch.manual_seed(0)
    net = cls(OBS, BOX, std_param=std_param, std_init=0.5, std_min=std_min, state_dependent_std=sde, policy_gain=0.0)
    obs = torch.randn(7, 6)
    expected_shape = (7, 3) if sde else (3,)  # a free std is shared by every state
    torch.testing.assert_close(net.distribution(obs).log_std.exp(), torch.full(expected_shape, 0.5), rtol=1e-6, atol=1e-6)
    # any raw value: std = transform(raw) + std_min, computed here in numpy
    raw = np.array([-30.0, -1.3, 0.0, 0.7, 4.0], np.float32)
    transform = np.exp(raw) if std_param == "exp" else softplus(raw.astype(np.float64))
    expected = np.clip(np.log(transform + std_min), -20.0, 2.0)
    got = net.action_log_std(torch.from_numpy(raw)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    if std_min > 0:
        assert np.exp(got).min() >= std_min * (1 - 1e-6)  # never below the minimum
    # the gradient reaches the free parameter (or the head) through the transform
    dist = net.distribution(obs)
    dist.log_std.sum().backward()
    free = net.policy_head.bias if cls is SharedMLPActorCritic and sde else (
        net.actor.layers[-1].bias if sde else (net.log_std if std_param == "exp" else net.std_raw))
    assert free.grad is not None and free.grad.abs().sum() > 0


def test_std_init_and_log_std_init_are_one_setting():
    torch.manual_seed(0)
    by_log = MLPActorCritic(OBS, BOX, log_std_init=math.log(0.3), std_param="softplus")
    assert by_log.distribution(torch.zeros(1, 6)).log_std.exp().squeeze().tolist() == pytest.approx([0.3] * 3, rel=1e-6)
    with pytest.raises(ConfigError, match="network.std_init"):
        MLPActorCritic(OBS, BOX, std_init=0.5, log_std_init=-1.0)


@pytest.mark.parametrize("kwargs,key", [
    ({"std_param": "sigmoid"}, "network.std_param"),
    ({"std_min": -0.1}, "network.std_min"),
    ({"std_init": 0.1, "std_min": 0.1, "std_param": "softplus"}, "network.std_init"),
    ({"std_init": 0.0}, "network.std_init"),
    ({"squash": "sigmoid"}, "network.squash"),
])
def test_bad_std_and_squash_options_are_rejected(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        MLPActorCritic(OBS, BOX, **kwargs)


def test_squash_needs_a_box_and_bounds_or_rescale():
    with pytest.raises(ConfigError, match="network.squash"):
        MLPActorCritic(OBS, DISCRETE, squash="tanh")
    with pytest.raises(ConfigError, match="env.action_mode"):  # Pendulum's bounds are [-2, 2]
        build(compose_config(["logger=none", "network.squash=tanh"]))
    parts = build(compose_config(["logger=none", "network.squash=tanh", "env.action_mode=rescale"]))
    assert isinstance(parts.network.distribution(torch.zeros(1, 3)), TanhGaussian)
    # bounds of [-1, 1] (HalfCheetah): clipping to them is a no-op on tanh actions, so it is allowed
    build(compose_config(["logger=none", "env=halfcheetah", "network.squash=tanh"]))


# -- the numpy rollout mirror of every new option ------------------------------------------------

MIRROR_CASES = [
    {"std_param": "softplus", "std_init": 0.5},
    {"std_param": "softplus", "std_init": 0.5, "std_min": 0.05},
    {"std_param": "exp", "std_init": 0.4, "std_min": 0.05},
    {"std_param": "softplus", "std_min": 0.02, "state_dependent_std": True},
    {"std_param": "exp", "std_min": 0.02, "state_dependent_std": True},
    {"squash": "tanh"},
    {"squash": "tanh", "std_param": "softplus", "std_init": 0.5},
    {"squash": "tanh", "state_dependent_std": True, "std_param": "softplus", "std_min": 0.01},
    {"squash": "tanh", "policy_gain": 20.0},  # many actions saturate: |a| rounds to 1 in float32, clamped
]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("kwargs", MIRROR_CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_numpy_mirror_acts_as_the_torch_network(cls, kwargs):
    torch.manual_seed(0)
    policy = cls(OBS, BOX, **kwargs)
    with torch.no_grad():  # move off the init so the comparison means something
        for p in policy.parameters():
            p.add_(0.2 * torch.randn_like(p))
    actor = rollout_policy(policy)
    assert isinstance(actor, NumpyPolicy)  # every new option keeps the fast path
    obs = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    torch.manual_seed(1)
    action, log_prob, value, params = actor.act(obs)
    torch.manual_seed(1)
    ref_action, _, ref_value, ref_params = TorchPolicy(policy).act(obs)
    np.testing.assert_allclose(action, ref_action, rtol=1e-5, atol=1e-5)  # same draws, same maths
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(params, ref_params, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        dist = policy.distribution(torch.from_numpy(obs))
        # what the update will compute for pi_old's log-prob of the stored action: the ratio starts at 1
        np.testing.assert_allclose(log_prob, dist.log_prob(torch.from_numpy(action)).numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(actor.mode(obs), dist.mode().numpy(), rtol=1e-5, atol=1e-5)
    if kwargs.get("squash"):
        assert np.abs(action).max() < 1.0 + 1e-7
        if kwargs.get("policy_gain"):
            assert (np.abs(action) >= 1 - 1e-6).mean() > 0.1  # the clamped case was exercised


# -- value loss: squared error or Huber ----------------------------------------------------------

def value_case(seed=0, n=200):
    g = torch.Generator().manual_seed(seed)
    returns = 3.0 * torch.randn(n, generator=g, dtype=torch.float64)
    old = returns + 2.0 * torch.randn(n, generator=g, dtype=torch.float64)
    value = (old + 1.5 * torch.randn(n, generator=g, dtype=torch.float64)).requires_grad_(True)
    return value, old, returns


def make_update(**settings):
    net = MLPActorCritic(OBS, BOX)
    return PPOUpdate(net, ClipLoss(0.2), FlatAdam(net, lr=1e-3, eps=1e-5), UpdateSettings(**settings))


@pytest.mark.parametrize("delta", [0.3, 1.0, 4.0])
def test_huber_value_loss_matches_torch_huber_loss(delta):
    value, old, returns = value_case()
    ours = make_update(value_loss="huber", huber_delta=delta).value_loss(value, old, returns)
    ref = F.huber_loss(value, returns, delta=delta)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    g_ours, = torch.autograd.grad(ours, value)
    g_ref, = torch.autograd.grad(ref, value)
    torch.testing.assert_close(g_ours, g_ref)
    err = (value - returns).abs()
    assert (err < delta).any() and (err > delta).any()  # both regimes were exercised


@pytest.mark.parametrize("delta", [0.5, 2.0])
def test_clipped_huber_value_loss_against_brute_force(delta):
    value, old, returns = value_case(seed=1)
    clip = 0.4
    ours = make_update(value_loss="huber", huber_delta=delta, clip_value_loss=clip).value_loss(value, old, returns)
    terms = []
    for v, o, r in zip(value, old, returns):  # one sample at a time
        clipped = o + min(max(v - o, -clip), clip)
        terms.append(max(F.huber_loss(v, r, delta=delta), F.huber_loss(clipped, r, delta=delta)))
    ref = torch.stack(terms).mean()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(torch.autograd.grad(ours, value)[0], torch.autograd.grad(ref, value)[0])


def test_mse_value_loss_is_unchanged_and_huber_with_a_huge_delta_equals_it():
    value, old, returns = value_case(seed=2)
    mse = make_update().value_loss(value, old, returns)
    assert mse.item() == pytest.approx(0.5 * ((value - returns) ** 2).mean().item(), rel=1e-12)
    huge = make_update(value_loss="huber", huber_delta=1e6).value_loss(value, old, returns)
    assert huge.item() == pytest.approx(mse.item(), rel=1e-12)
    with pytest.raises(ValueError, match="value_loss"):
        make_update(value_loss="l1")


# -- advantages recomputed with the current value function ---------------------------------------

def brute_force_gae(rollout, last_obs, policy, gamma, lam):
    """A_t = sum_k (gamma lam)^k delta_{t+k} within the episode, by its definition, with V
    evaluated one observation at a time; reset steps get 0."""
    T, N = rollout.values.shape
    with torch.no_grad():
        V = lambda o: float(policy.value(torch.from_numpy(np.asarray(o, np.float32)[None]))[0])  # noqa: E731
        values = np.array([[V(rollout.obs[t, n]) for n in range(N)] for t in range(T)])
        last = np.array([V(last_obs[n]) for n in range(N)])
    adv = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            if not rollout.valid[t, n]:
                continue
            total, weight = 0.0, 1.0
            for s in range(t, T):
                next_v = values[s + 1, n] if s + 1 < T else last[n]
                delta = rollout.rewards[s, n] + gamma * (1 - rollout.terminated[s, n]) * next_v - values[s, n]
                total += weight * delta
                if rollout.episode_end[s, n]:
                    break
                weight *= gamma * lam
            adv[t, n] = total
    return adv, values


CARTPOLE_SHORT = ["env=cartpole", "env.max_episode_steps=16", "algo.num_envs=2", "algo.num_steps=48",
                  "algo.minibatch_size=24", "algo.num_epochs=3", "total_timesteps=96", "progress=false"]


def test_advantage_refresh_matches_brute_force_recomputation(tmp_path):
    trainer = build_trainer(CARTPOLE_SHORT, tmp_path)
    try:
        trainer.member.actor.sync()
        rollout, _ = trainer.member.collector.collect(trainer.member.actor)
        r = rollout
        assert r.terminated.any() and (r.episode_end > r.terminated).any() and not r.valid.all()  # both ends, resets
        with torch.no_grad():  # a value function other than the rollout's
            for p in trainer.member.policy.critic.parameters():
                p.add_(0.3 * torch.randn_like(p))
        refresh = AdvantageRefresh(trainer.member.estimator, rollout, trainer.member.envs.obs, trainer.member.policy)
        advantages, returns = refresh()
        est = trainer.member.estimator
        expected, values = brute_force_gae(rollout, trainer.member.envs.obs, trainer.member.policy, est.gamma, est.lam)
        np.testing.assert_allclose(advantages.numpy(), expected[r.valid], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(returns.numpy(), (expected + values)[r.valid], rtol=1e-5, atol=1e-5)
        # and it differs from the rollout's (pi_old's V): the recomputation did something
        old = GAE(est.gamma, est.lam)(r.rewards, r.values, r.next_values, r.terminated, r.episode_end, r.valid)
        assert np.abs(old[r.valid] - expected[r.valid]).max() > 0.1
    finally:
        trainer.close()


class RecordingClip(ClipLoss):
    """The clipped loss, keeping each step's advantages and a copy of the network before it."""

    def __init__(self, policy):
        super().__init__(0.2)
        self.policy, self.seen, self.snapshots = policy, [], []

    def __call__(self, batch):
        self.snapshots.append(copy.deepcopy(self.policy))  # at an epoch's first step: V as refreshed
        self.seen.append(batch.advantages.detach().clone())
        return super().__call__(batch)


def test_training_with_recompute_uses_each_epochs_current_value_function(tmp_path):
    """Through trainer.train(): every epoch after the first learns from advantages that a brute
    force computes with the network as it was at that epoch's start."""
    trainer = build_trainer([*CARTPOLE_SHORT, "algo.recompute_advantages=true", "algo.normalize_advantage=off"],
                            tmp_path)
    try:
        trainer.update.loss = trainer.member.loss = loss = RecordingClip(trainer.member.policy)
        trainer.train()  # one iteration: 96 steps
        rollout = trainer.member.collector.rollout
        per_epoch = len(minibatch_slices(int(rollout.valid.sum()), 24))
        assert len(loss.seen) == 3 * per_epoch
        est = trainer.member.estimator
        first = torch.cat(loss.seen[:per_epoch]).sort().values
        old = est(rollout.rewards, rollout.values, rollout.next_values, rollout.terminated, rollout.episode_end,
                  rollout.valid)
        np.testing.assert_allclose(first.numpy(), np.sort(old[rollout.valid]), rtol=1e-6, atol=1e-6)
        for epoch in (1, 2):
            used = torch.cat(loss.seen[epoch * per_epoch:(epoch + 1) * per_epoch]).sort().values.numpy()
            snapshot = loss.snapshots[epoch * per_epoch]
            expected, _ = brute_force_gae(rollout, trainer.member.envs.obs, snapshot, est.gamma, est.lam)
            np.testing.assert_allclose(used, np.sort(expected[rollout.valid]), rtol=1e-5, atol=1e-5)
            assert np.abs(used - first.numpy()).max() > 1e-4  # V moved between epochs
    finally:
        trainer.close()


def test_recompute_without_a_refresh_is_refused():
    update = make_update(recompute_advantages=True)
    net = update.policy
    obs = torch.randn(8, 6)
    with torch.no_grad():
        dist, v = net(obs)
        a = dist.sample()
    with pytest.raises(ValueError, match="refresh"):
        update(Batch(obs, a, dist.log_prob(a), dist.params(), v, torch.randn(8), v))


# -- Adam's betas --------------------------------------------------------------------------------

def test_flat_adam_betas_match_torch_adam():
    torch.manual_seed(0)
    net = MLPActorCritic(OBS, BOX, hidden_sizes=[8])
    ref_net = copy.deepcopy(net)
    ours = FlatAdam(net, lr=1e-2, eps=1e-5, betas=(0.5, 0.95))
    ref = torch.optim.Adam(ref_net.parameters(), lr=1e-2, eps=1e-5, betas=(0.5, 0.95), foreach=False)
    g = torch.Generator().manual_seed(1)
    for step in range(6):
        obs, target = torch.randn(16, 6, generator=g), torch.randn(16, generator=g)
        for model, opt in ((net, ours), (ref_net, ref)):
            opt.zero_grad()
            dist, value = model(obs)
            (-dist.log_prob(torch.zeros(16, 3)).mean() + (value - target).pow(2).mean()).backward()
            opt.step()
    for p, q in zip(net.parameters(), ref_net.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    default = FlatAdam(MLPActorCritic(OBS, BOX), lr=1e-3, eps=1e-5)
    assert (default.beta1, default.beta2) == (0.9, 0.999)  # the default


def test_adam_betas_reach_the_trainers_optimizer(tmp_path):
    trainer = build_trainer(["env=cartpole", "algo.adam_beta1=0.7", "algo.adam_beta2=0.99", *TINY], tmp_path)
    try:
        assert (trainer.optimizer.beta1, trainer.optimizer.beta2) == (0.7, 0.99)
    finally:
        trainer.close()


# -- an iteration with no valid sample -----------------------------------------------------------

def test_empty_batch_takes_no_step_and_says_so():
    update = make_update()
    before = [p.detach().clone() for p in update.policy.parameters()]
    empty = Batch(torch.zeros(0, 6), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 6), torch.zeros(0),
                  torch.zeros(0), torch.zeros(0))
    assert update(empty) == {"update_skipped": True, "epochs": 0}
    assert all(torch.equal(p, q) for p, q in zip(update.policy.parameters(), before))


def test_a_rollout_of_reset_steps_only_is_skipped_with_a_row_that_says_so(tmp_path):
    """num_envs=1, num_steps=1: the iteration after an episode end holds only its reset step."""
    result = run_cli(["env=cartpole", "loss=klpen", "algo.num_envs=1", "algo.num_steps=1", "algo.minibatch_size=1",
                      "algo.num_epochs=2", "total_timesteps=60", "logger=none", "progress=false",
                      "eval.episodes=1", f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "training diverged" not in result.stderr
    assert result.stderr.count("no valid sample") == 1  # one warning line per run
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 60
    skipped = [i for i, row in enumerate(rows) if row.get("update_skipped")]
    assert skipped, "no episode ended within 60 steps: the case was not exercised"
    for i in skipped:
        row = rows[i]
        assert row["epochs"] == 0 and "kl" not in row and "policy_loss" not in row
        assert rows[i - 1].get("episodes", 0) >= 1  # the previous iteration ended an episode
        assert row["beta"] == rows[i - 1]["beta"]  # no step, no d: the rule did not run
    assert all("kl" in row and row["epochs"] == 2 for i, row in enumerate(rows) if i not in skipped)


# -- target_kl -----------------------------------------------------------------------------------

def test_target_kl_stop_before_the_first_step_reports_nan_terms_and_keeps_the_policy():
    update = make_update(target_kl=0.01, num_epochs=2, minibatch_size=8)
    net = update.policy
    obs = torch.randn(16, 6)
    with torch.no_grad():
        dist, v = net(obs)
        a = dist.sample()
    before = [p.detach().clone() for p in net.parameters()]
    # pi_old far from pi: the first minibatch's k3 is far above 1.5 x 0.01
    stats = update(Batch(obs, a, dist.log_prob(a) - 1.0, dist.params(), v, torch.randn(16), v))
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))
    assert math.isnan(stats["policy_loss"]) and math.isnan(stats["clip_fraction"]) and stats["approx_kl_k3"] > 0.015


# -- every option from the command line ----------------------------------------------------------

SMOKE = {
    "softplus_std": ["env=pendulum", "network.std_param=softplus", "network.std_init=0.5", "network.std_min=0.01"],
    "tanh_squash": ["env=pendulum", "network.squash=tanh", "env.action_mode=rescale", "algo.ent_coef=0.01"],
    "huber_value_loss": ["env=pendulum", "algo.value_loss=huber", "algo.huber_delta=2.0", "algo.clip_value_loss=0.2"],
    "recompute_advantages": ["env=pendulum", "algo.recompute_advantages=true"],
    "pg_loss": ["env=cartpole", "loss=pg"],
    "adam_betas": ["env=cartpole", "algo.adam_beta1=0.5", "algo.adam_beta2=0.99"],
}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_cli_smoke_run(name, tmp_path):
    result = run_cli([*SMOKE[name], *TINY, "logger=none", f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 2 and all(math.isfinite(row["policy_loss"]) and math.isfinite(row["entropy"]) for row in rows)
