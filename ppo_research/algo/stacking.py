"""A population's networks as one network with stacked parameters.

S member networks of one architecture keep their own parameters, as views of row k of one
member-major buffer [S, P] (so each member still acts, evaluates and checkpoints as a solo
run's network). A copy of the architecture, the *stacked module*, holds the same buffer as
[S, ...] parameters: weights [S, out, in], vectors [S, 1, n] (broadcast over the minibatch), so
one forward on observations [S, B, obs] computes every member with batched matmuls
(``networks.linear``). At PPO's minibatch sizes the cost of a step is per-call overhead, not
arithmetic: S members in one call cost little more than one.

Networks opt in with ``stackable = True`` (the MLP actor-critics); with S = 1 the network itself
is the stacked module, so a solo run's maths is the plain network's.
"""
from __future__ import annotations

import copy
import importlib
import warnings
from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError

# The stacked views of one member-major buffer are strided (row stride P); autograd accumulates
# into them in place all the same, but warns that their layout is not the one it would choose.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")


def stackable(network_target: str) -> bool:
    """Whether the network class at import path ``network_target`` declares ``stackable = True``
    (False for a path that does not import: such a job is best left to fail alone)."""
    module, _, name = str(network_target).rpartition(".")
    try:
        return bool(getattr(getattr(importlib.import_module(module), name), "stackable", False))
    except Exception:  # ImportError, AttributeError, ValueError (empty module name), the module failing
        return False


def stack_members(nets: Sequence[nn.Module]) -> tuple[nn.Module, nn.Parameter]:
    """Seat every member's parameters (and gradients) in one flat buffer; returns the module that
    computes all members at once and the flat parameter ([S * P], its ``.grad`` all gradients)."""
    nets = list(nets)
    size = len(nets)
    shapes = [p.shape for p in nets[0].parameters()]
    for k, net in enumerate(nets[1:], 1):
        if [p.shape for p in net.parameters()] != shapes or type(net) is not type(nets[0]):
            raise ValueError(f"member {k} has another architecture than member 0")
    if size > 1 and not getattr(nets[0], "stackable", False):
        raise ConfigError("network", type(nets[0]).__name__, "a network that declares stackable = True to train as a "
                                                             "population of more than one (its forward must accept "
                                                             "stacked parameters: algo/stacking.py)")
    stacked = nets[0] if size == 1 else copy.deepcopy(nets[0])
    flat = nn.Parameter(torch.stack([torch.cat([p.detach().reshape(-1) for p in net.parameters()]) for net in nets])
                        .reshape(-1))
    flat.grad = torch.zeros_like(flat)
    rows, grad_rows = flat.data.view(size, -1), flat.grad.view(size, -1)
    offset = 0
    for i, shape in enumerate(shapes):
        n = shape.numel()
        for k, net in enumerate(nets):
            p = list(net.parameters())[i]
            p.data = rows[k, offset:offset + n].view(shape)
            p.grad = grad_rows[k, offset:offset + n].view(shape)
        if size > 1:
            wide = (size, 1, *shape) if len(shape) == 1 else (size, *shape)
            p = list(stacked.parameters())[i]
            p.data = rows[:, offset:offset + n].view(wide)
            p.grad = grad_rows[:, offset:offset + n].view(wide)
        offset += n
    return stacked, flat
