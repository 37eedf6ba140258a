"""Run many ``python -m ppo_research`` command lines in one process (the property-based test's
worker): each request is handed to ``ppo_research.run.app.cli`` exactly as ``__main__`` does,
with the process's stdout/stderr file descriptors pointed at per-case files, so whatever the
command prints (Python or C level) is captured. Python start-up and the torch/gymnasium/Hydra
imports are paid once instead of once per case.

Protocol: one JSON request per line on stdin, ``{"argv": [...], "cwd": str, "timeout": s,
"cap": bool}``; one JSON reply per line on the original stdout, ``{"status", "stdout",
"stderr", "escaped", "timed_out", "seconds"}``. ``escaped`` is the traceback of an exception
that got out of ``cli`` (never expected). ``timed_out``: the case was still running after
``timeout`` seconds (it was stopped there; the run had not failed).

``cap``: a test budget, not a change of behaviour under test: at most one training iteration
and at most two evaluation episodes, so that values such as ``total_timesteps=10**12`` or
``eval.episodes=10**12`` (legal, but hours of work) are exercised up to their first iteration.

``fork``: the case runs in a child forked from this process (which has done the imports and
never runs a case itself), so it starts from the state a fresh ``python -m ppo_research`` has
after its imports - nothing an earlier case did carries over - and its exit status is the
child's. A case past ``timeout`` is killed.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
import traceback

CAP = {"on": False}


class CaseTimeout(BaseException):
    """Raised by SIGALRM: a case ran past its time (not an Exception: nothing may swallow it)."""


def _install_cap() -> None:
    from ppo_research.run.loop import evaluation, trainer

    init_trainer, init_eval = trainer.Trainer.__init__, evaluation.Evaluator.__init__

    def capped_trainer(self, *args, **kwargs):
        init_trainer(self, *args, **kwargs)
        if CAP["on"]:
            self.num_iterations = min(self.num_iterations, 1)
            for member in self.members:
                member.record.num_iterations = self.num_iterations

    def capped_evaluator(self, cfg, episodes, *args, **kwargs):
        init_eval(self, cfg, min(episodes, 2) if CAP["on"] else episodes, *args, **kwargs)

    trainer.Trainer.__init__ = capped_trainer
    evaluation.Evaluator.__init__ = capped_evaluator


def _alarm(signum, frame):
    raise CaseTimeout()


def serve() -> None:
    import numpy as np

    from ppo_research.run.app import cli
    from ppo_research.run.envs import bookkeeping

    _install_cap()
    for dtype in (np.float32, np.float64):  # numba and the compiled step, loaded once for every case
        bookkeeping.prepare(dtype)
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    signal.signal(signal.SIGALRM, _alarm)
    scratch = tempfile.mkdtemp(prefix="cli_worker_")
    for line in sys.stdin:
        request = json.loads(line)
        out_path, err_path = os.path.join(scratch, "out"), os.path.join(scratch, "err")
        if request.get("fork"):
            replies.write(json.dumps(_forked(cli, request, out_path, err_path, os.path.join(scratch, "escaped")))
                          + "\n")
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        with open(out_path, "w") as out, open(err_path, "w") as err:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
        os.chdir(request.get("cwd") or scratch)
        CAP["on"] = bool(request.get("cap"))
        status, escaped, timed_out = None, None, False
        start = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, float(request.get("timeout", 60)))
        try:
            try:
                status = cli(list(request["argv"]))
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except CaseTimeout:
            timed_out = True
        except BaseException:  # noqa: BLE001 - what escaped cli is the finding
            escaped = traceback.format_exc()
            status = 1
        seconds = time.monotonic() - start
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        with open(out_path, errors="replace") as f:
            stdout = f.read()
        with open(err_path, errors="replace") as f:
            stderr = f.read()
        replies.write(json.dumps({"status": status, "stdout": stdout[-20000:], "stderr": stderr[-20000:],
                                  "escaped": escaped, "timed_out": timed_out, "seconds": seconds}) + "\n")


def _forked(cli, request: dict, out_path: str, err_path: str, escaped_path: str) -> dict:
    """One case in a forked child: the reply ``serve`` gives for it."""
    for path in (out_path, err_path, escaped_path):
        open(path, "w").close()
    start = time.monotonic()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: the case, then out without returning into the server's loop
        status = 1
        try:
            out, err = os.open(out_path, os.O_WRONLY), os.open(err_path, os.O_WRONLY)
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.chdir(request.get("cwd") or os.path.dirname(out_path))
            CAP["on"] = bool(request.get("cap"))
            try:
                status = cli(list(request["argv"]))
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - what escaped cli is the finding
            with open(escaped_path, "w") as f:
                f.write(traceback.format_exc())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status if isinstance(status, int) and 0 <= status < 256 else 1)
    deadline, timed_out = start + float(request.get("timeout", 60)), False
    while True:
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, wait_status = os.waitpid(pid, 0)
            timed_out = True
            break
        time.sleep(0.01)
    status = None if timed_out else os.waitstatus_to_exitcode(wait_status)
    texts = []
    for path in (out_path, err_path, escaped_path):
        with open(path, errors="replace") as f:
            texts.append(f.read())
    return {"status": status, "stdout": texts[0][-20000:], "stderr": texts[1][-20000:], "escaped": texts[2] or None,
            "timed_out": timed_out, "seconds": time.monotonic() - start}


if __name__ == "__main__":
    serve()
