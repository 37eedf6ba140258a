"""Actor-critic networks: initialisation, shapes, the log-std head and clamp, option checks, and
the mirror spec against a numpy forward written here from the spec's layers.

References: the orthogonality identity W W^T = g^2 I, torch's own nn.Linear init under the same
seed, and plain numpy for the spec.
"""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import one_torch_thread

from ppo_research.algo.networks import MLPActorCritic, SharedMLPActorCritic
from ppo_research.errors import ConfigError

OBS = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
BOX = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
DISCRETE = gym.spaces.Discrete(4)
CLASSES = [MLPActorCritic, SharedMLPActorCritic]
HIDDEN = [16, 4]  # 5 -> 16 widens (W^T W = g^2 I), 16 -> 4 narrows (W W^T = g^2 I)


_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)  # helpers


def towers(net):
    """(hidden layers, policy head, value head) as nn.Linear modules, for either class."""
    if isinstance(net, SharedMLPActorCritic):
        return list(net.trunk.layers), net.policy_head, net.value_head
    assert list(net.actor.layers[:-1]) != [] and len(net.actor.layers) == len(net.critic.layers)
    return list(net.actor.layers[:-1]) + list(net.critic.layers[:-1]), net.actor.layers[-1], net.critic.layers[-1]


def assert_orthogonal(weight: torch.Tensor, gain: float):
    w = weight.detach().double()
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w  # the smaller dimension
    torch.testing.assert_close(gram, gain ** 2 * torch.eye(gram.shape[0], dtype=torch.float64), rtol=0, atol=1e-5)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("space", [BOX, DISCRETE], ids=["box", "discrete"])
def test_orthogonal_init_uses_each_layers_gain_and_zero_biases(cls, space):
    torch.manual_seed(0)
    net = cls(OBS, space, hidden_sizes=HIDDEN, hidden_gain=1.3, policy_gain=0.05, value_gain=0.7)
    hidden, policy_head, value_head = towers(net)
    shapes = {tuple(layer.weight.shape) for layer in hidden}
    assert (16, 5) in shapes and (4, 16) in shapes  # both the wide and the narrow case are checked
    for layer in hidden:
        assert_orthogonal(layer.weight, 1.3)
    assert_orthogonal(policy_head.weight, 0.05)
    assert_orthogonal(value_head.weight, 0.7)
    for layer in [*hidden, policy_head, value_head]:
        assert torch.count_nonzero(layer.bias) == 0
    if space is BOX:
        assert torch.equal(net.log_std.detach(), torch.zeros(3))


@pytest.mark.parametrize("cls", CLASSES)
def test_default_gains_are_sqrt2_hidden_and_paper_heads(cls):
    torch.manual_seed(0)
    net = cls(OBS, BOX, hidden_sizes=HIDDEN)
    hidden, policy_head, value_head = towers(net)
    for layer in hidden:
        assert_orthogonal(layer.weight, math.sqrt(2))
    assert_orthogonal(policy_head.weight, 0.01)
    assert_orthogonal(value_head.weight, 1.0)


@pytest.mark.parametrize("cls", CLASSES)
def test_ortho_init_false_keeps_torchs_default_init(cls):
    torch.manual_seed(7)
    net = cls(OBS, BOX, hidden_sizes=HIDDEN, ortho_init=False)
    # torch's nn.Linear init, drawn in the same order from the same seed
    torch.manual_seed(7)
    if cls is MLPActorCritic:
        sizes = [(5, 16), (16, 4), (4, 3), (5, 16), (16, 4), (4, 1)]  # actor, then critic
        layers = list(net.actor.layers) + list(net.critic.layers)
    else:
        sizes = [(5, 16), (16, 4), (4, 3), (4, 1)]  # trunk, policy head, value head
        layers = [*net.trunk.layers, net.policy_head, net.value_head]
    expected = [torch.nn.Linear(i, o) for i, o in sizes]
    assert len(layers) == len(expected)
    for layer, ref in zip(layers, expected):
        assert torch.equal(layer.weight, ref.weight) and torch.equal(layer.bias, ref.bias)
        assert torch.count_nonzero(layer.bias) > 0  # not zeroed


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("kwargs", [{}, {"state_dependent_std": True}], ids=["shared-std", "sde"])
def test_box_shapes(cls, kwargs):
    torch.manual_seed(0)
    net = cls(OBS, BOX, hidden_sizes=HIDDEN, **kwargs)
    obs = torch.randn(7, 5)
    dist, value = net(obs)
    assert value.shape == (7,) and net.value(obs).shape == (7,)
    assert dist.mean.shape == (7, 3)
    action = dist.sample()
    assert action.shape == (7, 3) and dist.mode().shape == (7, 3)
    assert dist.log_prob(action).shape == (7,) and dist.entropy().shape == (7,)
    assert dist.params().shape == (7, 6)
    assert net.distribution_from_params(dist.params()).log_prob(action).shape == (7,)
    # a single observation (no batch dimension) works too
    single, v1 = net(obs[0])
    assert single.mean.shape == (3,) and v1.shape == ()


@pytest.mark.parametrize("cls", CLASSES)
def test_discrete_shapes(cls):
    torch.manual_seed(0)
    net = cls(OBS, DISCRETE, hidden_sizes=HIDDEN)
    obs = torch.randn(7, 5)
    dist, value = net(obs)
    assert value.shape == (7,)
    assert dist.logits.shape == (7, 4) and dist.params().shape == (7, 4)
    action = dist.sample()
    assert action.shape == (7,) and dist.mode().shape == (7,)
    assert int(action.min()) >= 0 and int(action.max()) < 4
    assert dist.log_prob(action).shape == (7,) and dist.entropy().shape == (7,)
    torch.testing.assert_close(dist.logits.exp().sum(-1), torch.ones(7))  # normalised


@pytest.mark.parametrize("cls", CLASSES)
def test_state_dependent_std_head_starts_at_log_std_init(cls):
    torch.manual_seed(0)
    obs = 3.0 * torch.randn(50, 5)
    # policy_gain=0 zeroes the head's weights: the log-std is exactly its bias
    exact = cls(OBS, BOX, hidden_sizes=HIDDEN, state_dependent_std=True, log_std_init=-0.7, policy_gain=0.0)
    torch.testing.assert_close(exact.distribution(obs).log_std, torch.full((50, 3), -0.7))
    assert torch.count_nonzero(exact.distribution(obs).mean) == 0
    # default gain: the bias is log_std_init (mean half stays 0), outputs start within |W h| of it
    net = cls(OBS, BOX, hidden_sizes=HIDDEN, state_dependent_std=True, log_std_init=-0.7)
    head = towers(net)[1]
    assert head.weight.shape == (6, HIDDEN[-1])
    torch.testing.assert_close(head.bias.detach(), torch.tensor([0.0, 0.0, 0.0, -0.7, -0.7, -0.7]))
    log_std = net.distribution(obs).log_std
    assert log_std.shape == (50, 3)
    bound = 0.01 * math.sqrt(HIDDEN[-1])  # rows of norm 0.01, |tanh features| <= 1
    assert torch.all((log_std + 0.7).abs() <= bound + 1e-6)
    # the state-independent variant starts its parameter there
    plain = cls(OBS, BOX, hidden_sizes=HIDDEN, log_std_init=-0.7)
    assert torch.equal(plain.log_std.detach(), torch.full((3,), -0.7))


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("bounds", [{}, {"log_std_min": -3.0, "log_std_max": 0.5}], ids=["default", "custom"])
def test_log_std_clamp_bounds_and_zero_gradient_outside(cls, bounds):
    lo, hi = bounds.get("log_std_min", -20.0), bounds.get("log_std_max", 2.0)
    raw = torch.tensor([lo - 5.0, (lo + hi) / 2, hi + 3.0])
    obs = torch.randn(4, 5)

    torch.manual_seed(0)
    net = cls(OBS, BOX, hidden_sizes=HIDDEN, **bounds)
    with torch.no_grad():
        net.log_std.copy_(raw)
    dist = net.distribution(obs)
    torch.testing.assert_close(dist.log_std, torch.tensor([lo, (lo + hi) / 2, hi]))
    dist.entropy().sum().backward()  # d entropy / d log_std_i = batch size inside the range
    torch.testing.assert_close(net.log_std.grad, torch.tensor([0.0, 4.0, 0.0]))
    assert net.mirror_spec().log_std.tolist() == pytest.approx([lo, (lo + hi) / 2, hi])

    torch.manual_seed(0)
    sde = cls(OBS, BOX, hidden_sizes=HIDDEN, state_dependent_std=True, policy_gain=0.0, **bounds)
    head = towers(sde)[1]
    with torch.no_grad():
        head.bias[3:] = raw
    dist = sde.distribution(obs)
    torch.testing.assert_close(dist.log_std, torch.tensor([lo, (lo + hi) / 2, hi]).expand(4, 3))
    dist.entropy().sum().backward()
    torch.testing.assert_close(head.bias.grad[3:], torch.tensor([0.0, 4.0, 0.0]))
    assert sde.mirror_spec().log_std_bounds == (lo, hi)


@pytest.mark.parametrize("space,kwargs", [(BOX, {}), (BOX, {"state_dependent_std": True}), (DISCRETE, {})],
                         ids=["box", "sde", "discrete"])
def test_shared_forward_equals_distribution_and_value_separately(space, kwargs):
    torch.manual_seed(0)
    net = SharedMLPActorCritic(OBS, space, hidden_sizes=HIDDEN, **kwargs)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    obs = torch.randn(9, 5)
    dist, value = net(obs)
    torch.testing.assert_close(dist.params(), net.distribution(obs).params(), rtol=0, atol=0)
    torch.testing.assert_close(value, net.value(obs), rtol=0, atol=0)
    # and both use the one trunk: its gradient receives both heads' contributions
    (dist.params().sum() + value.sum()).backward()
    shared_grad = net.trunk.layers[0].weight.grad.clone()
    net.zero_grad()
    net.distribution(obs).params().sum().backward()
    net.value(obs).sum().backward()
    torch.testing.assert_close(net.trunk.layers[0].weight.grad, shared_grad)


BAD_OPTIONS = [
    ({"activation": "sigmoid"}, OBS, BOX, "network.activation"),
    ({"hidden_sizes": []}, OBS, BOX, "network.hidden_sizes"),
    ({"hidden_sizes": [64, 0]}, OBS, BOX, "network.hidden_sizes"),
    ({"hidden_sizes": [64, -3]}, OBS, BOX, "network.hidden_sizes"),
    ({"hidden_sizes": [64, True]}, OBS, BOX, "network.hidden_sizes"),
    ({"hidden_sizes": [64.0]}, OBS, BOX, "network.hidden_sizes"),
    ({}, OBS, gym.spaces.MultiDiscrete([3, 2]), "env.id"),
    ({}, OBS, gym.spaces.MultiBinary(3), "env.id"),
    ({}, gym.spaces.Box(-1.0, 1.0, (4, 4), np.float32), BOX, "env.id"),
    ({}, gym.spaces.Discrete(6), BOX, "env.id"),
    ({"state_dependent_std": True}, OBS, DISCRETE, "network.state_dependent_std"),
]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("kwargs,obs_space,action_space,key", BAD_OPTIONS,
                         ids=[f"{b[3]}-{i}" for i, b in enumerate(BAD_OPTIONS)])
def test_bad_options_raise_config_error_naming_the_key(cls, kwargs, obs_space, action_space, key):
    with pytest.raises(ConfigError) as info:
        cls(obs_space, action_space, **kwargs)
    assert info.value.key == key
    message = str(info.value)
    assert message.startswith(f"{key}=") and "\n" not in message


# -- the mirror spec, run by a numpy forward written from the spec's description ---------------

def _erf(x):
    return np.vectorize(math.erf)(x)


MY_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.where(x > 0, x, 0.0),
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1.0),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
}


def numpy_forward(spec, obs: np.ndarray):
    """The spec's maths in float64: trunk layers each followed by the activation; each tower with
    the activation between its layers and none after the last. Returns (head, value)."""
    act = MY_ACTIVATIONS[spec.activation]
    x = obs.astype(np.float64)
    for w, b in spec.trunk:
        x = act(x @ w + b)

    def tower(layers, h):
        for i, (w, b) in enumerate(layers):
            h = h @ w + b
            if i < len(layers) - 1:
                h = act(h)
        return h

    return tower(spec.policy, x), tower(spec.value, x)[:, 0]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("activation", sorted(MY_ACTIVATIONS))
@pytest.mark.parametrize("space,kwargs", [(BOX, {}), (BOX, {"state_dependent_std": True}), (DISCRETE, {})],
                         ids=["box", "sde", "discrete"])
def test_mirror_spec_describes_the_torch_forward(cls, activation, space, kwargs):
    torch.manual_seed(0)
    net = cls(OBS, space, hidden_sizes=[16, 8, 4], activation=activation, **kwargs)
    with torch.no_grad():  # non-zero biases, a log-std outside the clamp: every part of the spec matters
        for p in net.parameters():
            p.add_(0.5 * torch.randn_like(p))
        if net.log_std is not None:
            net.log_std.copy_(torch.tensor([3.0, -0.4, -25.0]))
        if kwargs:
            towers(net)[1].bias[3:] += torch.tensor([4.0, 0.0, -30.0])  # state-dependent log-std outside too
    obs = 2.0 * torch.randn(10, 5)
    with torch.no_grad():
        dist, value = net(obs)

    spec = net.mirror_spec()
    assert spec.activation == activation
    head, np_value = numpy_forward(spec, obs.numpy())
    np.testing.assert_allclose(np_value, value.numpy(), rtol=1e-5, atol=1e-5)
    if space is DISCRETE:
        assert spec.distribution == "categorical" and spec.log_std is None
        log_softmax = head - head.max(-1, keepdims=True)
        log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
        np.testing.assert_allclose(log_softmax, dist.logits.numpy(), rtol=1e-5, atol=1e-5)
        return
    assert spec.distribution == "gaussian"
    if kwargs:
        assert spec.log_std is None and head.shape == (10, 6)
        mean, log_std = head[:, :3], np.clip(head[:, 3:], *spec.log_std_bounds)
    else:
        assert head.shape == (10, 3)
        mean, log_std = head, np.broadcast_to(spec.log_std, (10, 3))
    np.testing.assert_allclose(mean, dist.mean.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_std, dist.log_std.expand(10, 3).numpy(), rtol=1e-5, atol=1e-5)
    assert log_std.max() == 2.0 and log_std.min() == -20.0  # the clamp was exercised

    # a spec is a snapshot of theta (theta_old for the rollout): later updates do not reach it
    before = [w.copy() for w, _ in spec.policy]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    assert all(np.array_equal(w, b) for (w, _), b in zip(spec.policy, before))
