"""Step 5 of the loop: what a run records of each iteration and at its end.

``metrics.jsonl`` gets one row per iteration, the tracker a copy of it, stderr a progress line;
``summary.json`` is written at the end. The statistics that outlive an iteration (recent
training returns, the last evaluation) live here and go into checkpoints.
"""
from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Optional

import numpy as np

from ...algo.batch import Rollout
from ..console import Progress, write_line
from ..loggers.base import RunLogger
from ..rundir.files import MetricsFile, write_json_atomic

#: the update statistics every metrics row carries, in this order (a skipped update: only epochs = 0)
UPDATE_KEYS = ("policy_loss", "value_loss", "entropy", "kl", "clip_fraction", "approx_kl_k3", "ratio_min",
               "ratio_max", "epochs")

#: why an iteration can take no update step, as the one-time warning says
NO_VALID_SAMPLE = ("no valid sample: every env was on the reset step that follows an episode end "
                   "(possible only with algo.num_steps=1)")


def explained_variance(rollout: Rollout, advantages: np.ndarray) -> float:
    """1 - Var[R - V] / Var[R] over the valid steps (nan when the targets do not vary)."""
    valid = rollout.valid
    if not valid.any():
        return float("nan")
    returns = (advantages + rollout.values)[valid]
    var_returns = returns.var()
    return float("nan") if var_returns == 0 else float(1.0 - (returns - rollout.values[valid]).var() / var_returns)


class RunRecord:
    def __init__(self, run_dir: Path, logger: RunLogger, num_iterations: int, progress: bool):
        self.run_dir, self.logger = Path(run_dir), logger
        self.num_iterations, self.progress = num_iterations, progress
        self.recent_returns: deque[float] = deque(maxlen=100)
        self.last_eval: Optional[np.ndarray] = None
        self.metrics: Optional[MetricsFile] = None
        self._warned_skip = False  # the no-valid-sample warning is printed once per run
        self.console: Optional[Progress] = None  # progress lines, or a bar on a terminal (run/console.py)

    def row(self, iteration: int, global_step: int, stats: dict, episodes: list[tuple[float, int]],
            learning_rate: float, loss_values: dict, explained: float) -> dict:
        """The metrics row of one iteration (timings are filled in by the trainer).

        ``loss_values``: the loss's state at the end of the iteration (``beta``, and for beta
        adapted within the iteration ``beta_min``/``beta_max``/``kl_last``). An iteration whose
        update was skipped (``stats["update_skipped"]``: no valid sample) has
        ``update_skipped: true``, ``epochs: 0`` and no other update statistic; the first such
        iteration of a run also prints one warning line to stderr."""
        row = {"iteration": iteration, "global_step": global_step, "time_s": None, "sps": None}
        if episodes:
            self.recent_returns.extend(r for r, _ in episodes)
            row["episode_return"] = float(np.mean([r for r, _ in episodes]))
            row["episode_length"] = float(np.mean([n for _, n in episodes]))
            row["episodes"] = len(episodes)
        if stats.get("update_skipped"):
            row["update_skipped"] = True
            row["epochs"] = 0
            if not self._warned_skip:
                self._warned_skip = True
                write_line(f"warning: iteration {iteration} had {NO_VALID_SAMPLE}; its update was skipped and its "
                      "metrics row says update_skipped=true (later ones only in their rows)")
        else:
            row.update({k: stats[k] for k in UPDATE_KEYS})
        row.update(loss_values)
        row["learning_rate"] = learning_rate
        row["explained_variance"] = explained
        return row

    def evaluation(self, returns: np.ndarray) -> dict:
        self.last_eval = returns
        return {"eval_return": float(returns.mean()), "eval_return_std": float(returns.std())}

    def open(self) -> None:
        self.metrics = MetricsFile(self.run_dir / "metrics.jsonl")

    def write(self, row: dict) -> None:
        self.metrics.write(row)
        self.logger.log(row, step=row["global_step"])
        if self.progress:
            if self.console is None:
                self.console = Progress(self.num_iterations)
            self.console.update(row["iteration"], self.progress_line(row))

    def progress_line(self, row: dict) -> str:
        parts = [f"iter {row['iteration']}/{self.num_iterations}", f"step {row['global_step']}",
                 f"sps {row['sps']:.0f}"]
        if "episode_return" in row:
            parts.append(f"return {row['episode_return']:.1f}")
        if "eval_return" in row:
            parts.append(f"eval {row['eval_return']:.1f}")
        if "beta" in row:
            parts.append(f"beta {row['beta']:.3g}")
        if row.get("update_skipped"):
            parts.append("update skipped (no valid sample)")
        else:
            parts.append(f"kl {row['kl']:.4f}")
        return " | ".join(parts)

    def summary(self, global_step: int, iterations: int, elapsed: float) -> dict:
        self.close_console()  # the bar ends before the run's end line
        recent = list(self.recent_returns)
        summary = {"global_step": global_step, "iterations": iterations,
                   "wall_time_s": elapsed, "sps": global_step / max(elapsed, 1e-9),
                   "train_return": float(np.mean(recent[-20:])) if recent else None,
                   "train_return_last100": float(np.mean(recent)) if recent else None}
        if self.last_eval is not None:
            summary.update(eval_return=float(self.last_eval.mean()), eval_return_std=float(self.last_eval.std()),
                           eval_episodes=len(self.last_eval))
        write_json_atomic(self.run_dir / "summary.json", summary)
        self.logger.summary(summary)
        return summary

    def state_dict(self) -> dict:
        return {"recent_returns": list(self.recent_returns), "last_eval": self.last_eval}

    def load_state_dict(self, state: dict) -> None:
        self.recent_returns.clear()
        self.recent_returns.extend(state["recent_returns"])
        self.last_eval = state["last_eval"]

    def close_console(self) -> None:
        if self.console is not None:
            self.console.close()
            self.console = None

    def close(self) -> None:
        self.close_console()
        if self.metrics is not None:
            self.metrics.close()
