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


# -- the tanh-squashed Gaussian ------------------------------------------------------------------
# Reference: torch.distributions' TransformedDistribution(Normal, TanhTransform), and for the
# entropy (which has no closed form) Gauss-Hermite quadrature of E_u[log(1 - tanh(u)^2)].

from numpy.polynomial.hermite_e import hermegauss  # noqa: E402
from torch.distributions import TanhTransform, TransformedDistribution  # noqa: E402

from ppo_research.algo.distributions import TanhGaussian  # noqa: E402


def squashed(mean, log_std):
    return TanhGaussian(mean, log_std), Independent(
        TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()]), 1)


def tanh_gaussians(seed=0, batch=16, dim=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    mean = 0.8 * torch.randn(batch, dim, generator=g, dtype=dtype)
    log_std = -0.5 + 0.4 * torch.randn(batch, dim, generator=g, dtype=dtype)
    return mean, log_std


def test_tanh_gaussian_log_prob_matches_transformed_distribution():
    mean, log_std = tanh_gaussians()
    ours, ref = squashed(mean, log_std)
    torch.manual_seed(0)
    actions = ref.sample((50,))  # [S, batch, dim], in (-1, 1)
    assert actions.abs().max() < 1 - 1e-6  # inside the clamp: the comparison is exact
    torch.testing.assert_close(ours.log_prob(actions), ref.log_prob(actions))
    # float32, as the network runs it
    ours32, ref32 = squashed(mean.float(), log_std.float())
    torch.testing.assert_close(ours32.log_prob(actions.float()), ref32.log_prob(actions.float()), rtol=1e-4, atol=1e-4)


def test_tanh_gaussian_samples_follow_the_reference_and_mode_is_tanh_mean():
    mean, log_std = tanh_gaussians(batch=2, dim=2)
    ours, ref = squashed(mean, log_std)
    torch.manual_seed(1)
    mine = TanhGaussian(mean.expand(100_000, 2, 2), log_std.expand(100_000, 2, 2)).sample()
    theirs = ref.sample((100_000,))
    assert mine.abs().max() < 1
    torch.testing.assert_close(mine.mean(0), theirs.mean(0), atol=0.01, rtol=0)
    torch.testing.assert_close(mine.std(0), theirs.std(0), atol=0.01, rtol=0)
    torch.testing.assert_close(ours.mode(), torch.tanh(mean))


def quadrature_entropy(mean: torch.Tensor, log_std: torch.Tensor, nodes: int = 80) -> torch.Tensor:
    """H[tanh(N(mean, std))] = H[N] + E_{x~N(0,1)}[sum log(1 - tanh(mean + std x)^2)], by
    Gauss-Hermite quadrature (probabilists' weights), differentiable in mean and log_std."""
    x, w = hermegauss(nodes)
    x = torch.as_tensor(x, dtype=mean.dtype)
    w = torch.as_tensor(w / math.sqrt(2 * math.pi), dtype=mean.dtype)
    u = mean[..., None] + log_std.exp()[..., None] * x  # [..., dim, nodes]
    log_jac = torch.log1p(-torch.tanh(u).pow(2))
    gaussian = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)
    return gaussian + (log_jac * w).sum(-1).sum(-1)


def test_tanh_gaussian_entropy_estimate_is_unbiased_value_and_gradient():
    mean, log_std = tanh_gaussians(batch=4, dim=2)
    mean.requires_grad_(True)
    log_std.requires_grad_(True)
    exact = quadrature_entropy(mean, log_std)
    # the reference's own Monte-Carlo entropy agrees with the quadrature
    _, ref = squashed(mean.detach(), log_std.detach())
    torch.manual_seed(2)
    a = ref.sample((200_000,))
    torch.testing.assert_close(-ref.log_prob(a).mean(0), exact.detach(), atol=0.02, rtol=0)
    # ours: one reparameterised sample per call; the mean over calls -> the exact value and gradient
    torch.manual_seed(3)
    ours = TanhGaussian(mean.expand(20_000, 4, 2), log_std.expand(20_000, 4, 2))
    estimate = ours.entropy().mean(0)  # [4]
    torch.testing.assert_close(estimate.detach(), exact.detach(), atol=0.02, rtol=0)
    g_est = torch.autograd.grad(estimate.sum(), (mean, log_std))
    g_exact = torch.autograd.grad(exact.sum(), (mean, log_std))
    for est, ref_grad in zip(g_est, g_exact):
        torch.testing.assert_close(est, ref_grad, atol=0.03, rtol=0)
    # and it is not the unsquashed Gaussian's entropy (the correction is there)
    assert (DiagGaussian(mean, log_std).entropy() - exact).abs().min() > 0.1


def test_tanh_gaussian_kl_is_the_gaussian_kl_by_invariance_and_matches_monte_carlo():
    mean_p, log_std_p = tanh_gaussians(seed=4, batch=3, dim=2)
    mean_q, log_std_q = tanh_gaussians(seed=5, batch=3, dim=2)
    p, ref_p = squashed(mean_p, log_std_p)
    q, ref_q = squashed(mean_q, log_std_q)
    torch.testing.assert_close(p.kl(q), DiagGaussian(mean_p, log_std_p).kl(DiagGaussian(mean_q, log_std_q)))
    torch.manual_seed(6)
    a = ref_p.sample((200_000,))
    mc = (ref_p.log_prob(a) - ref_q.log_prob(a)).mean(0)
    torch.testing.assert_close(p.kl(q), mc, atol=0.03, rtol=0.03)


def test_tanh_gaussian_saturated_actions_have_finite_log_prob_and_params_roundtrip():
    p = TanhGaussian(torch.zeros(2, 3), torch.zeros(2, 3))
    edge = torch.tensor([[1.0, -1.0, 0.0], [0.9999999, -0.9999999, 0.5]])
    assert torch.isfinite(p.log_prob(edge)).all()
    rebuilt = TanhGaussian.from_params(p.params())
    assert isinstance(rebuilt, TanhGaussian) and torch.all(p.kl(rebuilt) == 0)
