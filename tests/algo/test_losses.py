"""Policy losses: the seed's clipped/unclipped table, invariants of every loss, the plain policy
gradient against torch.distributions, the beta rule and what the metrics rows say about beta."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import compose_config, read_metrics, run_cli
from hydra.utils import instantiate

from ppo_research.algo.losses import ClipLoss, CPILoss, KLPenaltyLoss, PGLoss, PolicyBatch
from ppo_research.algo.networks import MLPActorCritic
from ppo_research.errors import ConfigError

EPS = 0.2


def single_sample(r: float, advantage: float) -> tuple[PolicyBatch, torch.Tensor]:
    """A one-sample batch whose ratio is r, with the gradient flowing to log pi_theta."""
    log_prob = torch.tensor([np.log(r)], dtype=torch.float64, requires_grad=True)
    gauss = lambda: None  # noqa: E731 - dists are unused by the surrogate terms
    batch = PolicyBatch(log_prob=log_prob, old_log_prob=torch.zeros(1, dtype=torch.float64),
                        advantages=torch.tensor([advantage], dtype=torch.float64), dist=gauss, old_dist=gauss)
    return batch, log_prob


# The seed notebook's table: region of r, sign of A -> value of the min, clipped?, gradient?
SEED_TABLE = [
    (1.1, +1.0, lambda r, a: r * a, False),            # r in [1-eps, 1+eps], A > 0
    (0.9, -1.0, lambda r, a: r * a, False),            # r in [1-eps, 1+eps], A < 0
    (0.5, +1.0, lambda r, a: r * a, False),            # r < 1-eps, A > 0
    (0.5, -1.0, lambda r, a: (1 - EPS) * a, True),     # r < 1-eps, A < 0: clipped, no gradient
    (1.5, +1.0, lambda r, a: (1 + EPS) * a, True),     # r > 1+eps, A > 0: clipped, no gradient
    (1.5, -1.0, lambda r, a: r * a, False),            # r > 1+eps, A < 0
]


@pytest.mark.parametrize("r,adv,expected,clipped", SEED_TABLE)
def test_clip_reproduces_the_seed_table(r, adv, expected, clipped):
    batch, log_prob = single_sample(r, adv)
    objective = -ClipLoss(EPS)(batch)
    assert objective.item() == pytest.approx(expected(r, adv))
    assert np.sign(objective.item()) == np.sign(adv)
    objective.backward()
    grad = log_prob.grad.item()
    if clipped:
        assert grad == 0.0
    else:
        assert grad == pytest.approx(r * adv)  # d(r A)/d log pi = r A


@pytest.mark.parametrize("r", [0.3, 0.5, 0.79, 0.81, 0.95, 1.0, 1.05, 1.19, 1.21, 1.5, 1.7])
@pytest.mark.parametrize("adv", [-2.0, -0.5, 0.7, 3.0])
def test_cpi_and_clip_agree_inside_the_trust_region_only(r, adv):
    clip_value = -ClipLoss(EPS)(single_sample(r, adv)[0]).item()
    cpi_value = -CPILoss()(single_sample(r, adv)[0]).item()
    inside = 1 - EPS <= r <= 1 + EPS
    pessimistic_side = (r > 1 + EPS and adv > 0) or (r < 1 - EPS and adv < 0)
    if inside or not pessimistic_side:
        assert clip_value == pytest.approx(cpi_value)
    else:
        assert clip_value < cpi_value - 1e-9  # a lower bound, strictly below outside


def all_loss_configs():
    return [("clip", []), ("cpi", []), ("pg", []), ("klpen", []), ("klfixed", []),
            ("klpen", ["loss.direction=reverse"]), ("klpen", ["loss.estimator=k1"]),
            ("klpen", ["loss.estimator=k3"]), ("klpen", ["loss.estimator=k3", "loss.direction=reverse"]),
            ("klpen", ["loss.epsilon=0.2"])]


@pytest.mark.parametrize("space", [gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(4)], ids=["box", "discrete"])
@pytest.mark.parametrize("name,extra", all_loss_configs())
def test_first_minibatch_has_unit_ratio_and_zero_kl(name, extra, space):
    """Before any step pi_theta = pi_old: r = 1 and every divergence estimate is exactly 0."""
    torch.manual_seed(0)
    loss = instantiate(compose_config([f"loss={name}", *extra]).loss)
    policy = MLPActorCritic(gym.spaces.Box(-np.inf, np.inf, (5,)), space)
    obs = torch.randn(64, 5)
    with torch.no_grad():
        old = policy.distribution(obs)
        actions = old.sample()
        old_log_prob, old_params = old.log_prob(actions), old.params()
    dist = policy.distribution(obs)
    batch = PolicyBatch(dist.log_prob(actions), old_log_prob, torch.randn(64), dist,
                        policy.distribution_from_params(old_params))
    assert torch.equal(batch.ratio, torch.ones(64))
    assert torch.all(loss.divergence(batch) == 0)
    value = loss(batch)
    assert torch.isfinite(value)


def test_adaptive_rule_follows_the_paper():
    loss = KLPenaltyLoss(beta=1.0, kl_target=0.01)
    low, high = 0.01 / 1.5, 0.01 * 1.5
    ds = [0.001, 0.001, 0.01, high * 1.01, low * 0.99, low * 1.01, high * 0.99, 0.5, 0.5, 0.0]
    expected = [0.5, 0.25, 0.25, 0.5, 0.25, 0.25, 0.25, 0.5, 1.0, 0.5]
    seen = []
    for d in ds:
        loss.observe_kl(d, "iteration")
        seen.append(loss.beta)
    assert seen == expected


def test_beta_changes_only_at_the_configured_granularity():
    for every in ("iteration", "epoch", "minibatch"):
        loss = KLPenaltyLoss(beta=1.0, kl_target=0.01, adapt_every=every)
        for granularity in ("iteration", "epoch", "minibatch"):
            before = loss.beta
            loss.observe_kl(1.0, granularity)
            assert (loss.beta != before) == (granularity == every)


def test_fixed_beta_never_changes():
    loss = instantiate(compose_config(["loss=klfixed", "loss.beta=3.0"]).loss)
    for d in (0.0, 1e-6, 0.01, 10.0):
        for granularity in ("iteration", "epoch", "minibatch"):
            loss.observe_kl(d, granularity)
    assert loss.beta == 3.0 and loss.adapt_every is None


def test_beta_bounds_and_state_roundtrip():
    loss = KLPenaltyLoss(beta=1.0, beta_min=0.25, beta_max=4.0)
    for _ in range(5):
        loss.observe_kl(0.0, "iteration")
    assert loss.beta == 0.25
    for _ in range(10):
        loss.observe_kl(1.0, "iteration")
    assert loss.beta == 4.0
    other = KLPenaltyLoss()
    other.load_state_dict(loss.state_dict())
    assert other.beta == 4.0


@pytest.mark.parametrize("kwargs,key", [({"epsilon": 0.0}, "loss.epsilon"), ({"epsilon": 1.0}, "loss.epsilon"),
                                        ({"beta": -1.0}, "loss.beta"), ({"kl_target": 0.0}, "loss.kl_target"),
                                        ({"adapt_every": "batch"}, "loss.adapt_every")])
def test_out_of_range_loss_parameters_are_rejected(kwargs, key):
    cls = ClipLoss if set(kwargs) == {"epsilon"} else KLPenaltyLoss
    with pytest.raises(ConfigError, match=key):
        cls(**kwargs)


def test_logged_beta_obeys_the_rule_in_a_real_klpen_run(tmp_path):
    """A row's beta is the value at the END of its iteration: beta_k = rule(beta_{k-1}, kl_k),
    starting from the configured beta, read back from metrics.jsonl."""
    result = run_cli(["loss=klpen", "env=cartpole", "logger=none", "total_timesteps=4096",
                      "loss.kl_target=0.003", f"hydra.run.dir={tmp_path}/run", "progress=false"], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 16
    rule = KLPenaltyLoss(kl_target=0.003)
    start = 1.0  # loss.beta
    for row in rows:
        assert row["beta"] == pytest.approx(rule.next_beta(start, row["kl"]))
        assert not {"beta_min", "beta_max", "kl_last"} & set(row)  # beta changes only between iterations
        start = row["beta"]
    assert len({row["beta"] for row in rows}) > 1, "the run never exercised the rule"


class RecordingRule(KLPenaltyLoss):
    """The KL-penalty loss, keeping every (d, beta after) of its rule."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.trace = []

    def observe_kl(self, kl, granularity):
        super().observe_kl(kl, granularity)
        if granularity == self.adapt_every:
            self.trace.append((kl, self.beta))


@pytest.mark.parametrize("every", ["epoch", "minibatch"])
def test_log_values_report_the_iterations_beta_range_and_last_d(every):
    """With beta adapted within the iteration, log_values() gives the end value, the range of
    every value beta took (its start included) and the last d the rule saw; then restarts."""
    from ppo_research.algo.batch import Batch
    from ppo_research.algo.optim import FlatAdam
    from ppo_research.algo.update import PPOUpdate, UpdateSettings

    torch.manual_seed(0)
    policy = MLPActorCritic(gym.spaces.Box(-np.inf, np.inf, (4,)), gym.spaces.Box(-1, 1, (2,)), policy_gain=1.0)
    obs = torch.randn(256, 4)
    with torch.no_grad():
        dist, values = policy(obs)
        actions = dist.sample()
        batch = Batch(obs, actions, dist.log_prob(actions), dist.params(), values, torch.randn(256),
                      values + torch.randn(256))
    loss = RecordingRule(beta=1.0, kl_target=1e-4, adapt_every=every)
    update = PPOUpdate(policy, loss, FlatAdam(policy, lr=3e-3, eps=1e-5), UpdateSettings(num_epochs=4, minibatch_size=32))
    update(batch)
    loss.observe_kl(0.5, "iteration")  # the trainer's call: not this loss's granularity, no change
    assert len(loss.trace) == (4 if every == "epoch" else 32)
    betas = [1.0] + [beta for _, beta in loss.trace]
    assert len(set(betas)) > 2, "the rule should have moved beta both ways or far"
    logged = loss.log_values()
    assert logged == {"beta": betas[-1], "beta_min": min(betas), "beta_max": max(betas), "kl_last": loss.trace[-1][0]}
    again = loss.log_values()  # an iteration in which the rule never ran
    assert again["beta"] == again["beta_min"] == again["beta_max"] == betas[-1] and np.isnan(again["kl_last"])


def test_beta_logged_at_the_end_with_its_range_on_a_minibatch_klpen_run(tmp_path):
    """metrics.jsonl of `loss=klpen loss.adapt_every=minibatch`: each row's range holds the
    beta the iteration started from (the previous row's) and the one it ended at, and the end
    value is one rule step from a value in that range, taken on kl_last."""
    result = run_cli(["loss=klpen", "loss.adapt_every=minibatch", "env=cartpole", "logger=none",
                      "total_timesteps=1024", f"hydra.run.dir={tmp_path}/run", "progress=false"], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = read_metrics(tmp_path / "run")
    rule = KLPenaltyLoss(kl_target=0.01)
    start = 1.0
    for row in rows:
        assert row["beta_min"] <= min(start, row["beta"]) and max(start, row["beta"]) <= row["beta_max"]
        d = row["kl_last"]
        before = {row["beta"] / 2: d > 0.015, row["beta"] * 2: d < 0.01 / 1.5, row["beta"]: 0.01 / 1.5 <= d <= 0.015}
        previous = [b for b, ok in before.items() if ok]
        assert len(previous) == 1 and rule.next_beta(previous[0], d) == row["beta"]
        assert row["beta_min"] <= previous[0] <= row["beta_max"]
        start = row["beta"]
    assert any(row["beta_max"] > 4 * row["beta_min"] for row in rows), "beta never moved within an iteration"


# -- the plain policy gradient (loss=pg) ---------------------------------------------------------

def gaussian_policy_batch(seed=0, n=128):
    """A batch from a moved Gaussian policy, and what a torch.distributions reference needs."""
    torch.manual_seed(seed)
    policy = MLPActorCritic(gym.spaces.Box(-np.inf, np.inf, (5,)), gym.spaces.Box(-1, 1, (3,)), policy_gain=1.0)
    obs = torch.randn(n, 5)
    with torch.no_grad():
        old = policy.distribution(obs)
        actions = old.sample()
        old_log_prob, old_params = old.log_prob(actions), old.params()
    advantages = torch.randn(n)
    return policy, obs, actions, old_log_prob, old_params, advantages


def test_pg_loss_value_and_gradient_match_torch_distributions():
    policy, obs, actions, old_log_prob, old_params, adv = gaussian_policy_batch()
    dist = policy.distribution(obs)
    pb = PolicyBatch(dist.log_prob(actions), old_log_prob, adv, dist, policy.distribution_from_params(old_params))
    ours = PGLoss()(pb)
    grads = torch.autograd.grad(ours, list(policy.parameters()), allow_unused=True)
    mean = policy.actor(obs)
    reference = -(torch.distributions.Normal(mean, policy.log_std.exp(), validate_args=True)
                  .log_prob(actions).sum(-1) * adv).mean()
    ref_grads = torch.autograd.grad(reference, list(policy.parameters()), allow_unused=True)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)
    for g, r in zip(grads, ref_grads):
        assert (g is None) == (r is None)
        if g is not None:
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


def test_pg_gradient_equals_the_cpi_gradient_at_pi_old():
    """grad E[log pi A] = grad E[r A] at theta = theta_old (r = 1): the two losses differ only
    once the policy has moved."""
    policy, obs, actions, old_log_prob, old_params, adv = gaussian_policy_batch(seed=1)

    def grads(loss_cls):
        dist = policy.distribution(obs)
        pb = PolicyBatch(dist.log_prob(actions), old_log_prob, adv, dist, policy.distribution_from_params(old_params))
        return torch.autograd.grad(loss_cls()(pb), [p for p in policy.parameters()], allow_unused=True)

    for g_pg, g_cpi in zip(grads(PGLoss), grads(CPILoss)):
        if g_pg is not None:
            torch.testing.assert_close(g_pg, g_cpi, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        policy.log_std.add_(0.3)  # moved: r != 1, the gradients now differ
    different = [not torch.allclose(a, b) for a, b in zip(grads(PGLoss), grads(CPILoss)) if a is not None]
    assert any(different)


def test_minibatch_slices_are_near_equal_and_cover_the_batch():
    from ppo_research.algo.update import minibatch_slices

    for n, size in [(2048, 64), (2038, 64), (65, 64), (97, 64), (5, 64), (4076, 256)]:
        slices = minibatch_slices(n, size)
        lengths = [s.stop - s.start for s in slices]
        assert sum(lengths) == n and slices[0].start == 0 and slices[-1].stop == n
        assert max(lengths) - min(lengths) <= 1  # no ragged last minibatch
        assert len(slices) == max(1, round(n / size))


# -- the paper's losses as one population's surrogate (algo/losses.member_view) -------------------

def test_a_view_of_mixed_loss_kinds_computes_each_members_own_loss_and_gradient():
    """cpi, clip, the adaptive and the fixed KL penalty (with and without clipping) as one [S, B]
    surrogate: each member's row has the value and the gradient of its own loss on its own batch."""
    from ppo_research.algo.distributions import DiagGaussian
    from ppo_research.algo.losses import member_view

    losses = [CPILoss(), ClipLoss(0.1), KLPenaltyLoss(beta=2.0), KLPenaltyLoss(beta=0.5, adaptive=False, epsilon=0.3)]
    S, B, A = len(losses), 96, 3
    g = torch.Generator().manual_seed(0)
    old = torch.randn(S, B, 2 * A, generator=g, dtype=torch.float64)
    moved = (old + 0.4 * torch.randn(S, B, 2 * A, generator=g, dtype=torch.float64)).requires_grad_()
    actions = DiagGaussian.from_params(old).sample()
    advantages = torch.randn(S, B, generator=g, dtype=torch.float64)

    def batch(params, k=None):
        pick = (lambda t: t) if k is None else (lambda t: t[k])  # noqa: E731
        new, before = DiagGaussian.from_params(pick(params)), DiagGaussian.from_params(pick(old))
        return PolicyBatch(new.log_prob(pick(actions)), before.log_prob(pick(actions)), pick(advantages), new, before)

    view = member_view(losses)
    assert isinstance(view, KLPenaltyLoss) and view.beta.view(-1).tolist() == [0.0, 0.0, 2.0, 0.5]
    values = view(batch(moved))
    assert values.shape == (S, 1)
    (grad,) = torch.autograd.grad(values.sum(), moved)
    for k, loss in enumerate(losses):
        own = loss(batch(moved, k))
        (own_grad,) = torch.autograd.grad(own, moved)
        assert values[k, 0].item() == pytest.approx(own.item(), rel=1e-6), type(loss).__name__
        torch.testing.assert_close(grad[k], own_grad[k], rtol=1e-6, atol=1e-12)
    assert ((batch(moved).ratio - 1).abs() > 0.1).any()  # the clip members' clipping was in play


def test_a_population_mixes_only_the_surrogate_family():
    from ppo_research.algo.losses import member_view

    with pytest.raises(ValueError, match="PGLoss"):
        member_view([ClipLoss(0.2), PGLoss()])
    unpenalised = member_view([CPILoss(), ClipLoss(0.2)])  # no member has a penalty: beta 0 for both
    assert unpenalised.beta.view(-1).tolist() == [0.0, 0.0] and unpenalised.adapt_every is None
    assert unpenalised.epsilon.view(-1).tolist() == [float("inf"), pytest.approx(0.2)]


def test_an_annealed_clip_range_falls_with_alpha_and_is_logged():
    """The PPO paper's Atari setting (Table 5): epsilon = 0.1 x alpha, alpha from 1 down linearly."""
    loss = ClipLoss(0.1, anneal_epsilon=True)
    assert loss.epsilon == 0.1 and loss.log_values() == {"epsilon": 0.1}
    loss.schedule(0.25)
    assert loss.epsilon == pytest.approx(0.025) and loss.log_values() == {"epsilon": pytest.approx(0.025)}
    fixed = ClipLoss(0.2)
    fixed.schedule(0.25)
    assert fixed.epsilon == 0.2 and fixed.log_values() == {}


def test_the_annealed_clip_range_in_a_run(tmp_path):
    res = run_cli(["env=cartpole", "loss.epsilon=0.2", "loss.anneal_epsilon=true", "total_timesteps=512",
                   "algo.num_envs=2", "algo.num_steps=64", "algo.minibatch_size=64", "algo.num_epochs=1",
                   "eval.episodes=1", "progress=false", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = read_metrics(tmp_path / "run")
    assert [r["epsilon"] for r in rows] == pytest.approx([0.2 * (1 - i / 4) for i in range(4)])
