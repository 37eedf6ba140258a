"""The files that describe a run in its directory, and how they are written.

- ``run.json`` (``describe_run``): the run's identity (run id), resolved config, group choices
  and overrides, written at the start of every segment; a run directory describes itself.
- ``metrics.jsonl`` (``MetricsFile``): one row per iteration, appended and flushed.
- every JSON file is written whole: a temp file renamed over the target (``write_json_atomic``),
  with fsyncs where a power cut must not lose it (``write_json_durable``).
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

from ...errors import RunDirError
from . import checkpoint


def jsonable(value: Any) -> Any:
    """A value JSON can hold: a non-finite float as null (nan) or +-1e308 (inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


class MetricsFile:
    """Append-only ``metrics.jsonl``: one JSON object per iteration, flushed each write."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        try:
            self._file.write(json.dumps({k: jsonable(v) for k, v in row.items()}) + "\n")
            self._file.flush()
        except OSError as err:  # a full disk: the error names this file (a flush's OSError names none)
            raise OSError(err.errno, err.strerror, str(self.path)) from None

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:  # the row a full disk refused: the error that ended the run has said so
            pass


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps({k: jsonable(v) for k, v in data.items()}, indent=2) + "\n")
    os.replace(tmp, path)


#: Written into every run directory at the start of each run segment: the run describes itself
#: (its run id, resolved config, group choices, overrides), whoever started it.
RUN_FILE = "run.json"


def check_run_dir(run_dir: Path) -> None:
    """The run directory and its checkpoints/ must take a file: found out now, not at the first
    checkpoint an hour in."""
    probe_dir = checkpoint.checkpoint_dir(run_dir)
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
    size = checkpoint.serialized_size(trainer.member_state(member))
    keep = trainer.members[member].cfg.checkpoint.keep
    need = size * (keep + 1) + 2**20
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise RunDirError(f"output directory {run_dir} has {free / 2**20:.1f} MB free; this run needs about "
                          f"{need / 2**20:.1f} MB (checkpoints of {size / 2**10:.0f} KB, "
                          f"checkpoint.keep={keep})")


def write_json_durable(path: Path, data: dict) -> None:
    """Write ``path`` atomically and durably (temp file, fsync, rename, directory fsync)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    checkpoint.fsync_file(path.parent)


def describe_run(run_dir: Path, resolved: dict, choices: dict[str, str], overrides: Sequence[str] = (),
                 run_id: Optional[str] = None) -> None:
    """run.json: the run's identity (``run_id``, kept by every resume; checkpoints carry it too),
    resolved config, group choices and this segment's overrides."""
    data = {"run_id": run_id, "config": resolved, "choices": dict(choices), "overrides": list(overrides)}
    try:
        write_json_durable(Path(run_dir) / RUN_FILE, data)
    except OSError:  # e.g. a value json cannot hold: the plain writer's behaviour
        write_json_atomic(Path(run_dir) / RUN_FILE, data)


def described_run_id(run_dir: Path) -> Optional[str]:
    """The run id run.json holds, if any."""
    try:
        run_id = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None
    return run_id if isinstance(run_id, str) else None
