"""Rollout inference: act with pi_old on a few observations at a time, as cheaply as possible.

A batch-1 torch forward of the actor and critic costs ~55 us of dispatch overhead; the same
maths in numpy costs a few us. The contract: a network that wants the fast path declares its
maths in ``mirror_spec()`` (its linear layers, their activation, its distribution); everything
else - and any subclass that changes ``distribution()``, ``value()`` or ``forward()`` without
declaring a spec of its own - runs through ``TorchPolicy``, the network itself. So a user's new
network is never mirrored with somebody else's maths.

Both paths sample with torch's global generator, so a seed fixes a run (for Gaussians the
numpy path draws the very numbers the torch path would; Categorical sampling uses inverse-CDF
on ``torch.rand`` instead of ``torch.multinomial``).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from .distributions import TanhGaussian
from .mirror_spec import Linear, MirrorSpec

if TYPE_CHECKING:
    from .networks import ActorCritic

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

NUMPY_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
}


#: What a mirror spec stands for: a subclass that redefines any of these without redefining
#: ``mirror_spec`` too is run by torch.
MIRRORED_MATHS = ("forward", "distribution", "value", "distribution_from_params", "_make_distribution",
                  "action_log_std")


def _owner(cls: type, name: str) -> Optional[type]:
    return next((k for k in cls.__mro__ if name in vars(k)), None)


def declared_spec(policy: "ActorCritic") -> Optional[MirrorSpec]:
    """The policy's mirror spec, if it declares one that covers all of its maths."""
    cls = type(policy)
    declarer = _owner(cls, "mirror_spec")
    if declarer is None:
        return None
    for name in MIRRORED_MATHS:
        owner = _owner(cls, name)
        if owner is not None and not issubclass(declarer, owner):
            return None  # redefined below the class that declared the spec
    spec = policy.mirror_spec()
    if spec is None or spec.activation not in NUMPY_ACTIVATIONS or len(spec.policy) != len(spec.value):
        return None
    if spec.std_param not in ("exp", "softplus") or spec.squash not in (None, "tanh"):
        return None  # maths this mirror does not know
    return spec


class TorchPolicy:
    """act(obs) -> (action, log_prob, value, dist_params) with the torch network itself."""

    def __init__(self, policy: "ActorCritic"):
        self.policy = policy

    def sync(self) -> None:
        pass

    def begin_rollout(self, steps: int, batch_shape: tuple) -> None:
        pass  # torch draws at each step

    def _tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(obs).to(self.policy.device)

    @torch.inference_mode()
    def act(self, obs: np.ndarray):
        dist, value = self.policy(self._tensor(obs))
        action = dist.sample()
        return tuple(t.cpu().numpy() for t in (action, dist.log_prob(action), value, dist.params()))

    @torch.inference_mode()
    def value(self, obs: np.ndarray) -> np.ndarray:
        return self.policy.value(self._tensor(obs)).cpu().numpy()

    @torch.inference_mode()
    def mode(self, obs: np.ndarray) -> np.ndarray:
        return self.policy.distribution(self._tensor(obs)).mode().cpu().numpy()


def _block_diag(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0] + b.shape[0], a.shape[1] + b.shape[1]), a.dtype)
    out[:a.shape[0], :a.shape[1]], out[a.shape[0]:, a.shape[1]:] = a, b
    return out


def fuse(spec: MirrorSpec) -> list[Linear]:
    """One chain of layers whose last outputs [policy head | value]: the towers side by side
    (first layer concatenated, deeper ones block-diagonal), which halves the numpy calls per
    step at no cost in exactness."""
    towers = [(np.concatenate([wp, wv], 1) if i == 0 else _block_diag(wp, wv), np.concatenate([bp, bv]))
              for i, ((wp, bp), (wv, bv)) in enumerate(zip(spec.policy, spec.value))]
    return list(spec.trunk) + towers


class NumpyPolicy:
    """The numpy mirror of a network that declares a ``MirrorSpec``. Its maths works on any
    leading dimensions, so ``StackedNumpyPolicy`` runs many members' mirrors as one."""

    def __init__(self, policy: "ActorCritic"):
        self.policy = policy
        self.sync()

    def sync(self) -> None:
        """Re-read the weights: theta_old <- theta for the next rollout."""
        spec = declared_spec(self.policy)
        if spec is None:
            raise TypeError(f"{type(self.policy).__name__} declares no numpy mirror")
        self._use(spec, fuse(spec), spec.log_std)

    def _use(self, spec: MirrorSpec, layers: list[Linear], log_std: Optional[np.ndarray]) -> None:
        self.spec, self.layers, self.log_std = spec, layers, log_std
        self._draws: dict[tuple, tuple] = {}
        self._act = NUMPY_ACTIVATIONS[spec.activation]
        self.gaussian = spec.distribution == "gaussian"
        self.state_dependent_std = self.gaussian and log_std is None
        self.head_size = layers[-1][0].shape[-1] - 1
        self.action_dims = self.head_size // 2 if self.state_dependent_std else self.head_size
        self._ahead = None  # (kind, shape, draws [T, *shape], next t) of a rollout drawn ahead
        if self.gaussian and log_std is not None:  # fixed until the next sync: computed once, not per step
            self._std = np.exp(log_std)
            self._log_prob_offset = log_std.sum(-1) + log_std.shape[-1] * _HALF_LOG_2PI

    # The random draws: torch's global generator, as the torch path draws. Filled in place into a
    # buffer kept per shape (the numbers torch.randn/torch.rand of that shape would return,
    # without a new tensor per step); the array is valid until the next draw. A rollout's draws
    # may come from ``begin_rollout`` instead: the same numbers, drawn before its first step.
    def begin_rollout(self, steps: int, batch_shape: tuple) -> None:
        """The next ``steps`` acts are one rollout on observations with leading dims ``batch_shape``
        ((N,), or (S, N) for stacked members): draw their noise now, one call per generator
        instead of one per step (about 4 us each between env steps), when that gives the very
        numbers the steps would draw (``draw_ahead``). ``act`` then takes them in order."""
        shape = (*batch_shape, self.action_dims) if self.gaussian else tuple(batch_shape)
        kind = "normal" if self.gaussian else "uniform"
        drawn = draw_ahead(kind, steps, shape, self._generators())
        self._ahead = None if drawn is None else (kind, shape, drawn, 0)

    def _generators(self) -> list[Optional[torch.Generator]]:
        """Where each row of a draw comes from: one draw, from torch's global generator."""
        return [None]

    def _next_ahead(self, kind: str, shape: tuple) -> Optional[np.ndarray]:
        if self._ahead is None:
            return None
        ahead_kind, ahead_shape, drawn, t = self._ahead
        if (ahead_kind, ahead_shape) != (kind, shape):
            raise RuntimeError(f"a {kind} draw of {shape} inside a rollout drawn ahead as {ahead_kind} {ahead_shape}")
        self._ahead = None if t + 1 == len(drawn) else (kind, shape, drawn, t + 1)
        return drawn[t]

    def _buffer(self, kind: str, shape: tuple) -> tuple[torch.Tensor, np.ndarray, list[torch.Tensor]]:
        """(tensor, its numpy view, its rows) for draws of ``shape``, made on first use."""
        key = (kind, shape)
        if key not in self._draws:
            tensor = torch.empty(shape)
            self._draws[key] = (tensor, tensor.numpy(), list(tensor.unbind()) if tensor.dim() else [])
        return self._draws[key]

    def _normal(self, shape: tuple) -> np.ndarray:
        return self._draw("normal", shape)

    def _uniform(self, shape: tuple) -> np.ndarray:
        return self._draw("uniform", shape)

    def _draw(self, kind: str, shape: tuple) -> np.ndarray:
        ahead = self._next_ahead(kind, shape)
        return ahead if ahead is not None else self._draw_now(kind, shape)

    def _draw_now(self, kind: str, shape: tuple) -> np.ndarray:
        tensor, array, _ = self._buffer(kind, shape)
        getattr(tensor, f"{kind}_")()
        return array

    def _heads(self, obs: np.ndarray):
        x = obs
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i < last:
                x = self._act(x)
        return x[..., :self.head_size], x[..., self.head_size]

    def _mean_log_std(self, head: np.ndarray):
        if self.state_dependent_std:
            mean, raw = np.split(head, 2, axis=-1)
            spec = self.spec
            if spec.std_param == "softplus":
                log_std = np.log(np.logaddexp(np.float32(0.0), raw) + np.float32(spec.std_min))
            elif spec.std_min != 0.0:
                log_std = np.logaddexp(raw, np.float32(math.log(spec.std_min)))
            else:
                log_std = raw
            return mean, np.clip(log_std, *spec.log_std_bounds)
        return head, self.log_std

    def act(self, obs: np.ndarray):
        head, value = self._heads(obs)
        if self.gaussian:
            mean, log_std = self._mean_log_std(head)
            noise = self._normal(mean.shape)
            shared = not self.state_dependent_std
            action = mean + (self._std if shared else np.exp(log_std)) * noise
            if self.spec.squash == "tanh":
                action, log_prob = _tanh_gaussian(action, mean, log_std)
            else:
                # (a - mean) / std is the noise itself: log N(a) = -noise^2/2 - log std - log(2 pi)/2
                offset = self._log_prob_offset if shared else log_std.sum(-1) + mean.shape[-1] * _HALF_LOG_2PI
                log_prob = -0.5 * np.add.reduce(noise * noise, -1) - offset
            params = np.empty((*mean.shape[:-1], 2 * mean.shape[-1]), np.float32)
            params[..., :mean.shape[-1]], params[..., mean.shape[-1]:] = mean, log_std
        else:
            logits = head - head.max(-1, keepdims=True)
            logits = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            u = self._uniform(logits.shape[:-1])[..., None]
            action = np.minimum((np.cumsum(np.exp(logits), -1) < u).sum(-1), logits.shape[-1] - 1)
            log_prob = np.take_along_axis(logits, action[..., None], -1)[..., 0]
            params = logits
        f32 = np.float32
        return action, log_prob.astype(f32, copy=False), value.astype(f32, copy=False), params.astype(f32, copy=False)

    def value(self, obs: np.ndarray) -> np.ndarray:
        return self._heads(obs)[1].astype(np.float32, copy=False)

    def mode(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic action: the Gaussian mean, or the most likely discrete action."""
        head = self._heads(obs)[0]
        if not self.gaussian:
            return head.argmax(-1)
        mean = self._mean_log_std(head)[0]
        return np.tanh(mean) if self.spec.squash == "tanh" else mean


class StackedNumpyPolicy(NumpyPolicy):
    """S members' numpy mirrors run as one, on observations [S, N, obs]: their fused layers
    stacked [S, in, out] (numpy's stacked matmul gives each member's product bit for bit),
    member k's random draws from its own generator ``generators[k]``. One call per rollout
    step instead of S: the lock-step collection of a population (run/loop/collect.py)."""

    def __init__(self, members: list[NumpyPolicy], generators: list[torch.Generator]):
        self.members, self.generators = members, generators
        self.sync()

    def sync(self) -> None:
        for m in self.members:
            m.sync()
        first = self.members[0]
        layers = [(np.stack([m.layers[i][0] for m in self.members]),
                   np.stack([m.layers[i][1] for m in self.members])[:, None])
                  for i in range(len(first.layers))]
        log_std = None if first.log_std is None else np.stack([m.log_std for m in self.members])[:, None]
        self._use(first.spec, layers, log_std)

    def _generators(self) -> list[Optional[torch.Generator]]:
        return self.generators

    def _draw_now(self, kind: str, shape: tuple) -> np.ndarray:
        _, array, rows = self._buffer(kind, shape)
        for row, g in zip(rows, self.generators):  # row k: what torch.randn(shape[1:], generator=g) returns
            getattr(row, f"{kind}_")(generator=g)
        return array


def draw_ahead(kind: str, steps: int, shape: tuple, generators: list[Optional[torch.Generator]]) -> Optional[np.ndarray]:
    """[steps, *shape]: what ``steps`` successive draws of ``shape`` would give (``kind``
    "normal" or "uniform", float32), row k of each from ``generators[k]`` (None: torch's global
    generator; one generator: the whole draw), drawn with one call per generator. None where it
    would not be those numbers.

    Torch draws a float32 tensor number by number from one stream - so that the draws of many
    steps, laid end to end, are one long draw - except a contiguous normal draw of 16 numbers or
    more, which it fills in vectorised blocks: such steps are not drawn ahead. The long draw goes
    into a view with gaps, never contiguous, so that torch draws it number by number too."""
    rows = len(generators)
    per_row = math.prod(shape[1:] if rows > 1 else shape)
    if kind == "normal" and per_row >= 16:
        return None
    buffer = torch.empty(steps, rows, 2, per_row)
    for k, generator in enumerate(generators):
        getattr(buffer[:, k, 0], f"{kind}_")(generator=generator)
    return np.ascontiguousarray(buffer[:, :, 0].numpy()).reshape(steps, *shape)


def _tanh_gaussian(u: np.ndarray, mean: np.ndarray, log_std: np.ndarray):
    """(a, log pi(a)) for a = tanh(u): TanhGaussian's maths in float32, the log-prob computed
    from the clamped action as torch computes it at update time (so the ratio starts at 1)."""
    f32 = np.float32
    action = np.tanh(u).astype(f32, copy=False)
    bound = f32(1.0 - TanhGaussian.ACTION_EPS)
    x = np.arctanh(np.clip(action, -bound, bound))
    z = (x - mean) * np.exp(-log_std)
    gauss = -0.5 * (z * z).sum(-1) - (log_std.sum(-1) + mean.shape[-1] * _HALF_LOG_2PI)
    log1m_tanh_sq = 2.0 * (f32(math.log(2.0)) - x - np.logaddexp(f32(0.0), f32(-2.0) * x))
    return action, gauss - log1m_tanh_sq.sum(-1)


def rollout_policy(policy: "ActorCritic", fast: bool = True):
    """The fastest exact rollout path ``policy`` allows: its numpy mirror if it declares one
    (and ``fast``, ``algo.fast_paths``), else the network itself."""
    return NumpyPolicy(policy) if fast and declared_spec(policy) is not None else TorchPolicy(policy)
