"""A second device simulated on the CPU: checks, without a GPU, that a run keeps its tensors where
``device=cuda`` needs them. What CUDA refuses, this refuses too.

While ``simulated_device()`` is active every tensor is a host tensor or a device tensor, told apart
by its storage. ``t.to(<a device>)`` (and ``module.to``) makes a device copy, ``t.cpu()`` a host
copy, a factory function given ``device=`` makes a device tensor, and any other op's result is on
the device when one of its inputs is. Then, as on CUDA:

- an op that mixes a device tensor with a host tensor of one element or more raises (0-dim host
  tensors mix freely; a host index may index a device tensor; ``copy_`` copies across);
- ``.numpy()`` of a device tensor raises (it needs ``.cpu()`` first);
- a gradient is on its tensor's device.

The run under test is configured with ``device=cpu``, so every ``.to(device)`` it makes is a move
to the simulated device, and the numbers stay the CPU's.
"""
from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode

INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.copy_}
FACTORIES_WITH_DEVICE = ("device",)


class DeviceMixed(RuntimeError):
    pass


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _tensors(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors(x)


class SimulatedDevice(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.on_device: set[int] = set()  # storage addresses of device tensors
        self.keep: list[torch.Tensor] = []  # ... kept alive, so no host tensor reuses an address

    def is_device(self, t: torch.Tensor) -> bool:
        return t.numel() > 0 and t.untyped_storage().data_ptr() in self.on_device

    def tag(self, result):
        for t in _tensors(result):
            if t.numel() > 0:
                self.on_device.add(t.untyped_storage().data_ptr())
                self.keep.append(t)
        return result

    def wants_device(self, args, kwargs) -> bool:
        """``t.to(...)`` names a device (or a device tensor, whose device it takes)."""
        return kwargs.get("device") is not None or any(_is_device(a) for a in args) or \
            any(isinstance(a, torch.Tensor) and self.is_device(a) for a in args)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if func is torch.Tensor.to and self.wants_device(args[1:], kwargs):
            moved = func(*args, **kwargs)  # on the CPU: the same tensor, or a new dtype's
            if moved.untyped_storage().data_ptr() == args[0].untyped_storage().data_ptr() and not self.is_device(moved):
                moved = moved.clone()  # a move copies
            return self.tag(moved)
        if func is torch.Tensor.cpu:
            return args[0].clone() if self.is_device(args[0]) else args[0]
        if func is torch.Tensor.numpy and self.is_device(args[0]):
            raise DeviceMixed("numpy() of a device tensor (call .cpu() first)")
        inputs = list(_tensors(args)) + list(_tensors(kwargs))
        device = [t for t in inputs if self.is_device(t)]
        if device and func not in INDEXING and not _metadata(func, name):
            host = [t for t in inputs if not self.is_device(t) and t.dim() > 0 and t.numel() > 0]
            if host:
                raise DeviceMixed(f"{name}: device tensor(s) {[tuple(t.shape) for t in device][:3]} with host "
                                  f"tensor(s) {[tuple(t.shape) for t in host][:3]}")
        if func is torch.Tensor.__setitem__ and not self.is_device(args[0]):
            value = args[2] if len(args) > 2 else None
            if isinstance(value, torch.Tensor) and self.is_device(value) and value.dim() > 0:
                raise DeviceMixed("__setitem__: a device tensor written into a host tensor")
        out = func(*args, **kwargs)
        wants = kwargs.get("device") is not None
        if device or wants:
            if func is torch.Tensor.__setitem__ or func is torch.Tensor.copy_:
                return out  # in place: the target keeps its device
            self.tag(out)
        elif name == "__get__" and isinstance(out, torch.Tensor) and args and isinstance(args[0], torch.Tensor) \
                and self.is_device(args[0]):  # t.grad, t.data: on t's device
            self.tag(out)
        return out


def _metadata(func, name: str) -> bool:
    """Calls that compare or swap tensors' metadata, not their data (``module.to`` makes them)."""
    if name == "_has_compatible_shallow_copy_type":
        return True
    return name == "__set__" and getattr(getattr(func, "__self__", None), "__name__", "") == "data"


def _is_device(a) -> bool:
    return isinstance(a, torch.device) or (isinstance(a, str) and a.split(":")[0] in ("cpu", "cuda"))




@contextlib.contextmanager
def simulated_device():
    mode = SimulatedDevice()
    with mode:
        yield mode
