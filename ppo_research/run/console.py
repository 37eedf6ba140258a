"""What a run shows on the console: a progress line per iteration (or a bar on a terminal) and
one line at the end.

Lines go to stderr whole: each is a single ``os.write`` of the text and its newline, so the
jobs of a multirun that share the terminal or a log file (the joblib launcher's processes)
never fuse two lines into one; a line up to PIPE_BUF (4096 bytes) is atomic on a pipe. Under a
multirun every line starts with ``[job N]`` (Hydra's ``job.num``). On a terminal the lines
become a tqdm bar with the latest statistics; redirected, they stay plain lines, one per
iteration, which logs and ``grep`` can read.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import IO, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from ..errors import EXIT_BAD_INPUT


def job_number() -> Optional[int]:
    """Hydra's ``job.num`` when this process runs a multirun job, else None."""
    try:

        if not HydraConfig.initialized():
            return None
        config = HydraConfig.get()
        return int(config.job.num) if config.mode == RunMode.MULTIRUN else None
    except Exception:  # a partial Hydra config (compose API): not a multirun job
        return None


def job_prefix(job: Optional[int] = None) -> str:
    job = job_number() if job is None else job
    return "" if job is None else f"[job {job}] "


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """One ``error:`` line and exit with ``code`` (bad input by default)."""
    write_line(f"error: {message}")
    sys.exit(code)


def write_line(text: str, stream: Optional[IO[str]] = None) -> None:
    """Write ``text`` and a newline with one ``os.write`` of the stream's file descriptor.

    Streams without one (pytest's capture, StringIO) get a single ``write`` of the whole line.
    """
    stream = sys.stderr if stream is None else stream
    line = text.rstrip("\n") + "\n"
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        stream.write(line)
        stream.flush()
        return
    stream.flush()  # whatever Python still buffers goes first, in order
    data = line.encode(getattr(stream, "encoding", None) or "utf-8", errors="replace")
    while data:  # one call for any line a pipe takes atomically; the loop only for a partial write
        written = os.write(fd, data)
        data = data[written:]


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, OSError, ValueError):
        return False


def terminal_columns(stream: IO[str]) -> int:
    """The terminal's width, 0 when it does not say (a pseudo-terminal nobody sized)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def _fallback_columns() -> int:
    try:
        return max(40, int(os.environ.get("COLUMNS", "")))
    except ValueError:
        return 120


class Progress:
    """Per-iteration progress: plain lines, or a tqdm bar when ``stream`` is a terminal."""

    def __init__(self, total: int, stream: Optional[IO[str]] = None, bar: Optional[bool] = None,
                 job: Optional[int] = None):
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        self.prefix = job_prefix(job)
        self.use_bar = is_terminal(self.stream) if bar is None else bar
        self._bar = None

    def update(self, iteration: int, line: str) -> None:
        """Iteration ``iteration`` of ``total`` is done; ``line`` says how it went."""
        if not self.use_bar:
            write_line(self.prefix + line, self.stream)
            return
        if self._bar is None:
            from tqdm import tqdm

            columns = terminal_columns(self.stream)
            self._bar = tqdm(total=self.total, initial=iteration - 1, file=self.stream, unit="it",
                             desc=self.prefix.strip() or "train", leave=True,
                             **({"dynamic_ncols": True} if columns else {"ncols": _fallback_columns()}))
        # the bar shows the iteration count and rate; the rest of the line is its postfix
        stats = line.split(" | ", 1)[1] if " | " in line else line
        self._bar.set_postfix_str(stats, refresh=False)
        self._bar.update(iteration - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s"


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def end_line(run_dir: Path, summary: dict, upload_hint: Optional[str] = None, job: Optional[int] = None) -> str:
    """``done: <run dir> | <steps> steps in <wall time> | eval <mean> ± <std> (<n> episodes)
    [| upload: wandb sync <dir>]``, with ``[job N]`` first under a multirun."""
    parts = [f"done: {_shown(run_dir)}",
             f"{summary.get('global_step', 0)} steps in {_duration(summary.get('wall_time_s') or 0.0)}"]
    if summary.get("eval_return") is not None:
        parts.append(f"eval {summary['eval_return']:.2f} ± {summary.get('eval_return_std') or 0.0:.2f} "
                     f"({summary.get('eval_episodes', '?')} episodes)")
    elif summary.get("train_return") is not None:
        parts.append(f"train return {summary['train_return']:.2f} (no evaluation)")
    if upload_hint:
        parts.append(f"upload: {upload_hint}")
    return job_prefix(job) + " | ".join(parts)


def print_end_line(run_dir: Path, summary: dict, logger=None, stream: Optional[IO[str]] = None) -> None:
    """The run's last line on stderr (``logger`` supplies the offline-upload command, if any)."""
    hint = None
    if logger is not None:
        try:
            hint = logger.upload_hint()
        except Exception:
            hint = None
    write_line(end_line(run_dir, summary, hint), stream)


class SacctSaidOnce(logging.Filter):
    """submitit (behind ``hydra/launcher=submitit_slurm`` and ``population_slurm``) asks ``sacct``
    for its jobs' states at every poll (seconds apart at first, the gaps doubling up to ten
    minutes) and, where SLURM keeps no accounting (scripts/slurm_one_node.sh's cluster, some small
    clusters), warns at each one, three lines a time. It then waits for the jobs' result files,
    which is all a launcher needs, so that is said once, in one line, and the repeats are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        if not self.said:
            self.said = True
            write_line("note: sacct does not answer (SLURM keeps no job accounting here?): the launcher waits "
                       "for the jobs' result files instead")
        return False


def say_sacct_once() -> None:
    """Install ``SacctSaidOnce`` on submitit's logger (once; harmless where submitit is unused)."""
    submitit_log = logging.getLogger("submitit")
    if not any(isinstance(f, SacctSaidOnce) for f in submitit_log.filters):
        submitit_log.addFilter(SacctSaidOnce())
