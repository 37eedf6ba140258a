"""The files that describe a run in its directory, and how they are written.

- ``run.json`` (``describe_run``): the run's identity (run id), resolved config, group choices,
  overrides and the population it trains in, written at the start of every segment; a run
  directory describes itself.
- ``metrics.jsonl`` (``MetricsFile``): one row per iteration, appended and flushed.
- every JSON file is written whole: a temp file renamed over the target (``write_json_atomic``),
  with fsyncs where a power cut must not lose it (``write_json_durable``).
"""
from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence


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


def fsync_file(path: Path) -> None:
    """Make what was written to ``path`` (a file, by any descriptor, or a directory's entries)
    durable; a missing path is fine, and so is a filesystem that refuses fsync on directories."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, durable: bool = False, temp: Optional[Path] = None) -> None:
    """Write ``path`` whole: ``data`` goes to a temp file beside it (``temp``, default
    ``.<name>.tmp``) that is then renamed over ``path``, so a reader finds the old file or the new
    one, never a part of it; on failure the temp file is removed. ``durable``: the file and then
    its directory are fsynced, so that it survives a power cut."""
    path = Path(path)
    temp = Path(temp) if temp is not None else path.with_name(f".{path.name}.tmp")
    try:
        with open(temp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_file(path.parent)


def write_json_atomic(path: Path, data: dict) -> None:
    """A JSON file written whole (non-finite floats as ``jsonable`` says)."""
    write_atomic(path, (json.dumps({k: jsonable(v) for k, v in data.items()}, indent=2) + "\n").encode("utf-8"))


#: Written into every run directory at the start of each run segment: the run describes itself
#: (its run id, resolved config, group choices, overrides), whoever started it.
RUN_FILE = "run.json"


def write_json_durable(path: Path, data: dict) -> None:
    """A JSON file written whole and durably (it survives a power cut)."""
    write_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode("utf-8"), durable=True)


def describe_run(run_dir: Path, resolved: dict, choices: dict[str, str], overrides: Sequence[str] = (),
                 run_id: Optional[str] = None, population: Optional[dict] = None) -> None:
    """run.json: the run's identity (``run_id``, kept by every resume; checkpoints carry it too),
    resolved config, group choices, this segment's overrides and ``population``: the population
    this segment trains in, ``{"index": k, "members": [...]}`` (``loop.train.population_record``;
    a run trained alone is a population of one), from which ``python -m ppo_research.rerun``
    trains it again with the same numbers."""
    data = {"run_id": run_id, "config": resolved, "choices": dict(choices), "overrides": list(overrides)}
    if population is not None:
        data["population"] = population
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
