"""One owner per run directory: an exclusive ``flock`` on ``<run dir>/.owner.lock``.

Whoever writes a run directory (a fresh run, a resume, a sweep trial) holds the lock while it
does. The kernel drops a ``flock`` when the last descriptor of its open file closes, so the lock
disappears by itself when its process dies, SIGKILL included: a resume after a crash needs no
cleanup, and a stale lock file (it stays, holding the last owner's pid) means nothing.

A second writer is refused at once with one line naming the owning process. The hold is
re-entrant within a process (the command line takes it before Hydra writes anything, the run
takes it again), and forked children (gymnasium's async env workers) close their inherited copy
so that only the owner itself keeps the lock alive.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

from ...errors import RunDirError

LOCK_FILE = ".owner.lock"

#: run dir (resolved) -> [descriptor, hold count] of the locks this process holds
_held: dict[Path, list[int]] = {}


class RunDirBusy(RunDirError):
    """Another live process owns the run directory."""

    def __init__(self, run_dir: Path, pid: Optional[int], command: str):
        self.run_dir, self.pid, self.command = run_dir, pid, command
        who = f"process {pid}" if pid else "another process"
        what = f" ({command})" if command else ""
        super().__init__(f"run directory {run_dir} is in use by {who}{what}: one run directory has one writer; "
                         f"wait for it to end or stop it, or choose another directory")


#: files that show a run lives in a directory (checkpoints/ckpt_*.pt too)
RUN_FILES = ("run.json", "metrics.jsonl", "summary.json")


def holds_a_run(run_dir: Path) -> list[str]:
    """What in ``run_dir`` shows that a run already lives there (empty: nothing does)."""
    run_dir = Path(run_dir)
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if any((run_dir / "checkpoints").glob("ckpt_*.pt")):
        found.append("checkpoints/")
    return found


def _key(run_dir: Path) -> Path:
    return Path(os.path.abspath(run_dir))


def _describe_self() -> str:
    program = "python -m ppo_research" if sys.argv and sys.argv[0].endswith("__main__.py") else \
        f"python {os.path.basename(sys.argv[0]) if sys.argv else ''}"
    command = " ".join([program, *sys.argv[1:]])
    return f"{os.getpid()}\n{command if len(command) <= 160 else command[:157] + '...'}\n"


def _read_owner(fd: int) -> tuple[Optional[int], str]:
    """(pid, command line) the current owner wrote; it writes them right after locking, so an
    empty or stale file is re-read for a moment."""
    pid, command = None, ""
    for _ in range(40):
        try:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        except OSError:
            text = ""
        first, _, rest = text.partition("\n")
        if first.strip().isdigit():
            pid, command = int(first), rest.strip()
            try:
                os.kill(pid, 0)
                return pid, command
            except ProcessLookupError:
                pass  # the previous owner's line; the new one is about to overwrite it
            except PermissionError:
                return pid, command
        time.sleep(0.025)
    return pid, command


def owner_of(run_dir: Path) -> Optional[int]:
    """The pid of the live process holding ``run_dir``, or None (not locked, or by us)."""
    refusal = busy(run_dir)
    return None if refusal is None else (refusal.pid or -1)


def busy(run_dir: Path) -> Optional[RunDirBusy]:
    """The refusal a writer of ``run_dir`` would get now (another live process holds it), or None;
    takes nothing and creates nothing."""
    path = Path(run_dir) / LOCK_FILE
    if _key(run_dir) in _held or not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, command = _read_owner(fd)
            return RunDirBusy(_key(run_dir), pid, command)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def acquire(run_dir: Path) -> None:
    """Take (or, if this process has it already, count once more) the lock of ``run_dir``,
    creating the directory. Raises RunDirBusy if another live process holds it, RunDirError if
    the lock file cannot be made."""
    key = _key(run_dir)
    if key in _held:
        _held[key][1] += 1
        return
    try:
        key.mkdir(parents=True, exist_ok=True)
        fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise RunDirError(f"output directory {run_dir} is not writable: {err.strerror or err}"
                          f"{f' ({err.filename})' if err.filename else ''}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            os.close(fd)
            raise RunDirError(f"cannot lock output directory {run_dir}: {err.strerror or err}") from None
        pid, command = _read_owner(fd)
        os.close(fd)
        raise RunDirBusy(key, pid, command) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, _describe_self().encode(), 0)
    except OSError:
        pass  # the lock holds without its note; a refused writer then names no pid
    _held[key] = [fd, 1]


def release(run_dir: Path) -> None:
    """Undo one ``acquire``; the last one closes the descriptor, which drops the lock."""
    key = _key(run_dir)
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _held[key]
        os.close(entry[0])


@contextlib.contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    acquire(run_dir)
    try:
        yield
    finally:
        release(run_dir)


def holds(run_dir: Path) -> bool:
    return _key(run_dir) in _held


def _close_in_child() -> None:
    """A forked child must not keep its parent's locks alive after the parent dies."""
    for fd, _ in _held.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)
