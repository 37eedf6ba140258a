"""The experiment trackers' interface. Each tracker is one ``logger=`` option, a class in a file
of its own (``wandb.py``, ``tensorboard.py``); ``metrics.jsonl`` and ``summary.json`` are always
written besides (run/rundir/files.py), and are the record: a tracker mirrors them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from ...errors import ConfigError
from ..config.schema import check_target_kwargs, construct

_log = logging.getLogger(__name__)




class RunLogger:
    """Interface of an experiment tracker; the base class logs nowhere.

    The trainer calls ``start`` once, ``log`` once per iteration with the ``metrics.jsonl`` row,
    ``summary`` at the end and ``finish`` always (also after an exception). None of them may
    raise for tracker trouble: the local files are the record, the tracker a mirror.
    """

    wants_video = False  # whether the trainer should render evaluation frames for log_video

    def start(self, run_dir: Path, config: dict, choices: dict[str, str], resume_id: Optional[str] = None) -> None:
        pass

    def log(self, metrics: dict, step: int) -> None:
        pass

    def log_video(self, frames: np.ndarray, step: int, fps: int = 30) -> None:
        """Frames of one evaluation episode, shape (time, height, width, 3) uint8."""

    def summary(self, summary: dict) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass

    @property
    def run_id(self) -> Optional[str]:
        return None

    def upload_hint(self) -> Optional[str]:
        """A command that uploads what this tracker kept locally (offline wandb: ``wandb sync``),
        for the run's end line; None when there is nothing to upload."""
        return None


class NullLogger(RunLogger):
    """``logger=none``: local files only; wandb is never imported."""


class MultiLogger(RunLogger):
    """Fans every call out to several trackers: ``loggers`` maps a name to a logger node
    (``{_target_: ..., **its options}``), e.g. ``conf/logger/wandb_tensorboard.yaml``; an option
    is overridden as ``logger.loggers.wandb.mode=online``. The children are checked like any
    logger group; the local files are written once, by the run, whatever the children do."""

    def __init__(self, loggers: dict):

        if not isinstance(loggers, dict) or not loggers:
            raise ConfigError("logger.loggers", loggers, "a non-empty mapping of name -> logger node")
        self.loggers: dict[str, RunLogger] = {}
        for name, node in loggers.items():
            key = f"logger.loggers.{name}"
            if isinstance(node, dict) and node.get("_target_") == f"{__name__}.MultiLogger":
                raise ConfigError(f"{key}._target_", node["_target_"], "a single tracker, not another MultiLogger")
            kwargs = check_target_kwargs(key, node)
            self.loggers[name] = construct({"_target_": node["_target_"], **kwargs})
        self.wants_video = any(child.wants_video for child in self.loggers.values())

    def start(self, run_dir: Path, config: dict, choices: dict[str, str], resume_id: Optional[str] = None) -> None:
        for child in self.loggers.values():
            child.start(run_dir, config, choices, resume_id)

    def log(self, metrics: dict, step: int) -> None:
        for child in self.loggers.values():
            child.log(metrics, step)

    def log_video(self, frames: np.ndarray, step: int, fps: int = 30) -> None:
        for child in self.loggers.values():
            if child.wants_video:
                child.log_video(frames, step, fps)

    def summary(self, summary: dict) -> None:
        for child in self.loggers.values():
            child.summary(summary)

    def finish(self, exit_code: int = 0) -> None:
        for child in self.loggers.values():
            child.finish(exit_code)

    @property
    def run_id(self) -> Optional[str]:
        """The first child's id that has one (wandb's): a resumed run continues that run."""
        return next((i for i in (c.run_id for c in self.loggers.values()) if i is not None), None)

    def upload_hint(self) -> Optional[str]:
        hints = [h for h in (c.upload_hint() for c in self.loggers.values()) if h]
        return "; ".join(hints) or None
