"""The update's gradient written out by hand, for the configuration most runs use.

At PPO's minibatch sizes a step's cost is per-operation overhead, and autograd's share of it is
large: recording about 55 graph nodes in the forward and walking them in the backward, about
10 us each on a small CPU. For one network that is the paper's - separate MLP actor and critic
with tanh or ReLU, a Gaussian with a state-independent log-std (std = exp(log_std)) - trained
with the clipped, CPI, PG or KL-penalty policy term and the squared-error value loss, ``HandGradient``
computes the same gradient with plain tensor operations and writes it straight into the
parameters' gradient buffer; the forward it needs keeps its activations, outside autograd.
A population's stacked module gets the same, with batched matmuls and each member's mean over
its own valid samples. Everything else - other networks, losses, value losses - goes through
autograd.
tests/algo/test_hand_gradient.py checks every gradient against autograd's on the same minibatch.

With L = policy term + c_v * value loss - c_e * entropy, per sample i of a minibatch of B:
  dL/dlog pi_i = -A_i r_i / B, times [r_i A_i <= clip(r_i) A_i] for the clipped term (CPI: no
                 indicator; PG: -A_i / B, the log-prob itself is the term)
  dlog pi/dmu  = z / sigma,  dlog pi/dlog sigma = z^2 - 1,  z = (a - mu) / sigma
  dL/dV_i      = c_v (V_i - R_i) / B,  dL/dlog sigma += -c_e (the entropy's gradient)
  a KL penalty adds beta / B times the gradient of each sample's KL: through log pi for the sample
  estimators (k1, k3), through mu and log sigma for the analytic KL of two diagonal Gaussians
then back through each tower's layers (tanh' = 1 - h^2, relu' = [h > 0]).
"""
from __future__ import annotations

from typing import Optional

import torch

from .distributions import DiagGaussian
from .losses import ClipLoss, CPILoss, KLPenaltyLoss, PGLoss, PolicyBatch, PolicyLoss
from .networks import MLPActorCritic, linear

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


class HandGradient:
    """``forward(obs)`` -> (distribution, value), remembering the activations; ``backward``
    then writes dL/dtheta for that minibatch into every parameter's ``.grad``, overwriting it (no
    zeroing needed before)."""

    def __init__(self, net, vf_coef: float, ent_coef: float | torch.Tensor):
        """``net``: one network, or a population's stacked module (algo/stacking.py); ``ent_coef``
        a float or the members' [S, 1]. Made for one update: it holds the parameters' tensors as
        they are seated now."""
        self.net, self.vf_coef = net, float(vf_coef)
        self.ent_coef = ent_coef if isinstance(ent_coef, torch.Tensor) else float(ent_coef)
        self._act, self._tanh = ACTIVATIONS[net.activation], net.activation == "tanh"
        # per tower, per layer: (weight, bias, their gradients)
        self._towers = [[(layer.weight, layer.bias, layer.weight.grad, layer.bias.grad) for layer in mlp.layers]
                        for mlp in (net.actor, net.critic)]
        self._log_std, self._log_std_bounds = net.log_std, (net.log_std_min, net.log_std_max)
        self._activations: list[list[torch.Tensor]] = []

    @staticmethod
    def supports(net, loss: PolicyLoss, settings) -> bool:
        return (type(net) is MLPActorCritic and net.activation in ACTIVATIONS
                and net.distribution_class is DiagGaussian and not net.state_dependent_std and net.std_param == "exp"
                and net.std_min == 0.0 and type(loss) in (ClipLoss, CPILoss, PGLoss, KLPenaltyLoss)
                and settings.value_loss == "mse" and settings.clip_value_loss is None)

    @torch.no_grad()
    def forward(self, obs: torch.Tensor):
        self._activations = [self._tower(layers, obs) for layers in self._towers]
        head, value = self._activations[0][-1], self._activations[1][-1].squeeze(-1)
        return self.net._make_distribution(head), value

    def _tower(self, layers, x: torch.Tensor) -> list[torch.Tensor]:
        """The inputs of every layer, then the output: [x, h1, ..., out]."""
        outs = [x]
        last = len(layers) - 1
        for i, (weight, bias, _, _) in enumerate(layers):
            x = linear(x, weight, bias)
            if i < last:
                x = self._act(x)
            outs.append(x)
        return outs

    @torch.no_grad()
    def backward(self, pb: PolicyBatch, loss: PolicyLoss, value: torch.Tensor, actions: torch.Tensor,
                 returns: torch.Tensor, entropy_bonus: bool) -> None:
        """dL/dtheta of the minibatch last passed to ``forward`` (``pb`` and ``value`` from it)."""
        # one network: [B] samples, means over B; a population: [S, B], each member's mean over its
        # valid samples (the padding's gradient is masked out), its own epsilon and entropy coefficient
        stacked, mask = pb.log_prob.dim() == 2, pb.mask
        count = mask.sum(-1, keepdim=True) if mask is not None else pb.log_prob.shape[-1]
        d_log_prob = self._surrogate_gradient(pb, loss, -1.0 / count)
        penalty = isinstance(loss, KLPenaltyLoss)
        if penalty:  # + beta * mean(KL): its weight per sample
            kl_weight = loss.beta / count if mask is None else (loss.beta / count) * mask
            if loss.estimator != "analytic":  # a function of log r alone
                d_log_prob = d_log_prob + kl_weight * _sample_kl_slope(loss, pb)
        d_value = (self.vf_coef / count) * (value - returns)
        if mask is not None:
            d_log_prob, d_value = d_log_prob * mask, d_value * mask
        dist = pb.dist
        inv_std = torch.exp(-dist.log_std)
        z = (actions - dist.mean) * inv_std
        d_mean = d_log_prob[..., None] * z * inv_std
        if stacked:  # [S, 1, A], as the stacked log-std parameter
            d_log_std = torch.bmm(d_log_prob[:, None, :], z * z - 1.0)
        else:
            d_log_std = d_log_prob @ (z * z - 1.0)
        if penalty and loss.estimator == "analytic":
            weight = kl_weight[..., None] if isinstance(kl_weight, torch.Tensor) else kl_weight
            slope_mean, slope_log_std = _analytic_kl_slopes(loss.direction, dist, pb.old_dist, inv_std)
            d_mean = d_mean + weight * slope_mean
            d_log_std = d_log_std + (weight * slope_log_std).sum(-2, keepdim=stacked)
        if entropy_bonus:
            d_log_std -= self.ent_coef if isinstance(self.ent_coef, float) else self.ent_coef.view(-1, 1, 1)
        raw, (low, high) = self._log_std, self._log_std_bounds  # action_log_std's clamp: no gradient outside
        torch.mul(d_log_std, (raw >= low) & (raw <= high), out=raw.grad)
        self._tower_backward(self._towers[0], self._activations[0], d_mean)
        self._tower_backward(self._towers[1], self._activations[1], d_value[..., None])

    @staticmethod
    def _surrogate_gradient(pb: PolicyBatch, loss: PolicyLoss, scale) -> torch.Tensor:
        """dL/dlog pi of the policy term's surrogate part (``scale``: -1 / samples)."""
        if isinstance(loss, PGLoss):
            return scale * pb.advantages
        d_ratio = scale * pb.advantages
        if loss.epsilon is not None:  # the clipped surrogate (ClipLoss, or a KL penalty with epsilon)
            ratio, adv = pb.ratio, pb.advantages
            clipped = ratio.clamp(1.0 - loss.epsilon, 1.0 + loss.epsilon) * adv
            d_ratio = torch.where(ratio * adv <= clipped, d_ratio, 0.0)
        return d_ratio * pb.ratio

    def _tower_backward(self, layers, inputs: list[torch.Tensor], grad: torch.Tensor) -> None:
        for i in range(len(layers) - 1, -1, -1):
            weight, _, weight_grad, bias_grad = layers[i]
            x = inputs[i]
            if weight.dim() == 3:  # a population's stacked layer: weight [S, out, in], bias [S, 1, out]
                torch.bmm(grad.transpose(1, 2), x, out=weight_grad)
                torch.sum(grad, 1, keepdim=True, out=bias_grad)
            else:
                torch.mm(grad.t(), x, out=weight_grad)
                torch.sum(grad, 0, out=bias_grad)
            if i > 0:
                grad = torch.matmul(grad, weight)
                if self._tanh:  # grad * (1 - x^2), x = tanh(.)
                    grad = torch.addcmul(grad, grad * x, x, value=-1.0)
                else:
                    grad = grad * (x > 0)


def _sample_kl_slope(loss: KLPenaltyLoss, pb: PolicyBatch) -> torch.Tensor:
    """d(KL estimate)/dlog pi for the sample estimators (r = pi / pi_old, with a ~ pi_old)."""
    r, log_r = pb.ratio, pb.log_ratio
    if loss.direction == "forward":
        return torch.full_like(r, -1.0) if loss.estimator == "k1" else r - 1.0  # -log r | (r - 1) - log r
    return r * log_r + r if loss.estimator == "k1" else r * log_r  # r log r | r log r - (r - 1)


def _analytic_kl_slopes(direction: str, new: DiagGaussian, old: DiagGaussian, inv_std: torch.Tensor):
    """d KL / d mu and d KL / d log sigma of pi_theta (per sample and dimension), for
    KL(old || new) (forward) or KL(new || old) (reverse) of diagonal Gaussians."""
    diff = new.mean - old.mean
    if direction == "forward":
        inv_var = inv_std * inv_std
        return diff * inv_var, 1.0 - (torch.exp(2.0 * old.log_std) + diff * diff) * inv_var
    inv_old_var = torch.exp(-2.0 * old.log_std)
    return diff * inv_old_var, torch.exp(2.0 * new.log_std) * inv_old_var - 1.0


def hand_gradient_for(net, loss: PolicyLoss, settings, ent_coef) -> Optional[HandGradient]:
    """A ``HandGradient`` when this update's configuration is one it computes, else None."""
    if not HandGradient.supports(net, loss, settings):
        return None
    return HandGradient(net, settings.vf_coef, ent_coef)
