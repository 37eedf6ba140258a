"""Checkpoints: atomic writes, the last K kept, safe loading, RNG capture, resume helpers.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so it loads with
``torch.load(weights_only=True)``: a checkpoint can never run code when it is opened. Numpy
arrays are stored as tensors and turned back on load.

Checkpoints are taken only at iteration boundaries (after the update, the log row and any
evaluation), where the run's future depends on nothing but what ``Trainer.state_dict`` holds.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError

FORMAT = "ppo_research.checkpoint/2"  # /2 added RNG, env and run-id state for exact resume
_NAME = re.compile(r"^ckpt_(\d{8})\.pt$")
_TMP = re.compile(r"^\.ckpt_\d{8}\.pt\.tmp$")




def _to_storable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(obj)).clone()}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _to_storable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_storable(v) for v in obj]
    return obj


def _from_storable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__ndarray__"}:
            return obj["__ndarray__"].numpy()
        return {k: _from_storable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_storable(v) for v in obj]
    return obj


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save(run_dir: Path, iteration: int, state: dict, keep: int) -> Path:
    """Write ``ckpt_<iteration>.pt`` atomically (temp file + fsync + rename), then prune to
    ``keep``. A crash at any point leaves the previous checkpoints as they were."""
    directory = checkpoint_dir(run_dir)
    path = directory / f"ckpt_{iteration:08d}.pt"
    tmp = directory / f".{path.name}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **_to_storable(state)}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(directory)  # the rename itself survives a power cut
    except OSError as err:  # disk full, read-only, quota: say so in one line, keep older checkpoints
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {err.strerror or _first_line(err)}") from err
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    for stale in directory.iterdir():  # temp files of a writer that was killed mid-write
        if _TMP.match(stale.name) and stale != tmp:
            stale.unlink(missing_ok=True)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:  # some filesystems refuse fsync on directories
        if err.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def serialized_size(state: dict) -> int:
    """Bytes one checkpoint of ``state`` takes on disk (for the free-space check)."""
    import io

    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **_to_storable(state)}, buffer)
    return buffer.tell()


def list_checkpoints(run_dir: Path) -> list[Path]:
    directory = checkpoint_dir(run_dir)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def load(path: Path) -> dict:
    """Load with ``weights_only=True``; anything unreadable or foreign raises CheckpointError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol warnings: the error below says it all
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # a pickle of Python objects: refused, never executed
        detail = [line.strip() for line in str(err).splitlines()[1:] if line.strip()
                  and not line.startswith(("Check the documentation", "Please file an issue"))]
        raise CheckpointError(f"cannot load checkpoint {path}: refused to unpickle Python objects (only tensors "
                              f"and plain data are loaded){': ' + detail[0] if detail else ''}") from None
    except Exception as err:  # corrupt or truncated file
        raise CheckpointError(f"cannot load checkpoint {path}: {_first_line(err)}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path} is not a ppo_research checkpoint of format {FORMAT} (found {found!r})")
    return _from_storable(data)


def latest(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


# -- RNG state -------------------------------------------------------------------------------

_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


def generator_state(gen: np.random.Generator) -> dict:
    """A numpy Generator's state as plain data (its bit generator's name and counters)."""
    return gen.bit_generator.state


def make_generator(state: dict) -> np.random.Generator:
    """The inverse of ``generator_state``; only numpy's own bit generators are accepted."""
    name = state["bit_generator"]
    if name not in _BIT_GENERATORS:
        raise CheckpointError(f"unknown numpy bit generator {name!r} in checkpoint")
    bit_generator = getattr(np.random, name)()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def capture_global_rng() -> dict:
    """python ``random``, numpy's legacy global RNG and torch's CPU generator."""
    version, internal, gauss = random.getstate()
    return {"python": {"version": version, "internal": list(internal), "gauss": gauss},
            "numpy": np.random.get_state(legacy=False),
            "torch": torch.get_rng_state()}


def restore_global_rng(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


# -- resume ----------------------------------------------------------------------------------

def truncate_metrics(path: Path, iteration: int) -> int:
    """Keep the rows of ``metrics.jsonl`` up to ``iteration``: rows written after the checkpoint
    (and a line cut short by a kill) are dropped, so the resumed run appends without duplicates.
    Rewritten atomically; returns the number of rows dropped."""
    path = Path(path)
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            keep = int(row["iteration"]) <= iteration
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
    return dropped
