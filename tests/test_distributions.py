"""Closed-form log-prob, entropy and KL against torch.distributions and Monte Carlo."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical as TorchCategorical
from torch.distributions import Independent, Normal, kl_divergence

from ppo_research.algo.distributions import Categorical, DiagGaussian


def gaussians(seed=0, batch=32, dim=3):
    g = torch.Generator().manual_seed(seed)
    p = DiagGaussian(torch.randn(batch, dim, generator=g), 0.5 * torch.randn(batch, dim, generator=g))
    q = DiagGaussian(torch.randn(batch, dim, generator=g), 0.5 * torch.randn(batch, dim, generator=g))
    to_torch = lambda d: Independent(Normal(d.mean, d.log_std.exp()), 1)  # noqa: E731
    return p, q, to_torch(p), to_torch(q)


def categoricals(seed=0, batch=32, k=5):
    g = torch.Generator().manual_seed(seed)
    p, q = Categorical(torch.randn(batch, k, generator=g)), Categorical(torch.randn(batch, k, generator=g))
    return p, q, TorchCategorical(logits=p.logits), TorchCategorical(logits=q.logits)


@pytest.mark.parametrize("make", [gaussians, categoricals], ids=["gaussian", "categorical"])
def test_matches_torch_distributions(make):
    p, q, tp, tq = make()
    actions = tp.sample()
    torch.testing.assert_close(p.log_prob(actions), tp.log_prob(actions))
    torch.testing.assert_close(p.entropy(), tp.entropy())
    torch.testing.assert_close(p.kl(q), kl_divergence(tp, tq))
    torch.testing.assert_close(q.kl(p), kl_divergence(tq, tp))


@pytest.mark.parametrize("make", [gaussians, categoricals], ids=["gaussian", "categorical"])
def test_kl_matches_monte_carlo(make):
    torch.manual_seed(0)
    p, q, _, _ = make(batch=4)
    samples = torch.stack([p.sample() for _ in range(200_000)])  # [S, batch, ...]
    mc = (p.log_prob(samples) - q.log_prob(samples)).mean(0)
    torch.testing.assert_close(mc, p.kl(q), atol=0.03, rtol=0.02)


def test_gaussian_entropy_closed_form():
    log_std = torch.tensor([[-1.0, 0.0, 2.0]])
    d = DiagGaussian(torch.zeros(1, 3), log_std)
    expected = sum(0.5 * math.log(2 * math.pi * math.e) + s for s in (-1.0, 0.0, 2.0))
    assert d.entropy().item() == pytest.approx(expected)


def test_params_roundtrip():
    for p in (gaussians()[0], categoricals()[0]):
        rebuilt = type(p).from_params(p.params())
        assert torch.all(p.kl(rebuilt) == 0)
