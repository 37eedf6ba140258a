"""Run loggers. Each class is one `logger=` option; the local files are always written.

``metrics.jsonl`` and ``summary.json`` are the contract (README, "What a run writes"); wandb mirrors them.
"""
from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from typing import Optional

import numpy as np

from ...errors import ConfigError, described
from ..envs.video import prepare_rendering
from ..rundir.checkpoint import latest
from .base import RunLogger
from .naming import HydraContext, default_group, default_name, default_tags

# wandb is imported where it is used: about a second to import, which logger=none runs never pay.

_log = logging.getLogger(__name__)


# -- wandb -----------------------------------------------------------------------------------

MODES = ("online", "offline", "disabled")
RUN_ID_FILE = "run_id"  # in <run_dir>/wandb/: lets a resumed run continue the same wandb run




class WandbLogger(RunLogger):
    """Weights & Biases, offline unless ``mode`` or WANDB_MODE says otherwise.

    The run lives in ``<run_dir>/wandb/`` (the run directory holds everything of the run), so ``wandb sync`` of
    that folder uploads it later unchanged. Tracker trouble never stops training: a failed
    online start falls back to offline with one warning; a failed offline start or a failed
    ``log`` continues without wandb, the local files are written regardless.
    """

    _online_failed: Optional[str] = None  # per process: later multirun jobs skip the timeout

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
        init_timeout: float = 20.0,
        video: bool = False,
        upload_checkpoint: bool = False,
        settings: Optional[dict] = None,
    ):

        if mode is not None and mode not in MODES:
            raise ConfigError("logger.mode", mode, f"null or one of {', '.join(MODES)}")
        if isinstance(init_timeout, bool) or not isinstance(init_timeout, (int, float)) or not init_timeout > 0:
            raise ConfigError("logger.init_timeout", init_timeout, "a number of seconds > 0")
        self.project, self.entity, self.mode = project, entity, mode
        self.group, self.name, self.tags, self.notes, self.job_type = group, name, tags, notes, job_type
        self.init_timeout, self.upload_checkpoint = float(init_timeout), upload_checkpoint
        self.wants_video = bool(video)
        if self.wants_video:  # before any env is made: mujoco reads its GL backend on import

            prepare_rendering()
        self.settings = dict(settings or {})
        self._run = None
        self._run_dir: Optional[Path] = None
        self._offline_dir: Optional[Path] = None  # the offline-run-* folder to `wandb sync`
        self._warned = False

    # -- start -------------------------------------------------------------------------------

    def init_kwargs(self, run_dir: Path, config: dict, choices: dict[str, str], context: HydraContext,
                    resume_id: Optional[str] = None) -> dict:
        """The ``wandb.init`` arguments: configured values first, reviewer-friendly defaults after."""
        import wandb

        run_config = {**config, "choices": dict(choices)}  # nested: filter by loss.epsilon, choices.loss
        kwargs = dict(project=self.project, entity=self.entity, dir=str(run_dir), config=run_config,
                      name=self.name or default_name(choices, config.get("seed"), context.overrides),
                      group=self.group or default_group(context),
                      tags=list(self.tags) if self.tags else default_tags(choices),
                      notes=self.notes, job_type=self.job_type,
                      # a population's members are runs side by side in one process
                      reinit="create_new",
                      settings=wandb.Settings(init_timeout=self.init_timeout, **self.settings))
        resume_id = resume_id or previous_run_id(run_dir, config)
        if resume_id:
            kwargs.update(id=resume_id, resume="allow")
        if self.mode is not None:  # an explicit mode overrides WANDB_MODE: only pass it when configured
            kwargs["mode"] = self.mode
        return kwargs

    def start(self, run_dir: Path, config: dict, choices: dict[str, str], resume_id: Optional[str] = None) -> None:
        self._run_dir = Path(run_dir)
        self._warned = False
        self._offline_dir = None
        try:
            import wandb

            os.environ.setdefault("WANDB_MODE", "offline")  # offline by default: no account, no network
            os.environ.setdefault("WANDB_SILENT", "true")  # keep wandb's banners out of the training log
            kwargs = self.init_kwargs(self._run_dir, config, choices, HydraContext.current(), resume_id)
        except Exception as err:  # wandb missing or a bad `settings` entry: train without it
            self._warn(f"wandb disabled ({described(err)}); local files are kept")
            return
        self._run = self._init(wandb, kwargs)
        if self._run is None:
            return
        try:
            self._offline_dir = Path(self._run.dir).parent if self._run.offline else None
        except Exception:  # an unusual run object: no hint, nothing else lost
            self._offline_dir = None
        try:
            self._run.define_metric("global_step")
            self._run.define_metric("*", step_metric="global_step")  # x-axis = env steps, as metrics.jsonl
            (self._run_dir / "wandb").mkdir(exist_ok=True)
            (self._run_dir / "wandb" / RUN_ID_FILE).write_text(self._run.id + "\n")
        except Exception as err:
            self._warn(f"wandb setup failed ({described(err)}); continuing")

    def _init(self, wandb, kwargs: dict):
        mode = kwargs.get("mode") or os.environ.get("WANDB_MODE", "offline")
        if mode == "online" and WandbLogger._online_failed:  # seen this process: don't wait again
            return self._init_offline(wandb, kwargs, f"online failed earlier in this process "
                                                     f"({WandbLogger._online_failed})")
        try:
            return wandb.init(**kwargs)
        except Exception as err:  # bad key (UsageError), no network / timeout (CommError), ...
            if mode in ("offline", "dryrun", "disabled"):
                self._warn(f"wandb {mode} init failed ({described(err)}); continuing without wandb, "
                           "local files are kept")
                return None
            WandbLogger._online_failed = described(err)
            return self._init_offline(wandb, kwargs, f"{mode} init failed ({described(err)})")

    def _init_offline(self, wandb, kwargs: dict, reason: str):
        try:
            run = wandb.init(**{**kwargs, "mode": "offline"})
        except Exception as err:
            self._warn(f"wandb {reason}, and offline too ({described(err)}); continuing without wandb, "
                       "local files are kept")
            return None
        self._warn(f"wandb {reason}; logging offline instead (upload later: wandb sync {Path(run.dir).parent})")
        return run

    def _warn(self, message: str) -> None:
        if not self._warned:  # one line per run, however often wandb fails afterwards
            self._warned = True
            _log.warning(message)

    # -- per iteration and at the end --------------------------------------------------------

    def log(self, metrics: dict, step: int) -> None:
        if self._run is None:
            return
        try:
            self._run.log(dict(metrics))  # the row holds global_step, the x-axis of every metric
        except Exception as err:
            self._warn(f"wandb log failed ({described(err)}); continuing without wandb, local files are kept")
            self._abandon()

    def log_video(self, frames: np.ndarray, step: int, fps: int = 30) -> None:
        if self._run is None or not self.wants_video:
            return
        try:
            import wandb

            path = write_gif(frames, self._run_dir / "videos" / f"eval_{step:010d}.gif", fps)
            self._run.log({"eval_video": wandb.Video(str(path)), "global_step": step})
        except Exception as err:
            self._warn(f"wandb video upload failed ({described(err)}); continuing")

    def summary(self, summary: dict) -> None:
        if self._run is None:
            return
        try:
            self._run.summary.update(dict(summary))
        except Exception as err:
            self._warn(f"wandb summary failed ({described(err)}); local summary.json is kept")

    def finish(self, exit_code: int = 0) -> None:
        if self._run is None:
            return
        if self.upload_checkpoint:
            self._log_checkpoint(exit_code)
        try:
            self._run.finish(exit_code=exit_code)
        except Exception as err:
            self._warn(f"wandb finish failed ({described(err)}); local files are kept")
            self._abandon()
        finally:
            self._run = None

    def _log_checkpoint(self, exit_code: int) -> None:

        path = latest(self._run_dir)
        if path is None:
            return
        try:
            import wandb

            artifact = wandb.Artifact(f"checkpoint-{self._run.id}", type="model",
                                      metadata={"file": path.name, "exit_code": exit_code})
            artifact.add_file(str(path))
            self._run.log_artifact(artifact, aliases=["latest", "final" if exit_code == 0 else "interrupted"])
        except Exception as err:
            self._warn(f"wandb checkpoint upload failed ({described(err)}); the file stays in {path.parent}")

    def _abandon(self) -> None:
        """Stop using a broken run; finish it quietly so the next run in this process starts clean."""
        run, self._run = self._run, None
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:
                pass

    @property
    def run_id(self) -> Optional[str]:
        return None if self._run is None else self._run.id

    def upload_hint(self) -> Optional[str]:
        if self._offline_dir is None:
            return None
        return f"wandb sync {_shell_path(self._offline_dir)}"


def _shell_path(path: Path) -> str:
    """``path`` relative to the working directory when under it (shorter to copy), quoted if needed."""

    try:
        path = Path(path).resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    return shlex.quote(str(path))


def previous_run_id(run_dir: Path, config: dict) -> Optional[str]:
    """The wandb id recorded by an earlier segment of this run, when the config resumes it."""
    resume = config.get("resume")
    if not resume:
        return None
    for directory in (Path(resume), Path(run_dir)):
        path = directory / "wandb" / RUN_ID_FILE
        if path.is_file():
            return path.read_text().strip() or None
    return None


def write_gif(frames: np.ndarray, path: Path, fps: int, max_side: int = 256) -> Path:
    """Encode frames as a GIF with imageio (wandb.Video on raw arrays would need moviepy).
    Frames are subsampled to at most ``max_side`` pixels a side: a 1000-step episode stays small."""
    import imageio.v2 as imageio

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        raise ValueError(f"frames must be (time, height, width, channels), got shape {frames.shape}")
    stride = max(1, -(-max(frames.shape[1:3]) // max_side))
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, frames[:, ::stride, ::stride].astype(np.uint8), duration=1000.0 / fps, loop=0)
    return path


# -- TensorBoard -----------------------------------------------------------------------------


# -- several trackers at once ----------------------------------------------------------------

