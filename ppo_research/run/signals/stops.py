"""Stop requests: SIGINT/SIGTERM finish the current iteration and checkpoint; a second signal
exits at once. Worker processes (a sweep's, the population launcher's) also take their
command's stop, passed on as FORWARDED. In a submitit (SLURM) job, the job's time-limit/preemption warning signal
(SIGUSR2 by default) stops the same way and then requeues the job (run/signals/preemption.py)."""
from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Optional


@contextlib.contextmanager
def sigint_deferred():
    """Hold SIGINT back while native code runs that a KeyboardInterrupt must not enter: torch's
    C++ start-up (one there can end in std::terminate), numba's compiler (one raised in its
    ctypes callbacks was printed and dropped, and the run went on). The main thread blocks
    SIGINT; one that another thread receives meanwhile is only noted. Either way it reaches the
    previous handler right after (a KeyboardInterrupt at a safe point)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted = []
    if signal.getsignal(signal.SIGINT) is None:  # a handler not installed from Python: nothing can put it back
        yield
        return
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    previous_handler = signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)  # a blocked one is delivered here
        if noted:
            signal.raise_signal(signal.SIGINT)


class TrainingInterrupted(KeyboardInterrupt):
    """A signal stopped training cleanly at an iteration boundary, after a checkpoint.

    A KeyboardInterrupt, so ``except Exception`` (Hydra's job runner, optuna's trial runner)
    lets it through: a stop request ends a multirun or a study instead of becoming a failed job.
    A stop by a submitit job's warning signal is followed by a requeue (``preemption.after_stop``).
    """

    def __init__(self, signum: int, iteration: int, checkpoint: Path):
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint
        self.continue_with: Optional[str] = None  # the command that continues it, if not resume=<run dir>
        self.ended: dict = {}  # a population's members that ended before the stop (job index -> why)
        super().__init__(f"stopped by {signal.Signals(signum).name} after iteration {iteration}; "
                         f"checkpoint {checkpoint}")


def _say(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


_handler_kept = False  # a stop left its handler installed: the process is on its way out

# The stop a command passes on to its worker processes (a sweep's --workers, the population
# launcher's populations) when it is asked to stop. Not SIGTERM itself: Ctrl-C in a terminal,
# scancel and systemd signal every process of the job as well, and a worker must not take the
# command's copy for a second signal.
FORWARDED = signal.SIGUSR1
_forwarder: Optional[str] = None  # this process is such a worker: who passes stops on to it
_forwarded_before = False  # a forwarded stop arrived while no trainer listened


def forwarded_stop_pending() -> bool:
    return _forwarded_before


def listen_for_forwarded_stops(forwarder: str) -> None:
    """In a worker process, for its whole life (``forwarder`` names the command in messages): a
    forwarded stop that arrives while no trainer listens (between trials, while one is built)
    is kept for the next trainer, which stops after its first iteration. Unblocks FORWARDED
    (the command starts its workers with it blocked, so one sent during their start-up waits
    instead of killing them)."""
    def note(signum, frame):
        global _forwarded_before
        if not _forwarded_before:
            _say(f"\n{forwarder} is stopping, and so does this process (a training it starts stops after "
                 f"its first iteration, with a checkpoint)\n")
        _forwarded_before = True

    global _forwarder
    _forwarder = forwarder
    signal.signal(FORWARDED, note)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {FORWARDED})


@contextlib.contextmanager
def starting_workers():
    """Around starting worker processes: they start with FORWARDED blocked (listen_for_forwarded_stops
    unblocks it), so a stop passed on before they listen is kept, not their death."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {FORWARDED})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class StopRequests:
    """Remembers the first stop signal; the trainer honours it between iterations."""

    def __init__(self):
        self.signal: Optional[int] = None  # the stop's signal, as the run reports it
        self.forwarded = False  # the stop came from the command that started this worker

    @contextlib.contextmanager
    def listening(self, warning=None, signals=(signal.SIGINT, signal.SIGTERM)):
        """Take over the stop signals while training; ``warning``: a submitit job's time-limit or
        preemption warning (``preemption.JobWarning``), a stop that requeues the job."""
        if threading.current_thread() is not threading.main_thread():
            yield  # Python delivers signals to the main thread only
            return

        warn = warning.signum if warning is not None else None
        own = signals  # the signals sent to this process itself
        if _forwarder and warn != FORWARDED:
            signals = (*signals, FORWARDED)
            if _forwarded_before and self.signal is None:
                self.signal, self.forwarded = signal.SIGTERM, True
        if warning is not None and warning.pending is not None and warning.pending() and self.signal is None:
            self.signal = warn  # the warning came before this trainer listened: stop after the first iteration

        def handler(signum, frame):
            name = signal.Signals(signum).name
            if signum == FORWARDED or (self.forwarded and signum in own):
                if self.signal is None:  # reported as a SIGTERM: the command was asked to stop
                    self.signal, self.forwarded = signal.SIGTERM, True
                    _say(f"\n{_forwarder} is stopping: finishing the current iteration, then writing a checkpoint\n")
                    return
                if not self.forwarded or signum != FORWARDED:
                    # a stop of its own already under way, or the command's stop reaching this
                    # process directly too (Ctrl-C's process group, scancel, systemd): the same request
                    self.forwarded = False
                    return
                _say(f"\n{_forwarder} was asked again: exiting at once, " +
                     ("the stop's checkpoint is written\n" if _handler_kept else "without a checkpoint\n"))
                os._exit(128 + signal.SIGTERM)
            if signum == warn:
                if self.signal == warn:
                    return  # already stopping for a requeue
                again = self.signal is not None
                self.signal = signum  # a pending SIGTERM/SIGINT stop becomes a stop-and-requeue
                _say(f"\n{name}: the job's time limit or a preemption is near: "
                     f"{'after this iteration' if again else 'finishing the current iteration, then'} writing a "
                     f"checkpoint and requeueing the job\n")
                return
            if self.signal is not None and self.signal == warn and signum == signal.SIGTERM:
                # SLURM follows its warning with SIGTERM when it ends the job anyway (KillWait
                # seconds before SIGKILL): cutting the iteration short would lose the checkpoint.
                _say(f"\n{name}: already stopping after this iteration to requeue the job\n")
                return
            if self.signal is not None:
                _say(f"\n{name} again: exiting at once, " + ("the stop's checkpoint is written\n" if _handler_kept
                                                            else "without a checkpoint\n"))
                os._exit(128 + signum)
            self.signal = signum
            _say(f"\n{name}: finishing the current iteration, then writing a checkpoint "
                 f"(send it again to exit at once)\n")

        previous = {s: signal.signal(s, handler) for s in signals}
        if warning is not None and warn not in previous:
            previous[warn] = signal.signal(warn, handler)
        try:
            yield
        finally:
            # After a stop the process is on its way out (checkpoint written, run closing): a
            # second signal must still exit at once with 128 + signum, not meet the default handler.
            global _handler_kept
            stopping = self.signal is not None and self.signal != warn
            _handler_kept = _handler_kept or stopping
            for s, old in previous.items():
                if not (stopping and s in signals):
                    signal.signal(s, old)


def exit_process(status: int, at_once: bool = False) -> None:
    """``sys.exit(status)``, except after a stop: then keep the stop handler to the end.

    CPython's teardown (half a second with torch loaded) puts the default handlers back, so a
    second signal there would kill the process by signal instead of exiting 128 + signum. After
    a stop the exit handlers (wandb's) still run, under the stop handler, and the module
    teardown is skipped. ``at_once``: skip the exit handlers too (streams are still flushed)."""
    if not (_handler_kept or at_once):
        sys.exit(status)
    if not at_once:
        atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
