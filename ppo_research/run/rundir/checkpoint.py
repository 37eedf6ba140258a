"""Checkpoints: atomic, checksummed writes, the last K kept, safe loading, RNG capture,
resume helpers.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so it loads with
``torch.load(weights_only=True)``: a checkpoint can never run code when it is opened. Numpy
arrays are stored as tensors and turned back on load.

On disk (format /3) the state is serialised once into bytes, and the file holds those bytes
with their SHA-256: ``{"format", "sha256", "body": uint8 tensor}``. torch's zip container
checks no CRC on load, so a flipped bit would otherwise load as silently wrong weights; with
the digest, a damaged file is told apart from a good one and resume falls back to an older
checkpoint. Format /2 files (no digest) still load, unverified.

Checkpoints are taken only at iteration boundaries (after the update, the log row and any
evaluation), where the run's future depends on nothing but what ``Trainer.state_dict`` holds.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ...errors import CheckpointError, RunDirError, first_line
from .files import fsync_file, write_atomic

FORMAT = "ppo_research.checkpoint/3"  # /3: the state's bytes with their SHA-256 (and the run id)
LEGACY_FORMAT = "ppo_research.checkpoint/2"  # /2 added RNG, env and logger-id state for exact resume
#: the rows that a checkpoint's iteration accounts for: made durable before the checkpoint is
METRICS_FILE = "metrics.jsonl"
_NAME = re.compile(r"^ckpt_(\d{8})\.pt$")
_TMP = re.compile(r"^\.ckpt_\d{8}\.pt\.tmp$")


def _to_storable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        # (np.ascontiguousarray would turn a 0-d array into shape (1,))
        return {"__ndarray__": torch.from_numpy(obj if obj.flags.c_contiguous else np.ascontiguousarray(obj)).clone()}
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


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _encode(state: dict) -> dict:
    """The on-disk form of ``state``: its serialised bytes and their SHA-256."""
    buffer = io.BytesIO()
    torch.save(_to_storable(state), buffer)
    body = buffer.getvalue()
    return {"format": FORMAT, "sha256": hashlib.sha256(body).hexdigest(),
            "body": torch.frombuffer(bytearray(body), dtype=torch.uint8)}


def save(run_dir: Path, iteration: int, state: dict, keep: Optional[int]) -> Path:
    """Write ``ckpt_<iteration>.pt`` atomically (temp file + fsync + rename), then prune to
    ``keep`` (None: no pruning; ``prune`` later). A crash at any point leaves the previous
    checkpoints as they were.

    ``metrics.jsonl`` is fsynced first: once a checkpoint is on disk, so are the rows up to
    its iteration (a power cut cannot leave a checkpoint ahead of its metrics)."""
    directory = checkpoint_dir(run_dir)
    path = directory / f"ckpt_{iteration:08d}.pt"
    tmp = directory / f".{path.name}.tmp"
    try:
        fsync_file(Path(run_dir) / METRICS_FILE)
        directory.mkdir(parents=True, exist_ok=True)
        # a full disk fails in the write as OSError (torch's zip writer would hide it)
        write_atomic(path, _serialize(state), durable=True, temp=tmp)
    except OSError as err:  # disk full, read-only, quota: say so in one line, keep older checkpoints
        raise CheckpointError(f"cannot write checkpoint {path}: {err.strerror or first_line(err)}") from err
    if keep is not None:
        prune(run_dir, keep)
    return path


def prune(run_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints; remove temp files of a writer killed mid-write."""
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    for stale in checkpoint_dir(run_dir).iterdir():
        if _TMP.match(stale.name):
            stale.unlink(missing_ok=True)


def iteration_of(path: Path) -> int:
    """The iteration a checkpoint file is named for."""
    return int(_NAME.match(Path(path).name).group(1))


def _serialize(state: dict) -> memoryview:
    """The checkpoint file's bytes. Serialised in memory, then written as plain bytes: torch's
    zip writer reports a write that ran out of disk as a position mismatch (a RuntimeError), not
    as the OSError it is."""
    buffer = io.BytesIO()
    torch.save(_encode(state), buffer)
    return buffer.getbuffer()


def serialized_size(state: dict) -> int:
    """Bytes one checkpoint of ``state`` takes on disk (for the free-space check)."""
    return len(_serialize(state))


def list_checkpoints(run_dir: Path) -> list[Path]:
    directory = checkpoint_dir(run_dir)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def _torch_load(source, path: Path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol warnings: the error below says it all
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # a pickle of Python objects: refused, never executed
        detail = [line.strip() for line in str(err).splitlines()[1:] if line.strip()
                  and not line.startswith(("Check the documentation", "Please file an issue"))]
        raise CheckpointError(f"cannot load checkpoint {path}: refused to unpickle Python objects (only tensors "
                              f"and plain data are loaded){': ' + detail[0] if detail else ''}") from None
    except Exception as err:  # corrupt or truncated file
        raise CheckpointError(f"cannot load checkpoint {path}: {first_line(err)}") from None


def load(path: Path) -> dict:
    """Load with ``weights_only=True`` and verify the checksum; anything unreadable, damaged or
    foreign raises CheckpointError (one line)."""
    data = _torch_load(path, path)
    found = data.get("format") if isinstance(data, dict) else type(data).__name__
    if found == LEGACY_FORMAT:
        return _from_storable(data)
    if found != FORMAT:
        raise CheckpointError(f"{path} is not a ppo_research checkpoint of format {FORMAT} (found {found!r})")
    body, digest = data.get("body"), data.get("sha256")
    if not isinstance(body, torch.Tensor) or body.dtype != torch.uint8 or not isinstance(digest, str):
        raise CheckpointError(f"checkpoint {path} is damaged: no checksummed body")
    raw = body.numpy().tobytes()
    actual = hashlib.sha256(raw).hexdigest()
    if actual != digest:
        raise CheckpointError(f"checkpoint {path} is damaged: checksum mismatch (stored sha256 {digest[:12]}..., "
                              f"contents hash to {actual[:12]}...)")
    state = _torch_load(io.BytesIO(raw), path)
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is damaged: its body is a {type(state).__name__}, not a mapping")
    return _from_storable(state)


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
        write_atomic(path, "".join(line + "\n" for line in kept).encode("utf-8"), durable=True,
                     temp=path.with_name(path.name + ".tmp"))
    return dropped


def metrics_iterations(path: Path) -> list[int] | None:
    """The iterations ``metrics.jsonl`` holds a complete row for, in file order (None: no file)."""
    path = Path(path)
    if not path.exists():
        return None
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            found.append(int(json.loads(line)["iteration"]))
        except (ValueError, KeyError, TypeError):
            continue
    return found


def check_run_dir(run_dir: Path) -> None:
    """The run directory and its checkpoints/ must take a file: found out now, not at the first
    checkpoint an hour in."""
    probe_dir = checkpoint_dir(run_dir)
    try:
        probe_dir.mkdir(parents=True, exist_ok=True)
        probe = probe_dir / f".write_probe_{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as err:
        raise RunDirError(f"output directory {run_dir} is not writable: {err.strerror or err}"
                          f"{f' ({err.filename})' if err.filename else ''}") from None


def check_free_space(run_dir: Path, trainer, member: int = 0) -> None:
    """Room for ``keep`` + 1 checkpoints (one is written before the oldest is pruned) plus 1 MB
    of metrics; measured from this run's (the trainer's ``member``'s) checkpoint."""
    size = serialized_size(trainer.member_state(member))
    keep = trainer.members[member].cfg.checkpoint.keep
    need = size * (keep + 1) + 2**20
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise RunDirError(f"output directory {run_dir} has {free / 2**20:.1f} MB free; this run needs about "
                          f"{need / 2**20:.1f} MB (checkpoints of {size / 2**10:.0f} KB, "
                          f"checkpoint.keep={keep})")
