"""Run loggers. Each class is one `logger=` option; the local files are always written.

``metrics.jsonl`` and ``summary.json`` are the contract in DESIGN.md; wandb mirrors them.
"""
from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Optional


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


class MetricsFile:
    """Append-only ``metrics.jsonl``: one JSON object per iteration, flushed each write."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._file.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps({k: _jsonable(v) for k, v in data.items()}, indent=2) + "\n")
    os.replace(tmp, path)


class RunLogger:
    """Interface of an experiment tracker; the base class logs nowhere."""

    def start(self, run_dir: Path, config: dict, choices: dict[str, str], resume_id: Optional[str] = None) -> None:
        pass

    def log(self, metrics: dict, step: int) -> None:
        pass

    def summary(self, summary: dict) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass

    @property
    def run_id(self) -> Optional[str]:
        return None


class NullLogger(RunLogger):
    """``logger=none``: local files only; wandb is never imported."""


class WandbLogger(RunLogger):
    """Weights & Biases; offline unless ``mode`` or WANDB_MODE says otherwise."""

    def __init__(
        self,
        project: str = "ppo_research",
        entity: Optional[str] = None,
        mode: Optional[str] = None,
        group: Optional[str] = None,
        name: Optional[str] = None,
        tags: Optional[list] = None,
        notes: Optional[str] = None,
        job_type: str = "train",
    ):
        self.project, self.entity, self.mode = project, entity, mode
        self.group, self.name, self.tags, self.notes, self.job_type = group, name, tags, notes, job_type
        self._run = None

    def start(self, run_dir: Path, config: dict, choices: dict[str, str], resume_id: Optional[str] = None) -> None:
        import wandb

        name = self.name or "-".join(str(choices.get(k)) for k in ("loss", "advantage", "env")) + f"-s{config.get('seed')}"
        tags = list(self.tags) if self.tags else [f"{k}={v}" for k, v in sorted(choices.items())]
        kwargs = dict(project=self.project, entity=self.entity, group=self.group, name=name, tags=tags,
                      notes=self.notes, job_type=self.job_type, config=config, dir=str(run_dir))
        if resume_id:
            kwargs.update(id=resume_id, resume="allow")
        if self.mode is not None:  # an explicit mode overrides WANDB_MODE: only pass it when configured
            kwargs["mode"] = self.mode
        os.environ.setdefault("WANDB_MODE", "offline")  # offline by default: no account, no network
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            self._run = wandb.init(**kwargs)
        except Exception as err:  # bad key, no network: never kill training for the tracker
            warnings.warn(f"wandb init failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''});"
                          " falling back to offline mode", stacklevel=2)
            kwargs["mode"] = "offline"
            self._run = wandb.init(**kwargs)
        self._run.define_metric("global_step")
        self._run.define_metric("*", step_metric="global_step")

    def log(self, metrics: dict, step: int) -> None:
        if self._run is not None:
            self._run.log(metrics)

    def summary(self, summary: dict) -> None:
        if self._run is not None:
            for key, value in summary.items():
                self._run.summary[key] = value

    def finish(self, exit_code: int = 0) -> None:
        if self._run is not None:
            try:
                self._run.finish(exit_code=exit_code)
            except Exception as err:  # pragma: no cover - wandb internals
                print(f"warning: wandb finish failed: {err}", file=sys.stderr)
            self._run = None

    @property
    def run_id(self) -> Optional[str]:
        return None if self._run is None else self._run.id
