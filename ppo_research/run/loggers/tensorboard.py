"""``logger=tensorboard``: the metrics rows as TensorBoard scalars, the config as its hparams."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Optional

from ...errors import ConfigError, described
from .base import RunLogger

# torch.utils.tensorboard needs the `tensorboard` extra: imported where used, by logger=tensorboard runs only.

_log = logging.getLogger(__name__)


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
            self._fail(f"tensorboard log failed ({described(err)}); continuing without it, local files are kept")

    def summary(self, summary: dict) -> None:
        if self._writer is None:
            return
        step = summary.get("global_step") or 0
        try:
            for key, value in summary.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._writer.add_scalar(f"summary/{key}", value, global_step=step)
        except Exception as err:
            self._fail(f"tensorboard summary failed ({described(err)}); local summary.json is kept")

    def finish(self, exit_code: int = 0) -> None:
        writer, self._writer, self._dir = self._writer, None, None
        if writer is None:
            return
        try:
            if self.hparams:
                writer.file_writer.add_summary(_session_end(exit_code == 0))
            writer.close()
        except Exception as err:
            self._fail(f"tensorboard finish failed ({described(err)}); local files are kept")

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
