"""Every failure maps to the exit status the table in ppo_research/errors.py promises; the run
command (run/jobs.py) and the re-run tool (tools/rerun.py) both use this one mapping."""
from __future__ import annotations

import errno

import pytest

from ppo_research import errors
from ppo_research.errors import CheckpointError, ConfigError, NonFiniteError, RunDirError, exit_status


def caused_by(err: BaseException, cause: BaseException) -> BaseException:
    err.__cause__ = cause
    return err


@pytest.mark.parametrize("err, status", [
    (NonFiniteError("loss is NaN", iteration=3), errors.EXIT_DIVERGED),
    (ConfigError("algo.gamma", 2.0, "a number in [0, 1]"), errors.EXIT_BAD_INPUT),
    (RunDirError("output directory x already holds a run"), errors.EXIT_BAD_INPUT),
    (CheckpointError("checksum mismatch"), errors.EXIT_BAD_INPUT),
    (caused_by(CheckpointError("cannot write ckpt_4.pt"), OSError(errno.ENOSPC, "No space left")), errors.EXIT_IO),
    (OSError(errno.ENOSPC, "No space left on device"), errors.EXIT_IO),
    (PermissionError(errno.EACCES, "Permission denied"), errors.EXIT_IO),
    (OSError(errno.EBADF, "Bad file descriptor"), errors.EXIT_BUG),  # not the disk's fault: a bug
    (ZeroDivisionError("division by zero"), errors.EXIT_BUG),
])
def test_each_failure_has_its_documented_exit_status(err, status):
    assert exit_status(err) == status
