"""The run's files (run/rundir/files.py): a metrics row that a full disk refuses names its file."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest


def test_a_full_disk_during_a_metrics_write_names_the_file():
    from ppo_research.run.rundir.files import MetricsFile

    metrics = MetricsFile(Path("/dev/full"))  # every write: ENOSPC, as a full disk
    with pytest.raises(OSError) as info:
        metrics.write({"iteration": 1})
    metrics.close()  # the refused row is not written again, and closing does not raise
    assert info.value.errno == errno.ENOSPC and info.value.filename == "/dev/full"  # None before
