"""Stop requests: SIGINT/SIGTERM finish the current iteration and checkpoint; a second signal
exits at once."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Optional


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training cleanly at an iteration boundary, after a checkpoint.

    A KeyboardInterrupt, so ``except Exception`` (Hydra's job runner, optuna's trial runner)
    lets it through: a stop request ends a multirun or a study instead of becoming a failed job.
    """

    def __init__(self, signum: int, iteration: int, checkpoint: Path):
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} after iteration {iteration}; "
                         f"checkpoint {checkpoint}")


class StopRequests:
    """Remembers the first SIGINT/SIGTERM; the trainer honours it between iterations."""

    def __init__(self):
        self.signal: Optional[int] = None

    @contextlib.contextmanager
    def listening(self, signals=(signal.SIGINT, signal.SIGTERM)):
        if threading.current_thread() is not threading.main_thread():
            yield  # Python delivers signals to the main thread only
            return

        def handler(signum, frame):
            name = signal.Signals(signum).name
            if self.signal is not None:
                sys.stderr.write(f"\n{name} again: exiting at once, without a checkpoint\n")
                sys.stderr.flush()
                os._exit(128 + signum)
            self.signal = signum
            sys.stderr.write(f"\n{name}: finishing the current iteration, then writing a checkpoint "
                             f"(send it again to exit at once)\n")
            sys.stderr.flush()

        previous = {s: signal.signal(s, handler) for s in signals}
        try:
            yield
        finally:
            for s, old in previous.items():
                signal.signal(s, old)
