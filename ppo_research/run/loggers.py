"""Run loggers. Each class is one `logger=` option; the local files are always written.

``metrics.jsonl`` and ``summary.json`` are the contract (README, "What a run writes"); wandb mirrors them.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np


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
        try:
            self._file.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")
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
    tmp.write_text(json.dumps({k: _jsonable(v) for k, v in data.items()}, indent=2) + "\n")
    os.replace(tmp, path)


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


# -- wandb -----------------------------------------------------------------------------------

MODES = ("online", "offline", "disabled")
NAME_GROUPS = ("paper_setting", "loss", "advantage", "env")  # run name: [<paper_setting>-]<loss>-<advantage>-<env>[-<hparams>]-s<seed>
HPARAM_GROUPS = ("loss", "advantage")  # overridden keys of these groups join the run name
RUN_ID_FILE = "run_id"  # in <run_dir>/wandb/: lets a resumed run continue the same wandb run


@dataclass
class HydraContext:
    """What the Hydra runtime says about this job; empty when Hydra's runtime is not set
    (the Optuna driver calls training directly)."""

    multirun: bool = False
    sweep_dir: Optional[str] = None
    experiment: Optional[str] = None
    overrides: tuple[str, ...] = ()

    @classmethod
    def current(cls) -> "HydraContext":
        try:
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            if not HydraConfig.initialized():
                return cls()
            hc = HydraConfig.get()
            return cls(multirun=hc.mode == RunMode.MULTIRUN, sweep_dir=hc.sweep.dir,
                       experiment=hc.runtime.choices.get("experiment"), overrides=tuple(hc.overrides.task))
        except Exception:  # a partial Hydra config (compose API, old versions): no context
            return cls()


def sweep_name(sweep_dir: str) -> str:
    """``outputs/multirun/2026-11-24/03-25-36`` -> ``2026-11-24_03-25-36``; else the last part."""
    parts = Path(sweep_dir).parts
    if "multirun" in parts[:-1]:
        return "_".join(parts[len(parts) - parts[::-1].index("multirun"):])
    return parts[-1] if parts else "multirun"


def default_name(choices: dict[str, str], seed: Any, overrides: tuple[str, ...] = ()) -> str:
    """``klpen-gae-hopper-s2``; ablated loss/advantage values join it: ``clip-gae-hopper-epsilon0.1-s2``."""
    parts = [str(choices[g]) for g in NAME_GROUPS if choices.get(g)]
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if sep and key.split(".")[0] in HPARAM_GROUPS and "." in key:
            parts.append(f"{key.rsplit('.', 1)[1]}{value}")
    return "-".join(parts + [f"s{seed}"])


def default_group(context: HydraContext) -> Optional[str]:
    """Multirun: the sweep (prefixed by the experiment); single run: the experiment, if any."""
    if context.multirun and context.sweep_dir:
        sweep = sweep_name(context.sweep_dir)
        return f"{context.experiment}-{sweep}" if context.experiment else sweep
    return context.experiment


def default_tags(choices: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(choices.items()) if v is not None and k != "logger"]


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


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
        from ..errors import ConfigError  # one-line config errors, like every other group

        if mode is not None and mode not in MODES:
            raise ConfigError("logger.mode", mode, f"null or one of {', '.join(MODES)}")
        if isinstance(init_timeout, bool) or not isinstance(init_timeout, (int, float)) or not init_timeout > 0:
            raise ConfigError("logger.init_timeout", init_timeout, "a number of seconds > 0")
        self.project, self.entity, self.mode = project, entity, mode
        self.group, self.name, self.tags, self.notes, self.job_type = group, name, tags, notes, job_type
        self.init_timeout, self.upload_checkpoint = float(init_timeout), upload_checkpoint
        self.wants_video = bool(video)
        if self.wants_video:  # before any env is made: mujoco reads its GL backend on import
            from .video import prepare_rendering

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
            self._warn(f"wandb disabled ({_first_line(err)}); local files are kept")
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
            self._warn(f"wandb setup failed ({_first_line(err)}); continuing")

    def _init(self, wandb, kwargs: dict):
        mode = kwargs.get("mode") or os.environ.get("WANDB_MODE", "offline")
        if mode == "online" and WandbLogger._online_failed:  # seen this process: don't wait again
            return self._init_offline(wandb, kwargs, f"online failed earlier in this process "
                                                     f"({WandbLogger._online_failed})")
        try:
            return wandb.init(**kwargs)
        except Exception as err:  # bad key (UsageError), no network / timeout (CommError), ...
            if mode in ("offline", "dryrun", "disabled"):
                self._warn(f"wandb {mode} init failed ({_first_line(err)}); continuing without wandb, "
                           "local files are kept")
                return None
            WandbLogger._online_failed = _first_line(err)
            return self._init_offline(wandb, kwargs, f"{mode} init failed ({_first_line(err)})")

    def _init_offline(self, wandb, kwargs: dict, reason: str):
        try:
            run = wandb.init(**{**kwargs, "mode": "offline"})
        except Exception as err:
            self._warn(f"wandb {reason}, and offline too ({_first_line(err)}); continuing without wandb, "
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
            self._warn(f"wandb log failed ({_first_line(err)}); continuing without wandb, local files are kept")
            self._abandon()

    def log_video(self, frames: np.ndarray, step: int, fps: int = 30) -> None:
        if self._run is None or not self.wants_video:
            return
        try:
            import wandb

            path = write_gif(frames, self._run_dir / "videos" / f"eval_{step:010d}.gif", fps)
            self._run.log({"eval_video": wandb.Video(str(path)), "global_step": step})
        except Exception as err:
            self._warn(f"wandb video upload failed ({_first_line(err)}); continuing")

    def summary(self, summary: dict) -> None:
        if self._run is None:
            return
        try:
            self._run.summary.update(dict(summary))
        except Exception as err:
            self._warn(f"wandb summary failed ({_first_line(err)}); local summary.json is kept")

    def finish(self, exit_code: int = 0) -> None:
        if self._run is None:
            return
        if self.upload_checkpoint:
            self._log_checkpoint(exit_code)
        try:
            self._run.finish(exit_code=exit_code)
        except Exception as err:
            self._warn(f"wandb finish failed ({_first_line(err)}); local files are kept")
            self._abandon()
        finally:
            self._run = None

    def _log_checkpoint(self, exit_code: int) -> None:
        from .checkpoint import latest

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
            self._warn(f"wandb checkpoint upload failed ({_first_line(err)}); the file stays in {path.parent}")

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
    import shlex

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

def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"loss.epsilon": 0.2, ...}; lists become strings (HParams takes scalars)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    key = prefix[:-1]
    if node is None or isinstance(node, (list, tuple)):
        return {key: str(node)}
    if isinstance(node, bool) or isinstance(node, str):
        return {key: node}
    if isinstance(node, (int, float)):
        return {key: float(node)}
    return {key: str(node)}


class TensorBoardLogger(RunLogger):
    """TensorBoard event files under ``<run_dir>/<log_dir>``, through torch's SummaryWriter.

    Every numeric entry of each ``metrics.jsonl`` row becomes a scalar of the same name at
    ``global_step``; ``summary.json`` values go under ``summary/``. The hyperparameters are
    written for the HParams plugin at the start of the run (the flattened resolved config and
    the group choices, e.g. ``loss.epsilon``, ``choices.loss``) with ``metrics`` as its metric
    columns, and the session's end status at ``finish``. A resumed run appends a new event file
    and purges the old events past its checkpoint (SummaryWriter's ``purge_step``). Like wandb,
    trouble writing events never stops training: one warning, the local files are kept.
    """

    def __init__(self, log_dir: str = "tensorboard", flush_secs: float = 30.0, hparams: bool = True,
                 metrics: Optional[list] = None):
        from ..errors import ConfigError

        if not isinstance(log_dir, str) or not log_dir or Path(log_dir).is_absolute() or ".." in Path(log_dir).parts:
            raise ConfigError("logger.log_dir", log_dir, "a relative folder name inside the run directory")
        if isinstance(flush_secs, bool) or not isinstance(flush_secs, (int, float)) or not flush_secs > 0:
            raise ConfigError("logger.flush_secs", flush_secs, "a number of seconds > 0")
        if flush_secs > 86400:  # far above, the writer thread's wait overflows (a traceback from a thread)
            raise ConfigError("logger.flush_secs", flush_secs, "at most 86400 seconds (a day)")
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401  needs the tensorboard package
        except ImportError:
            raise ConfigError("logger", "tensorboard", 'the tensorboard package installed: pip install -e ".[tensorboard]"'
                              ) from None
        self.log_dir, self.flush_secs, self.hparams = log_dir, float(flush_secs), bool(hparams)
        self.metrics = list(metrics) if metrics else ["eval_return", "episode_return"]
        self._writer = None
        self._pending: Optional[tuple[dict, dict[str, str]]] = None
        self._resumed = False
        self._dir: Optional[Path] = None
        self._warned = False

    def start(self, run_dir: Path, config: dict, choices: dict[str, str], resume_id: Optional[str] = None) -> None:
        # The writer opens at the first row: a resumed run learns only then where it rewound to
        # (purge_step); the hyperparameters wait for it.
        self._dir = Path(run_dir) / self.log_dir
        self._pending = (config, dict(choices))
        self._resumed = bool(config.get("resume"))
        self._warned = False

    def _open(self, step: int):
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(self._dir), purge_step=step if self._resumed else None,
                               flush_secs=self.flush_secs)
        if self.hparams and self._pending is not None:
            from torch.utils.tensorboard.summary import hparams

            config, choices = self._pending
            values = _flatten({k: v for k, v in config.items() if k not in ("logger", "resume")})
            values.update({f"choices.{k}": str(v) for k, v in choices.items()})
            experiment, session_start, _ = hparams(values, {m: None for m in self.metrics})
            writer.file_writer.add_summary(experiment)
            writer.file_writer.add_summary(session_start)
        return writer

    def log(self, metrics: dict, step: int) -> None:
        if self._dir is None:
            return
        try:
            if self._writer is None:
                self._writer = self._open(step)
            for key, value in metrics.items():
                if key != "global_step" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                        and math.isfinite(value):
                    self._writer.add_scalar(key, value, global_step=step)
        except Exception as err:
            self._fail(f"tensorboard log failed ({_first_line(err)}); continuing without it, local files are kept")

    def summary(self, summary: dict) -> None:
        if self._writer is None:
            return
        step = summary.get("global_step") or 0
        try:
            for key, value in summary.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._writer.add_scalar(f"summary/{key}", value, global_step=step)
        except Exception as err:
            self._fail(f"tensorboard summary failed ({_first_line(err)}); local summary.json is kept")

    def finish(self, exit_code: int = 0) -> None:
        writer, self._writer, self._dir = self._writer, None, None
        if writer is None:
            return
        try:
            if self.hparams:
                writer.file_writer.add_summary(_session_end(exit_code == 0))
            writer.close()
        except Exception as err:
            self._fail(f"tensorboard finish failed ({_first_line(err)}); local files are kept")

    def _fail(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            _log.warning(message)
        writer, self._writer, self._dir = self._writer, None, None
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass


def _session_end(success: bool):
    """The HParams plugin's session-end summary (torch's helper always says success)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.metadata import PLUGIN_DATA_VERSION, PLUGIN_NAME, SESSION_END_INFO_TAG
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo

    info = SessionEndInfo(status=Status.Value("STATUS_SUCCESS" if success else "STATUS_FAILURE"))
    content = HParamsPluginData(session_end_info=info, version=PLUGIN_DATA_VERSION)
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME,
                                                                      content=content.SerializeToString()))
    return Summary(value=[Summary.Value(tag=SESSION_END_INFO_TAG, metadata=metadata)])


# -- several trackers at once ----------------------------------------------------------------

class MultiLogger(RunLogger):
    """Fans every call out to several trackers: ``loggers`` maps a name to a logger node
    (``{_target_: ..., **its options}``), e.g. ``conf/logger/wandb_tensorboard.yaml``; an option
    is overridden as ``logger.loggers.wandb.mode=online``. The children are checked like any
    logger group; the local files are written once, by the run, whatever the children do."""

    def __init__(self, loggers: dict):
        from ..errors import ConfigError
        from .config import check_target_kwargs, construct

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
