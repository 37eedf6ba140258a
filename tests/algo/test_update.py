"""The PPO update (algo/update.py) against a plain PyTorch PPO written here, and its pieces
against brute force.

The reference update: a copy of the network run through a hand-written forward (F.linear +
tanh on its weights), torch.distributions for log-probs, entropy and KL, torch.optim.Adam (eps
1e-5) and torch.nn.utils.clip_grad_norm_. The shuffle is fixed by seeding torch identically
before both (the update draws one torch.randperm per epoch and nothing else).
"""
from __future__ import annotations

import copy
import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import one_torch_thread
from torch.distributions import Categorical as TorchCategorical
from torch.distributions import Normal, kl_divergence
from torch.nn import functional as F

from ppo_research.algo.batch import Batch
from ppo_research.algo.losses import ClipLoss, KLPenaltyLoss
from ppo_research.algo.networks import MLPActorCritic
from ppo_research.algo.optim import FlatAdam
from ppo_research.algo.update import PPOUpdate, UpdateSettings, kl_k3, minibatch_slices, standardise
from ppo_research.errors import NonFiniteError

OBS = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
DISCRETE = gym.spaces.Discrete(3)
ADAM_EPS = 1e-5
N = 64  # batch size in most tests


_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)  # helpers


def make_net(space=BOX, seed: int = 0) -> MLPActorCritic:
    torch.manual_seed(seed)
    net = MLPActorCritic(OBS, space, hidden_sizes=[8, 8])
    with torch.no_grad():  # a policy head big enough that the ratio moves in a few steps
        net.actor.layers[-1].weight.mul_(50.0)
    return net


def make_batch(net, n: int = N, seed: int = 1) -> Batch:
    """A batch collected by ``net`` itself (pi_old = the current policy), with advantages of
    non-zero mean and non-unit spread so standardisation shows."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 4, generator=g)
    with torch.no_grad():
        dist, values = net(obs)
        torch.manual_seed(seed)
        actions = dist.sample()
        log_probs = dist.log_prob(actions)
    advantages = 0.7 + 2.0 * torch.randn(n, generator=g)
    return Batch(obs, actions.to(torch.float32), log_probs, dist.params(), values, advantages, advantages + values)


def tensors(b: Batch) -> list[torch.Tensor]:
    return [getattr(b, f.name) for f in dataclasses.fields(b)]


def clone_batch(b: Batch) -> Batch:
    return Batch(*(t.clone() for t in tensors(b)))


def make_update(net, lr=1e-2, loss=None, **settings) -> PPOUpdate:
    loss = loss if loss is not None else ClipLoss(0.2)
    return PPOUpdate(net, loss, FlatAdam(net, lr=lr, eps=ADAM_EPS), UpdateSettings(**settings))


# -- a plain PyTorch PPO update ----------------------------------------------------------------

def hand_forward(net: MLPActorCritic, obs: torch.Tensor):
    """(torch distribution, value) computed from the layer weights with F.linear and tanh."""
    def mlp(layers, x):
        for i, layer in enumerate(layers):
            x = F.linear(x, layer.weight, layer.bias)
            if i < len(layers) - 1:
                x = torch.tanh(x)
        return x

    head, value = mlp(net.actor.layers, obs), mlp(net.critic.layers, obs)[:, 0]
    if net.log_std is None:
        return TorchCategorical(logits=head), value
    return Normal(head, net.log_std.clamp(-20.0, 2.0).exp().expand_as(head)), value


def old_distribution(batch: Batch, idx):
    params = batch.dist_params[idx]
    if params.shape[1] == 2 * batch.actions.shape[-1] and batch.actions.dim() == 2:
        mean, log_std = params.chunk(2, dim=-1)
        return Normal(mean, log_std.exp())
    return TorchCategorical(logits=params)


def log_prob_of(dist, actions):
    return dist.log_prob(actions).sum(-1) if isinstance(dist, Normal) else dist.log_prob(actions.long())


def entropy_of(dist):
    return dist.entropy().sum(-1) if isinstance(dist, Normal) else dist.entropy()


def hand_standardise(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / (x.std(unbiased=True) + 1e-8)


def reference_update(net, batch: Batch, *, lr, num_epochs, minibatch_size, epsilon=0.2, vf_coef=0.5, ent_coef=0.0,
                     max_grad_norm=0.5, clip_value_loss=None, normalize_advantage="minibatch", seed=0):
    """PPO's update in plain PyTorch. Records, per step, the pre-step k3 of the minibatch, the
    three loss terms, the pre-step ratios, the gradient norm, and the parameters after the step."""
    n = len(batch)
    assert n % minibatch_size == 0
    opt = torch.optim.Adam(net.parameters(), lr=lr, eps=ADAM_EPS)
    advantages = hand_standardise(batch.advantages) if normalize_advantage == "batch" else batch.advantages
    steps = []
    torch.manual_seed(seed)
    for _ in range(num_epochs):
        order = torch.randperm(n)
        for start in range(0, n, minibatch_size):
            idx = order[start:start + minibatch_size]
            dist, value = hand_forward(net, batch.obs[idx])
            log_ratio = log_prob_of(dist, batch.actions[idx]) - batch.log_probs[idx]
            ratio = log_ratio.exp()
            adv = advantages[idx]
            if normalize_advantage == "minibatch":
                adv = hand_standardise(adv)
            policy_loss = -torch.min(ratio * adv, ratio.clamp(1 - epsilon, 1 + epsilon) * adv).mean()
            returns, old_v = batch.returns[idx], batch.values[idx]
            if clip_value_loss is None:
                value_loss = 0.5 * ((value - returns) ** 2).mean()
            else:
                clipped = old_v + torch.clamp(value - old_v, -clip_value_loss, clip_value_loss)
                value_loss = 0.5 * torch.max((value - returns) ** 2, (clipped - returns) ** 2).mean()
            entropy = entropy_of(dist).mean()
            opt.zero_grad()
            (policy_loss + vf_coef * value_loss - ent_coef * entropy).backward()
            norm = (torch.nn.utils.clip_grad_norm_(net.parameters(), max_grad_norm).item()
                    if max_grad_norm is not None else float("nan"))
            opt.step()
            r = ratio.detach()
            steps.append({"k3": ((r - 1) - log_ratio.detach()).mean().item(), "ratio": r,
                          "terms": (policy_loss.item(), value_loss.item(), entropy.item()), "norm": norm,
                          "params": [p.detach().clone() for p in net.parameters()]})
    return steps


def reference_divergence(net, batch: Batch) -> dict:
    with torch.no_grad():
        dist, _ = hand_forward(net, batch.obs)
        old = old_distribution(batch, slice(None))
        log_ratio = log_prob_of(dist, batch.actions) - batch.log_probs
        kl = kl_divergence(old, dist)
        kl = kl.sum(-1) if isinstance(dist, Normal) else kl
    r = log_ratio.exp()
    return {"kl": kl.mean().item(), "approx_kl_k3": ((r - 1) - log_ratio).mean().item(),
            "ratio_min": r.min().item(), "ratio_max": r.max().item()}


def assert_params(net, expected, atol=2e-6):
    for p, q in zip(net.parameters(), expected):
        torch.testing.assert_close(p.detach(), q, rtol=1e-5, atol=atol)


# -- the update equals the plain loop ------------------------------------------------------------

EQUIVALENCE = [
    dict(space=BOX, num_epochs=1, normalize_advantage="minibatch", clip_value_loss=None, ent_coef=0.0),
    dict(space=BOX, num_epochs=1, normalize_advantage="batch", clip_value_loss=0.2, ent_coef=0.01),
    dict(space=BOX, num_epochs=1, normalize_advantage="off", clip_value_loss=None, ent_coef=0.01),
    dict(space=DISCRETE, num_epochs=1, normalize_advantage="minibatch", clip_value_loss=0.2, ent_coef=0.01, lr=5e-2),
    dict(space=BOX, num_epochs=3, normalize_advantage="minibatch", clip_value_loss=0.2, ent_coef=0.01),
]


@pytest.mark.parametrize("case", EQUIVALENCE, ids=lambda c: "-".join(
    [type(c["space"]).__name__, f"epochs{c['num_epochs']}", c["normalize_advantage"],
     "vclip" if c["clip_value_loss"] else "noclip", f"ent{c['ent_coef']}"]))
def test_update_equals_a_plain_pytorch_ppo_update(case):
    case = dict(case)
    space, lr = case.pop("space"), case.pop("lr", 1e-2)
    net = make_net(space)
    reference = copy.deepcopy(net)
    batch = make_batch(net)
    settings = dict(num_epochs=case["num_epochs"], minibatch_size=32, vf_coef=0.5, ent_coef=case["ent_coef"],
                    max_grad_norm=0.5, clip_value_loss=case["clip_value_loss"],
                    normalize_advantage=case["normalize_advantage"])

    steps = reference_update(reference, clone_batch(batch), lr=lr, epsilon=0.2, seed=123, **settings)
    update = make_update(net, lr=lr, loss=ClipLoss(0.2), **settings)
    torch.manual_seed(123)
    stats = update(batch)

    assert len(steps) == 2 * case["num_epochs"]
    assert any(s["norm"] > 0.5 for s in steps)  # gradient clipping was active
    ratios = torch.cat([s["ratio"] for s in steps])
    assert ((ratios - 1).abs() > 0.2).any()  # and the clip in the surrogate too
    assert_params(net, steps[-1]["params"])
    assert stats["epochs"] == case["num_epochs"]
    terms = np.mean([s["terms"] for s in steps], axis=0)
    assert [stats["policy_loss"], stats["value_loss"], stats["entropy"]] == pytest.approx(terms, rel=1e-4, abs=1e-6)
    assert stats["clip_fraction"] == pytest.approx(((ratios - 1).abs() > 0.2).float().mean().item(), abs=1e-6)
    expected = reference_divergence(reference, batch)
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_statistics_keys_and_types():
    net = make_net()
    stats = make_update(net, num_epochs=2, minibatch_size=16)(make_batch(net))
    assert set(stats) == {"policy_loss", "value_loss", "entropy", "clip_fraction", "epochs", "kl", "approx_kl_k3",
                          "ratio_min", "ratio_max"}
    assert type(stats["epochs"]) is int and stats["epochs"] == 2
    for key, value in stats.items():
        assert type(value) in (int, float) and math.isfinite(value), key
    assert stats["kl"] >= 0 and stats["approx_kl_k3"] >= 0 and 0 <= stats["clip_fraction"] <= 1
    assert 0 < stats["ratio_min"] <= stats["ratio_max"]


# -- value loss --------------------------------------------------------------------------------

def test_value_loss_is_half_the_mean_squared_error():
    update = make_update(make_net(), clip_value_loss=None)
    g = torch.Generator().manual_seed(0)
    value, old, returns = (torch.randn(50, generator=g, dtype=torch.float64) for _ in range(3))
    expected = 0.5 * sum((v - r) ** 2 for v, r in zip(value.tolist(), returns.tolist())) / 50
    assert update.value_loss(value, old, returns).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("clip", [0.05, 0.3, 2.0])
def test_clipped_value_loss_against_a_brute_force_loop(clip):
    update = make_update(make_net(), clip_value_loss=clip)
    g = torch.Generator().manual_seed(1)
    old = torch.randn(200, generator=g, dtype=torch.float64)
    value = (old + 0.5 * torch.randn(200, generator=g, dtype=torch.float64)).requires_grad_()
    returns = old + torch.randn(200, generator=g, dtype=torch.float64)

    total, grads, clipped_chosen = 0.0, [], 0
    for v, o, r in zip(value.tolist(), old.tolist(), returns.tolist()):
        vc = o + min(max(v - o, -clip), clip)
        unclipped, clipped = (v - r) ** 2, (vc - r) ** 2
        if clipped > unclipped:  # the pessimistic (larger) error; its slope is 0 where v was clipped
            clipped_chosen += 1
            total += clipped
            grads.append((vc - r) / 200 if abs(v - o) < clip else 0.0)
        else:
            total += unclipped
            grads.append((v - r) / 200)
    loss = update.value_loss(value, old, returns)
    assert loss.item() == pytest.approx(0.5 * total / 200, rel=1e-12)
    loss.backward()
    np.testing.assert_allclose(value.grad.numpy(), grads, rtol=1e-10, atol=1e-14)
    if clip < 1.0:
        assert clipped_chosen > 0  # the clipped branch was exercised


@pytest.mark.parametrize("clip", [None, 0.3])
def test_huber_value_loss_against_a_brute_force_loop(clip):
    delta = 0.8
    update = make_update(make_net(), value_loss="huber", huber_delta=delta, clip_value_loss=clip)
    g = torch.Generator().manual_seed(2)
    old = torch.randn(200, generator=g, dtype=torch.float64)
    value = old + 0.5 * torch.randn(200, generator=g, dtype=torch.float64)
    returns = old + 2.0 * torch.randn(200, generator=g, dtype=torch.float64)

    def h(e):
        return 0.5 * e * e if abs(e) <= delta else delta * (abs(e) - delta / 2)

    total = 0.0
    for v, o, r in zip(value.tolist(), old.tolist(), returns.tolist()):
        term = h(v - r)
        if clip is not None:
            term = max(term, h(o + min(max(v - o, -clip), clip) - r))
        total += term
    assert update.value_loss(value, old, returns).item() == pytest.approx(total / 200, rel=1e-12)


def test_an_empty_batch_takes_no_step():
    net = make_net()
    before = [p.detach().clone() for p in net.parameters()]
    batch = make_batch(net)
    empty = Batch(*(t[:0] for t in tensors(batch)))
    stats = make_update(net, num_epochs=2, minibatch_size=32)(empty)
    assert stats["epochs"] == 0
    assert_params(net, before, atol=0)


# -- advantage standardisation -------------------------------------------------------------------

class RecordingClip(ClipLoss):
    """The clipped surrogate, remembering what it was given."""

    def __init__(self):
        super().__init__(0.2)
        self.seen = []

    def __call__(self, pb):
        self.seen.append((pb.old_log_prob.detach().clone(), pb.advantages.detach().clone()))
        return super().__call__(pb)


@pytest.mark.parametrize("mode", ["off", "batch", "minibatch"])
def test_normalize_advantage_standardises_where_it_says(mode):
    net = make_net()
    batch = make_batch(net)
    raw = batch.advantages.clone()
    position = {v: i for i, v in enumerate(batch.log_probs.tolist())}
    assert len(position) == N  # old log-probs identify the samples
    loss = RecordingClip()
    make_update(net, loss=loss, num_epochs=2, minibatch_size=16, normalize_advantage=mode)(batch)

    assert len(loss.seen) == 2 * 4
    whole = hand_standardise(raw)
    for old_log_prob, adv in loss.seen:
        idx = torch.tensor([position[v] for v in old_log_prob.tolist()])
        if mode == "off":
            expected = raw[idx]
        elif mode == "batch":
            expected = whole[idx]  # standardised over the whole batch, not per minibatch
        else:
            expected = hand_standardise(raw[idx])
            assert adv.mean().item() == pytest.approx(0.0, abs=1e-6) and adv.std().item() == pytest.approx(1.0, 1e-5)
        torch.testing.assert_close(adv, expected, rtol=1e-5, atol=1e-6)
    if mode == "batch":
        epoch = torch.cat([adv for _, adv in loss.seen[:4]])
        assert epoch.mean().item() == pytest.approx(0.0, abs=1e-6) and epoch.std().item() == pytest.approx(1.0, 1e-5)
        minibatch_means = [adv.mean().abs().item() for _, adv in loss.seen]
        assert max(minibatch_means) > 0.05  # per-minibatch means are not forced to 0


def test_standardise_against_numpy():
    x = np.random.default_rng(0).normal(3.0, 5.0, size=37)
    out = standardise(torch.tensor(x)).numpy()
    np.testing.assert_allclose(out, (x - x.mean()) / (x.std(ddof=1) + 1e-8), rtol=1e-12)
    assert standardise(torch.tensor([4.2])).tolist() == [0.0]  # one sample: centred only


# -- minibatches -------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 5, 32, 64, 100])
def test_minibatch_slices_are_near_equal_and_cover_the_batch(size):
    for n in range(0, 300):
        slices = minibatch_slices(n, size)
        assert len(slices) == max(1, round(n / size))
        covered = [i for s in slices for i in range(n)[s]]
        assert covered == list(range(n))  # contiguous, in order, no overlap, nothing left out
        lengths = [s.stop - s.start for s in slices]
        assert max(lengths) - min(lengths) <= 1, (n, size, lengths)


# -- k3 ----------------------------------------------------------------------------------------

def test_kl_k3_is_the_mean_of_r_minus_1_minus_log_r_and_never_negative():
    x = torch.tensor([-30.0, -3.0, -0.5, -1e-4, 0.0, 1e-4, 0.7, 4.0], dtype=torch.float64)
    brute = sum((math.exp(v) - 1.0) - v for v in x.tolist()) / len(x)
    assert kl_k3(x) == pytest.approx(brute, rel=1e-12)
    for v in x.tolist():
        assert kl_k3(torch.tensor([v], dtype=torch.float64)) >= 0.0
    assert kl_k3(torch.zeros(5)) == 0.0
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert kl_k3(3.0 * torch.randn(100, generator=g)) >= 0.0


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_kl_k3_estimates_kl_old_new_by_monte_carlo(kind):
    g = torch.Generator().manual_seed(0)
    if kind == "gaussian":
        old, new = Normal(torch.tensor([0.0, 0.3]), torch.tensor([1.0, 0.8])), Normal(torch.tensor([0.4, 0.0]),
                                                                                     torch.tensor([1.3, 0.9]))
        samples = old.mean + old.stddev * torch.randn(200_000, 2, generator=g)
        log_ratio = new.log_prob(samples).sum(-1) - old.log_prob(samples).sum(-1)
        exact = kl_divergence(old, new).sum().item()
    else:
        old = TorchCategorical(probs=torch.tensor([0.5, 0.3, 0.2]))
        new = TorchCategorical(probs=torch.tensor([0.2, 0.5, 0.3]))
        samples = torch.multinomial(old.probs, 200_000, replacement=True, generator=g)
        log_ratio = new.log_prob(samples) - old.log_prob(samples)
        exact = sum(p * math.log(p / q) for p, q in zip([0.5, 0.3, 0.2], [0.2, 0.5, 0.3]))
    k3 = (log_ratio.exp() - 1) - log_ratio
    stderr = k3.std().item() / math.sqrt(len(k3))
    assert kl_k3(log_ratio) == pytest.approx(exact, abs=4 * stderr)


# -- divergence on a fresh policy -------------------------------------------------------------

@pytest.mark.parametrize("space", [BOX, DISCRETE], ids=["box", "discrete"])
@pytest.mark.parametrize("loss", [ClipLoss(0.2), KLPenaltyLoss(estimator="analytic"),
                                  KLPenaltyLoss(direction="reverse")], ids=["clip", "klpen", "klpen-reverse"])
def test_divergence_of_a_fresh_policy_is_kl_0_ratio_1(space, loss):
    net = make_net(space)
    batch = make_batch(net)
    div = make_update(net, loss=loss).divergence(batch)
    assert div == {"kl": pytest.approx(0.0, abs=1e-7), "approx_kl_k3": pytest.approx(0.0, abs=1e-7),
                   "ratio_min": pytest.approx(1.0, abs=1e-6), "ratio_max": pytest.approx(1.0, abs=1e-6)}


def test_divergence_matches_torch_distributions_on_a_moved_policy():
    net = make_net()
    batch = make_batch(net)
    with torch.no_grad():
        net.log_std.add_(torch.tensor([0.3, -0.2]))
        net.actor.layers[-1].bias.add_(torch.tensor([0.1, -0.4]))
    update = make_update(net)
    div = update.divergence(batch)
    expected = reference_divergence(net, batch)
    assert div == {k: pytest.approx(v, rel=1e-5, abs=1e-7) for k, v in expected.items()}
    assert expected["kl"] > 0.01  # it moved
    half = update.divergence(batch, slice(0, 10))  # on a slice: the slice's own numbers
    sub = reference_divergence(net, Batch(*(t[:10] for t in tensors(batch))))
    assert half == {k: pytest.approx(v, rel=1e-5, abs=1e-7) for k, v in sub.items()}


# -- target_kl ---------------------------------------------------------------------------------

def kl_schedule():
    """The pre-step k3 of every minibatch over 2 epochs of 2 minibatches, by the plain loop."""
    net = make_net()
    steps = reference_update(copy.deepcopy(net), make_batch(net), lr=5e-2, num_epochs=2, minibatch_size=32,
                             max_grad_norm=None, seed=5)
    return [s["k3"] for s in steps], steps


def test_target_kl_stops_before_the_first_minibatch_of_the_second_epoch():
    k3, steps = kl_schedule()
    assert k3[0] == pytest.approx(0.0, abs=1e-9)  # the first step starts at pi_old
    assert k3[2] > 1.2 * k3[1]  # the schedule this test relies on: epoch 2 opens further away
    net = make_net()
    batch = make_batch(net)
    target = (k3[1] + k3[2]) / 2 / 1.5  # 1.5 x target lies between the last allowed and the first stopped k3
    update = make_update(net, lr=5e-2, num_epochs=2, minibatch_size=32, max_grad_norm=None, target_kl=target)
    torch.manual_seed(5)
    stats = update(batch)
    assert stats["epochs"] == 2  # it stopped in the second epoch ...
    assert_params(net, steps[1]["params"])  # ... before its first step: only epoch 1's two steps were taken
    # the statistics cover the steps taken and the final policy
    terms = np.mean([s["terms"] for s in steps[:2]], axis=0)
    assert [stats["policy_loss"], stats["value_loss"], stats["entropy"]] == pytest.approx(terms, rel=1e-4, abs=1e-6)


def test_target_kl_is_compared_at_one_and_a_half_times():
    k3, steps = kl_schedule()
    net = make_net()
    batch = make_batch(net)
    # 1.5 x target just above the second epoch's first k3 (but 1 x target below it): no stop there
    target = k3[2] * 1.02 / 1.5
    assert target < k3[2]
    update = make_update(net, lr=5e-2, num_epochs=2, minibatch_size=32, max_grad_norm=None, target_kl=target)
    torch.manual_seed(5)
    stats = update(batch)
    if k3[3] > 1.5 * target:  # stops before the last step
        assert_params(net, steps[2]["params"])
    else:
        assert_params(net, steps[3]["params"])
    assert stats["epochs"] == 2


def test_without_target_kl_all_epochs_run_however_far_the_policy_moves():
    k3, steps = kl_schedule()
    net = make_net()
    batch = make_batch(net)  # (make_batch seeds torch itself: before the shuffle's seed)
    update = make_update(net, lr=5e-2, num_epochs=2, minibatch_size=32, max_grad_norm=None)
    torch.manual_seed(5)
    stats = update(batch)
    assert max(k3) > 0.05 and stats["epochs"] == 2
    assert_params(net, steps[3]["params"])


def moved_batch(net) -> Batch:
    """A batch whose pi_old is far from the current policy (as after many updates)."""
    batch = make_batch(net)
    batch.log_probs = batch.log_probs - 1.0
    return batch


def test_target_kl_stop_before_any_step_leaves_the_policy_unchanged():
    net = make_net()
    before = [p.detach().clone() for p in net.parameters()]
    batch = moved_batch(net)
    stats = make_update(net, num_epochs=2, minibatch_size=32, target_kl=0.01)(batch)
    assert_params(net, before, atol=0)
    # no loss term was computed: they are reported as nan, the divergence as measured
    for key in ("policy_loss", "value_loss", "entropy", "clip_fraction"):
        assert math.isnan(stats[key]), key
    assert stats["kl"] == pytest.approx(reference_divergence(net, batch)["kl"], rel=1e-5)
    assert stats["approx_kl_k3"] > 0.015


class RecordingKLPenalty(KLPenaltyLoss):
    """The KL-penalty loss, logging its steps and the beta rule's calls in order."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.events = []

    def __call__(self, pb):
        self.events.append("step")
        return super().__call__(pb)

    def observe_kl(self, kl, granularity):
        self.events.append(granularity)
        super().observe_kl(kl, granularity)


def test_epoch_beta_rule_runs_only_after_epochs_that_took_a_step():
    k3, _ = kl_schedule()
    net = make_net()
    # clip plus a negligible penalty: the same steps as the schedule's clip loss
    loss = RecordingKLPenalty(beta=1e-8, kl_target=1.0, adapt_every="epoch", epsilon=0.2)
    target = (k3[1] + k3[2]) / 2 / 1.5  # stops at the first minibatch of epoch 2, as above
    batch = make_batch(net)
    update = make_update(net, loss=loss, lr=5e-2, num_epochs=2, minibatch_size=32, max_grad_norm=None,
                         target_kl=target)
    torch.manual_seed(5)
    update(batch)
    assert loss.events[:3] == ["step", "step", "epoch"]  # the stop came at epoch 2's first minibatch
    # every beta-rule call follows at least one step taken since the previous call
    previous = "epoch"
    for event in loss.events:
        assert not (event == "epoch" and previous == "epoch"), loss.events
        previous = event


# -- non-finite --------------------------------------------------------------------------------

@pytest.mark.parametrize("field,normalize,term", [
    ("returns", "minibatch", "value_loss"),
    ("values", "minibatch", "value_loss"),  # V_old enters the clipped value loss
    ("advantages", "off", "policy_loss"),
    ("advantages", "minibatch", "policy_loss"),
    ("log_probs", "off", "policy_loss"),
])
def test_nan_in_the_batch_raises_non_finite_error_naming_the_term(field, normalize, term):
    net = make_net()
    before = [p.detach().clone() for p in net.parameters()]
    batch = make_batch(net)
    getattr(batch, field)[:] = float("nan")
    update = make_update(net, num_epochs=2, minibatch_size=32, normalize_advantage=normalize, clip_value_loss=0.2)
    with pytest.raises(NonFiniteError) as info:
        update(batch)
    message = str(info.value)
    assert term in message and "epoch 1, minibatch 1" in message
    for other in {"policy_loss", "value_loss", "entropy"} - {term}:
        assert other not in message
    assert_params(net, before, atol=0)  # no step was taken with the bad loss


def test_nan_in_one_sample_names_the_minibatch_it_is_in():
    net = make_net()
    batch = make_batch(net)
    batch.returns[7] = float("inf")
    torch.manual_seed(3)
    order = torch.randperm(N)
    minibatch = 1 if (order[:32] == 7).any() else 2
    update = make_update(net, num_epochs=1, minibatch_size=32)
    torch.manual_seed(3)
    with pytest.raises(NonFiniteError, match=f"value_loss .*epoch 1, minibatch {minibatch}"):
        update(batch)
