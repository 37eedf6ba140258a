"""The errors every layer may raise, and the exit statuses the command lines map them to.

Each error's ``str()`` is a single line: the command line prints it after ``error:``.

    0    finished                          3    training diverged (NaN/Inf); last good checkpoint kept
    1    a bug: the traceback is printed   4    I/O error while training (disk full, ...)
    2    bad input, rejected before        130  stopped by SIGINT after a checkpoint
         training (config, resume, output  143  stopped by SIGTERM after a checkpoint
         directory, checkpoint)                 (128 + N for signal N)
"""
from __future__ import annotations

import errno
from typing import Any

EXIT_BUG, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_IO = 1, 2, 3, 4  # 1: a bug (a traceback is logged)

#: OSError numbers that mean "the disk or the directory", not a bug.
IO_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOTDIR,
             errno.EISDIR, errno.ENAMETOOLONG}


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of ``err``'s message (at most ``limit`` characters), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


def described(err: BaseException, limit: int = 200) -> str:
    """``Type: first line`` of ``err``, or its type's name: for a line about a failure nobody raised on purpose."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:limit]}" if text else type(err).__name__


class ConfigError(ValueError):
    """A config value outside what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is invalid: expected {allowed}")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used or written."""


class RunDirError(ValueError):
    """The output directory cannot hold the run."""


class NonFiniteError(FloatingPointError):
    """A loss term or a parameter became NaN/Inf; ``str()`` says what and where."""

    def __init__(self, what: str, where: str = "", iteration: int | None = None):
        self.what, self.where, self.iteration = what, where, iteration
        at = f" at iteration {iteration}" if iteration is not None else ""
        super().__init__(f"{what}{at}{f' ({where})' if where else ''}")

    def at_iteration(self, iteration: int) -> "NonFiniteError":
        return NonFiniteError(self.what, self.where, iteration)


def exit_status(err: BaseException) -> int:
    """The exit status a run that failed with ``err`` ends with (the table above)."""
    if isinstance(err, NonFiniteError):
        return EXIT_DIVERGED
    if isinstance(err, (ConfigError, RunDirError, CheckpointError)):
        return EXIT_IO if isinstance(err.__cause__, OSError) else EXIT_BAD_INPUT  # a failed checkpoint write
    if isinstance(err, OSError) and err.errno in IO_ERRNOS:
        return EXIT_IO
    return EXIT_BUG
