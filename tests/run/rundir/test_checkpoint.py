"""Checkpoints (run/rundir/checkpoint.py): the random generators' round trip, metrics truncation,
a failed write that keeps the previous checkpoints, pruning, and metrics made durable first."""
from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ppo_research.run.rundir import checkpoint


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_global_rng_round_trip():
    state = checkpoint._from_storable(checkpoint._to_storable(checkpoint.capture_global_rng()))
    import random
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    checkpoint.restore_global_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_truncate_metrics_drops_rows_past_the_checkpoint_and_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"iteration": i, "x": i}) + "\n" for i in range(1, 6)) + '{"iteration": 6, "x')
    assert checkpoint.truncate_metrics(path, 3) == 3
    assert [json.loads(line)["iteration"] for line in path.read_text().splitlines()] == [1, 2, 3]
    assert checkpoint.truncate_metrics(path, 3) == 0


def test_a_failed_checkpoint_write_keeps_the_previous_ones(tmp_path, monkeypatch):
    first = checkpoint.save(tmp_path, 1, {"w": torch.ones(3)}, keep=2)
    digest = sha256(first)

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(checkpoint.CheckpointError, match="No space left on device") as info:
        checkpoint.save(tmp_path, 2, {"w": torch.zeros(3)}, keep=2)
    assert len(str(info.value).splitlines()) == 1
    assert checkpoint.list_checkpoints(tmp_path) == [first] and sha256(first) == digest
    assert sorted(p.name for p in checkpoint.checkpoint_dir(tmp_path).iterdir()) == [first.name]  # no temp left


def test_checkpoints_are_pruned_to_keep_and_stale_temp_files_removed(tmp_path):
    directory = checkpoint.checkpoint_dir(tmp_path)
    directory.mkdir()
    (directory / ".ckpt_00000004.pt.tmp").write_bytes(b"torn write of a killed run")
    for i in range(1, 6):
        checkpoint.save(tmp_path, i, {"i": i}, keep=2)
    assert sorted(p.name for p in directory.iterdir()) == ["ckpt_00000004.pt", "ckpt_00000005.pt"]
    assert checkpoint.load(checkpoint.latest(tmp_path))["i"] == 5


def test_metrics_rows_are_made_durable_before_each_checkpoint(tmp_path, monkeypatch):
    """A checkpoint on disk implies its metrics rows are: metrics.jsonl is fsynced before the
    checkpoint's temp file is renamed into place (before: rows were only flushed)."""
    metrics = tmp_path / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"iteration": 1}\n')
        f.flush()
        events = []
        real_fsync, real_replace = os.fsync, os.replace
        monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                     real_fsync(fd))[1])
        monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b))[1])
        path = checkpoint.save(tmp_path, 1, {"w": torch.ones(2)}, keep=2)
    synced = [i for i, e in enumerate(events) if e == ("fsync", str(metrics))]
    placed = events.index(("replace", str(path)))
    assert synced and synced[0] < placed, events
