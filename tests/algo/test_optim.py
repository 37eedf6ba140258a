"""The flat-buffer optimizer: parameters as views of one buffer, and FlatAdam's maths.

Reference: torch.optim.Adam (default implementation, same eps) and
torch.nn.utils.clip_grad_norm_ on an untouched copy of the same network.
"""
from __future__ import annotations

import copy
import io

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import one_torch_thread

from ppo_research.algo.networks import MLPActorCritic, SharedMLPActorCritic
from ppo_research.algo.optim import FlatAdam, flatten_parameters

OBS = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
EPS = 1e-5


_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)  # helpers


def make_net(cls=MLPActorCritic, seed: int = 0):
    torch.manual_seed(seed)
    net = cls(OBS, ACT, hidden_sizes=[16, 8])
    with torch.no_grad():  # off the init's zero biases / tiny policy head, so every gradient is non-trivial
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net


def objective(net, step: int) -> torch.Tensor:
    """A loss touching every parameter: log-likelihood of fixed actions plus a value regression."""
    g = torch.Generator().manual_seed(100 + step)
    obs = torch.randn(32, 5, generator=g)
    actions = torch.randn(32, 2, generator=g)
    targets = 3.0 * torch.randn(32, generator=g)
    dist, value = net(obs)
    return -dist.log_prob(actions).mean() + (value - targets).pow(2).mean()


def params_of(net) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def in_buffer(t: torch.Tensor, buffer: torch.Tensor) -> bool:
    start, size = buffer.data_ptr(), buffer.numel() * buffer.element_size()
    same_storage = t.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()
    return same_storage and start <= t.data_ptr() < start + size


@pytest.mark.parametrize("cls", [MLPActorCritic, SharedMLPActorCritic])
def test_flattening_keeps_values_and_makes_views_of_one_buffer(cls):
    net = make_net(cls)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flat = flatten_parameters(net)
    params = list(net.parameters())
    assert flat.numel() == sum(p.numel() for p in params)
    for k, v in net.state_dict().items():  # values and shapes unchanged
        assert torch.equal(v, before[k]), k
    torch.testing.assert_close(flat.detach(), torch.cat([b.reshape(-1) for b in before.values()]), rtol=0, atol=0)
    for p in params:
        assert in_buffer(p, flat) and in_buffer(p.grad, flat.grad)

    # writes to the buffer are seen by the parameters, and writes to a parameter by the buffer
    with torch.no_grad():
        flat[0] = 123.0
        flat[-1] = -7.0
    assert params[0].reshape(-1)[0].item() == 123.0 and params[-1].reshape(-1)[-1].item() == -7.0
    with torch.no_grad():
        params[1].fill_(0.25)
    offset = params[0].numel()
    assert torch.all(flat[offset:offset + params[1].numel()] == 0.25)
    # loading a state dict copies into the views (it does not re-seat the parameters)
    net.load_state_dict(before)
    assert torch.equal(flat.detach(), torch.cat([b.reshape(-1) for b in before.values()]))
    assert all(in_buffer(p, flat) for p in net.parameters())


def test_gradients_accumulate_into_the_flat_grad():
    net = make_net()
    reference = copy.deepcopy(net)
    flat = flatten_parameters(net)
    expected = torch.autograd.grad(objective(reference, 0), list(reference.parameters()))
    expected = torch.cat([g.reshape(-1) for g in expected])

    objective(net, 0).backward()
    torch.testing.assert_close(flat.grad, expected, rtol=1e-6, atol=1e-7)
    objective(net, 0).backward()  # autograd accumulates: twice the gradient, still in the buffer
    torch.testing.assert_close(flat.grad, 2 * expected, rtol=1e-6, atol=1e-7)
    assert all(in_buffer(p.grad, flat.grad) for p in net.parameters())
    torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in net.parameters()]), flat.grad, rtol=0, atol=0)


def test_zero_grad_zeroes_without_detaching_the_views():
    net = make_net()
    reference = copy.deepcopy(net)
    opt = FlatAdam(net, lr=1e-3, eps=EPS)
    objective(net, 0).backward()
    assert opt.flat.grad.abs().sum() > 0
    opt.zero_grad()
    assert torch.count_nonzero(opt.flat.grad) == 0
    for p in net.parameters():
        assert p.grad is not None and in_buffer(p.grad, opt.flat.grad) and torch.count_nonzero(p.grad) == 0
    # the next backward lands in the buffer again (and nowhere else)
    objective(net, 1).backward()
    expected = torch.autograd.grad(objective(reference, 1), list(reference.parameters()))
    torch.testing.assert_close(opt.flat.grad, torch.cat([g.reshape(-1) for g in expected]), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", [MLPActorCritic, SharedMLPActorCritic])
@pytest.mark.parametrize("max_norm,lr", [(0.5, 3e-3), (None, 3e-3), (1e6, 1e-2)],
                         ids=["clipped", "unclipped", "huge-norm"])
def test_flat_adam_equals_torch_adam_with_clip_grad_norm(cls, max_norm, lr):
    net = make_net(cls)
    reference = copy.deepcopy(net)
    opt = FlatAdam(net, lr=lr, eps=EPS)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=lr, eps=EPS)
    clipped_steps = 0
    for step in range(6):
        opt.zero_grad()
        objective(net, step).backward()
        ref_opt.zero_grad()
        objective(reference, step).backward()
        if max_norm is not None:
            norm = opt.clip_grad_norm(max_norm)
            ref_norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), max_norm)
            # After the first step the parameters agree only to float32 round-off (FlatAdam computes
            # its bias corrections per member in float64 and applies one scaled quotient; torch's
            # Adam uses addcdiv with a python scalar), so gradients agree to ~1e-5 relative.
            tol = dict(rtol=1e-6, atol=1e-7) if step == 0 else dict(rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(norm, ref_norm, **tol)  # the pre-clip norm
            clipped_steps += bool(ref_norm > max_norm)
            torch.testing.assert_close(opt.flat.grad, torch.cat([p.grad.reshape(-1) for p in reference.parameters()]),
                                       **tol)
        opt.step()
        ref_opt.step()
        for p, q in zip(net.parameters(), reference.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    if max_norm == 0.5:
        assert clipped_steps == 6  # the clip was active: the comparison covers the scaling
    if max_norm == 1e6:
        assert clipped_steps == 0  # and here it must leave the gradient alone


def test_state_dict_round_trip_continues_identically():
    net = make_net()
    opt = FlatAdam(net, lr=3e-3, eps=EPS)

    def train(n, start):
        for step in range(start, start + n):
            opt_.zero_grad()
            objective(net_, step).backward()
            opt_.clip_grad_norm(0.5)
            opt_.step()

    net_, opt_ = net, opt
    train(3, 0)
    buffer = io.BytesIO()  # through torch.save, as a checkpoint goes
    torch.save({"net": net.state_dict(), "opt": opt.state_dict()}, buffer)
    train(4, 3)
    expected = params_of(net)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = make_net(seed=1)  # different weights until loaded
    resumed_opt = FlatAdam(resumed, lr=3e-3, eps=EPS)
    resumed.load_state_dict(saved["net"])
    resumed_opt.load_state_dict(saved["opt"])
    assert all(in_buffer(p, resumed_opt.flat) for p in resumed.parameters())
    assert resumed_opt.member_state(0)["step"] == 3
    net_, opt_ = resumed, resumed_opt
    train(4, 3)
    for p, q in zip(resumed.parameters(), expected):
        assert torch.equal(p.detach(), q)
