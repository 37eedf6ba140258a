"""The hand-written gradient (algo/hand_gradient.py) against autograd's on the same minibatch,
for every configuration it takes, with the policy moved so that clipping and the log-std clamp
are exercised; and the configurations it must leave to autograd."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import one_torch_thread

from ppo_research.algo.batch import Batch
from ppo_research.algo.hand_gradient import HandGradient
from ppo_research.algo.losses import ClipLoss, CPILoss, KLPenaltyLoss, PGLoss, member_view
from ppo_research.algo.members import _Padded
from ppo_research.algo.networks import MLPActorCritic, SharedMLPActorCritic
from ppo_research.algo.optim import FlatAdam
from ppo_research.algo.update import PPOUpdate, UpdateSettings

OBS = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
BOX = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)  # helpers


def _setup(loss, activation="tanh", ent_coef=0.0, log_std_max=2.0, seed=0, n=48):
    torch.manual_seed(seed)
    net = MLPActorCritic(OBS, BOX, hidden_sizes=[16, 8], activation=activation, log_std_max=log_std_max)
    update = PPOUpdate(net, loss, FlatAdam(net, lr=1e-3, eps=1e-5), UpdateSettings(ent_coef=ent_coef))
    g = torch.Generator().manual_seed(seed + 1)
    obs = torch.randn(n, 5, generator=g)
    with torch.no_grad():
        dist, values = net(obs)
        actions = dist.sample()
        log_probs = dist.log_prob(actions)
        params = dist.params()
        for p in net.parameters():  # pi_theta away from pi_old: ratios on both sides of the clip range
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    advantages = 0.5 + 2.0 * torch.randn(n, generator=g)
    batch = Batch(obs, actions, log_probs, params, values, advantages, advantages + values + torch.randn(n, generator=g))
    return net, update, batch


def _unwritten(update) -> None:
    """What the gradient buffer holds before a hand-written gradient: NaN, so that a parameter it
    leaves unwritten (the update no longer zeroes it first) fails the comparison."""
    update.optimizer.flat.grad.fill_(float("nan"))


def _gradients(net, update, batch, hand: HandGradient | None) -> list[torch.Tensor]:
    update.optimizer.zero_grad() if hand is None else _unwritten(update)
    with torch.set_grad_enabled(hand is None):
        pb, value = update.policy_batch(batch, with_value=True, forward=hand and hand.forward)
        total = update.loss_terms(update.loss, pb, value, batch)[-1]
    if hand is None:
        total.backward()
    else:
        hand.backward(pb, update.loss, value, batch.actions, batch.returns, not update.no_entropy_bonus)
    return [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("loss,activation,ent_coef,log_std_max", [
    (ClipLoss(0.2), "tanh", 0.0, 2.0),
    (ClipLoss(0.1), "relu", 0.01, 2.0),
    (CPILoss(), "tanh", 0.0, 2.0),
    (PGLoss(), "tanh", 0.003, 2.0),
    (ClipLoss(0.2), "tanh", 0.0, -0.1),  # log-std clamped at its maximum for some dimensions: no gradient there
    (KLPenaltyLoss(beta=3.0), "tanh", 0.0, 2.0),  # the paper's: analytic KL(old || new)
    (KLPenaltyLoss(beta=0.5, direction="reverse"), "relu", 0.01, 2.0),
    (KLPenaltyLoss(beta=2.0, estimator="k1"), "tanh", 0.0, 2.0),
    (KLPenaltyLoss(beta=2.0, estimator="k3"), "tanh", 0.0, 2.0),
    (KLPenaltyLoss(beta=2.0, estimator="k1", direction="reverse"), "tanh", 0.0, 2.0),
    (KLPenaltyLoss(beta=2.0, estimator="k3", direction="reverse"), "tanh", 0.0, 2.0),
    (KLPenaltyLoss(beta=1.0, epsilon=0.2), "tanh", 0.0, 2.0),  # clip + penalty
])
def test_the_hand_gradient_is_autograds(loss, activation, ent_coef, log_std_max):
    net, update, batch = _setup(loss, activation, ent_coef, log_std_max)
    hand = HandGradient(net, update.settings.vf_coef, update.ent_coef)
    assert HandGradient.supports(net, loss, update.settings)
    expected = _gradients(net, update, batch, None)
    got = _gradients(net, update, batch, hand)
    if loss.epsilon is not None:  # the case exercises both sides of the clip range
        with torch.no_grad():
            pb, _ = update.policy_batch(batch)
            outside = (pb.ratio - 1).abs() > loss.epsilon
        assert 0 < int(outside.sum()) < len(batch)
    names = [name for name, _ in net.named_parameters()]
    if log_std_max < 0:
        clamped = net.log_std > log_std_max
        assert clamped.any() and (expected[names.index("log_std")][clamped] == 0).all()
    for name, e, g in zip(names, expected, got):
        assert e.abs().max() > 0 or name == "log_std", name
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7, msg=name)


class _UserLoss(ClipLoss):  # a subclass may change the maths: autograd
    pass


def test_configurations_it_does_not_compute_go_through_autograd():
    settings = UpdateSettings()
    net, _, _ = _setup(ClipLoss(0.2))
    assert HandGradient.supports(net, ClipLoss(0.2), settings)
    assert HandGradient.supports(net, KLPenaltyLoss(), settings)
    assert not HandGradient.supports(net, ClipLoss(0.2), UpdateSettings(value_loss="huber"))
    assert not HandGradient.supports(net, ClipLoss(0.2), UpdateSettings(clip_value_loss=0.2))
    torch.manual_seed(0)
    assert not HandGradient.supports(net, _UserLoss(), settings)
    for other in (MLPActorCritic(OBS, BOX, activation="elu"), MLPActorCritic(OBS, BOX, state_dependent_std=True),
                  MLPActorCritic(OBS, BOX, std_param="softplus"), MLPActorCritic(OBS, BOX, squash="tanh"),
                  MLPActorCritic(OBS, gym.spaces.Discrete(3)), SharedMLPActorCritic(OBS, BOX)):
        assert not HandGradient.supports(other, ClipLoss(0.2), settings)

    class Subclassed(MLPActorCritic):  # may change the maths: autograd
        pass

    assert not HandGradient.supports(Subclassed(OBS, BOX), ClipLoss(0.2), settings)


MEMBER_LOSSES = {"clip": lambda k: ClipLoss([0.1, 0.2, 0.3][k]), "cpi": lambda k: CPILoss(),
                 "klpen": lambda k: KLPenaltyLoss(beta=[0.3, 1.0, 3.0][k]),
                 "klpen_k3": lambda k: KLPenaltyLoss(beta=[0.3, 1.0, 3.0][k], estimator="k3"),
                 # the paper's rows in one population: computed as the KL penalty, eps = inf / beta = 0 where absent
                 "mixed": lambda k: [CPILoss(), ClipLoss(0.2), KLPenaltyLoss(beta=3.0)][k]}


@pytest.mark.parametrize("loss_kind,ent_coefs", [("clip", [0.0, 0.0, 0.0]), ("clip", [0.0, 0.01, 0.003]),
                                                 ("cpi", [0.0, 0.0, 0.0]), ("klpen", [0.0, 0.0, 0.0]),
                                                 ("klpen_k3", [0.0, 0.0, 0.0]), ("mixed", [0.0, 0.0, 0.0])])
def test_a_populations_hand_gradient_is_autograds(loss_kind, ent_coefs):
    """Three members with their own epsilon, beta and entropy coefficient and batches of
    different lengths (so the stacked minibatch is padded and masked)."""
    members = [_setup(MEMBER_LOSSES[loss_kind](k), seed=k, n=40 + 4 * k) for k in range(3)]
    nets, losses, batches = [m[0] for m in members], [m[1].loss for m in members], [m[2] for m in members]
    update = PPOUpdate(nets, losses, FlatAdam(nets, lr=1e-3, eps=1e-5), UpdateSettings(), ent_coefs=ent_coefs)
    padded = _Padded(batches, torch.device("cpu"))
    assert padded.mask is not None and not padded.mask.all()
    stacked_batch = padded.batch()

    def gradient(hand):
        update.optimizer.zero_grad() if hand is None else _unwritten(update)
        with torch.set_grad_enabled(hand is None):
            pb, value = update.policy_batch(stacked_batch, mask=padded.mask, forward=hand and hand.forward)
            view = member_view(update.losses)
            total = update.loss_terms(view, pb, value, stacked_batch)[-1]
        if hand is None:
            total.sum().backward()
        else:
            hand.backward(pb, view, value, stacked_batch.actions, stacked_batch.returns, not update.no_entropy_bonus)
        return update.optimizer.grad_rows.clone()

    hand = HandGradient(update.net, update.settings.vf_coef, update.ent_coef)
    assert HandGradient.supports(update.net, member_view(update.losses), update.settings)
    expected, got = gradient(None), gradient(hand)
    assert (expected != 0).any(dim=1).all()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
