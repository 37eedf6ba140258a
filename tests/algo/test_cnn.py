"""The convolutional actor-critic (``network=nature_cnn``): Mnih et al. 2015's layer sizes, its
initialisation, uint8 frames scaled inside, a population's stacked forward, and the spaces it
refuses in one line."""
from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import one_torch_thread

from ppo_research.algo.cnn import NatureCNN
from ppo_research.algo.distributions import Categorical
from ppo_research.algo.stacking import stack_members
from ppo_research.errors import ConfigError

FRAMES = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
ACTIONS = gym.spaces.Discrete(6)

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)  # helpers


def test_layers_are_the_nature_networks():
    net = NatureCNN(FRAMES, ACTIONS)
    convs = [m for m in net.trunk if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (4, 32, (8, 8), (4, 4)), (32, 64, (4, 4), (2, 2)), (64, 64, (3, 3), (1, 1))]
    dense = [m for m in net.trunk if isinstance(m, torch.nn.Linear)]
    assert [(d.in_features, d.out_features) for d in dense] == [(64 * 7 * 7, 512)]  # 84 -> 20 -> 9 -> 7
    assert (net.policy_head.in_features, net.policy_head.out_features) == (512, 6)
    assert (net.value_head.in_features, net.value_head.out_features) == (512, 1)
    # 8,224 + 32,832 + 36,928 + 1,606,144 + 3,078 + 513
    assert sum(p.numel() for p in net.parameters()) == 1_687_719


@pytest.mark.parametrize("layer, gain", [("conv", 2 ** 0.5), ("policy", 0.01), ("value", 1.0)])
def test_orthogonal_initialisation_with_the_usual_gains(layer, gain):
    torch.manual_seed(0)
    net = NatureCNN(FRAMES, ACTIONS)
    weight = {"conv": net.trunk[0].weight, "policy": net.policy_head.weight, "value": net.value_head.weight}[layer]
    w = weight.detach().reshape(weight.shape[0], -1).double()
    rows = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w  # W W^T = g^2 I on the short side
    torch.testing.assert_close(rows, gain ** 2 * torch.eye(rows.shape[0], dtype=torch.float64), atol=1e-5, rtol=0)
    assert all((m.bias == 0).all() for m in (net.trunk[0], net.policy_head, net.value_head))


def test_uint8_frames_are_scaled_to_unit_range_inside():
    net = NatureCNN(FRAMES, ACTIONS)
    frames = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    dist, value = net(frames)
    assert isinstance(dist, Categorical) and dist.logits.shape == (3, 6) and value.shape == (3,)
    dist_f, value_f = net(frames.float())  # the exported policy takes floats 0..255: the same numbers
    torch.testing.assert_close(dist_f.logits, dist.logits)
    torch.testing.assert_close(value_f, value)
    torch.testing.assert_close(net.value(frames), value)


def test_frames_laid_out_channels_last_give_the_plain_layouts_numbers_to_round_off():
    """``channels_last`` (the default: NHWC convolutions, faster on the CPU) against the plain
    NCHW layout: the same weights, the same outputs and gradients to float32 round-off."""
    frames = torch.randint(0, 256, (16, 4, 84, 84), dtype=torch.uint8)
    results = {}
    for layout in (True, False):
        torch.manual_seed(0)
        net = NatureCNN(FRAMES, ACTIONS, channels_last=layout)
        dist, value = net(frames)
        (dist.logits.sum() + value.sum()).backward()
        results[layout] = (dist.logits.detach(), value.detach(), [p.grad for p in net.parameters()])
    assert NatureCNN(FRAMES, ACTIONS).channels_last
    fast, plain = results[True], results[False]
    torch.testing.assert_close(fast[0], plain[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast[1], plain[1], rtol=1e-5, atol=1e-6)
    for g_fast, g_plain in zip(fast[2], plain[2]):
        torch.testing.assert_close(g_fast, g_plain, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("channels_last", [True, False])
def test_a_populations_stacked_forward_is_each_members_own_bit_for_bit(channels_last):
    """Three members stacked (algo/stacking.py): logits, values and every parameter's gradient
    are what each member's own network gives on its own rows, bit for bit - the stacked forward
    runs each member's layers on its rows, so a member's maths is its solo run's."""
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(NatureCNN(FRAMES, ACTIONS, channels_last=channels_last))
    alone = [copy.deepcopy(net) for net in members]  # the same weights, unstacked
    frames = torch.randint(0, 256, (3, 8, 4, 84, 84), dtype=torch.uint8)
    actions = torch.randint(0, ACTIONS.n, (3, 8))
    stacked, flat = stack_members(members)
    dist, value = stacked(frames)
    assert dist.logits.shape == (3, 8, ACTIONS.n) and value.shape == (3, 8)
    (dist.log_prob(actions).sum() + value.pow(2).sum()).backward()
    for k, net in enumerate(alone):
        own_dist, own_value = net(frames[k])
        (own_dist.log_prob(actions[k]).sum() + own_value.pow(2).sum()).backward()
        assert torch.equal(dist.logits[k], own_dist.logits) and torch.equal(value[k], own_value)
        assert torch.equal(stacked.value(frames)[k], net.value(frames[k]))
        assert torch.equal(stacked.distribution(frames).logits[k], net.distribution(frames[k]).logits)
        own_grad = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
        assert torch.equal(flat.grad.view(3, -1)[k], own_grad), f"member {k}"
    assert not torch.equal(dist.logits[0], dist.logits[1])  # three different networks


def test_bfloat16_precision_stays_close_to_float32_and_keeps_float32_weights_and_outputs():
    """``precision=bfloat16`` (a speed switch) against the plain float32 path, the same weights:
    logits and values to bfloat16's ~3 significant digits, gradients in the same direction; the
    outputs, the weights and their gradients stay float32 (Adam steps float32 master weights)."""
    frames = torch.randint(0, 256, (64, 4, 84, 84), dtype=torch.uint8)
    actions = torch.randint(0, ACTIONS.n, (64,))
    results = {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        net = NatureCNN(FRAMES, ACTIONS, precision=precision)
        dist, value = net(frames)
        assert dist.logits.dtype == value.dtype == torch.float32
        (dist.log_prob(actions).mean() + value.pow(2).mean()).backward()
        assert all(p.dtype == p.grad.dtype == torch.float32 for p in net.parameters())
        results[precision] = (dist.logits.detach(), value.detach(), torch.cat([p.grad.reshape(-1) for p in net.parameters()]))
    (logits, value, grad), (logits16, value16, grad16) = results["float32"], results["bfloat16"]
    assert not torch.equal(logits, logits16)  # it is another arithmetic
    torch.testing.assert_close(logits16, logits, rtol=0.05, atol=0.02)
    torch.testing.assert_close(value16, value, rtol=0.05, atol=0.02)
    assert torch.nn.functional.cosine_similarity(grad16, grad, dim=0) > 0.99
    with pytest.raises(ConfigError, match="network.precision='float16' is invalid: expected one of float32, bfloat16"):
        NatureCNN(FRAMES, ACTIONS, precision="float16")


@pytest.mark.parametrize("obs, actions, says", [
    (gym.spaces.Box(-1, 1, (8,), np.float32), ACTIONS, "image observations"),
    (FRAMES, gym.spaces.Box(-1, 1, (2,), np.float32), "Discrete action space"),
    (gym.spaces.Box(0, 255, (4, 30, 30), np.uint8), ACTIONS, "at least 36x36"),
])
def test_spaces_it_cannot_take_are_one_line(obs, actions, says):
    with pytest.raises(ConfigError, match=says) as err:
        NatureCNN(obs, actions)
    assert "\n" not in str(err.value)
