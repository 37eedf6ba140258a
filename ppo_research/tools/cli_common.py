"""What the after-training tools (play, export, report, bench, paper) share on the command line:
usage errors and failures as one ``error:`` line, and their output files.

An output is checked before anything runs (``check_output_file``, ``check_output_dir``): a path
that cannot hold it (a directory where a file goes, a file where a directory goes, a parent that
is a file, a read-only or pseudo file system such as /proc) is bad input, one line and exit
status 2, and nothing has been computed yet. The check creates and removes a probe file in the
directory, so it sees what the kernel allows (root included), not what the mode bits say.

``write_output`` then writes a file whole: a regular file through a temporary file beside it,
flushed to disk and renamed over the target, so a failure (disk full, quota) leaves whatever was
there before untouched; a device or a pipe (``/dev/stdout``, ``/dev/full``) is written in place.
A failure while writing is an ``OutputError`` with exit status 4 (``EXIT_IO``).
"""
from __future__ import annotations

import argparse
import os
import secrets
import stat
from pathlib import Path
from typing import Union

from ..errors import EXIT_BAD_INPUT, EXIT_IO
from ..run.console import write_line

PathLike = Union[str, os.PathLike]


def error_line(message: str) -> None:
    """``error: <message>`` on stderr, one write."""
    write_line(f"error: {message}")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``error:`` line and exit status 2."""

    def error(self, message: str):
        error_line(f"{message} (see {self.prog} --help)")
        raise SystemExit(EXIT_BAD_INPUT)


class OutputError(Exception):
    """An output that cannot be written; ``str()`` is one line, ``status`` the exit status:
    EXIT_BAD_INPUT (2) when the path was refused before anything ran, EXIT_IO (4) when writing
    failed."""

    def __init__(self, message: str, status: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.status = status


def _label(path: Path, what: str) -> str:
    return f"{what} {path}" if what else str(path)


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _probe(directory: Path, label: str) -> None:
    """Create and remove a file in ``directory``: OutputError (status 2) if the kernel refuses."""
    probe = directory / f".write-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as err:
        raise OutputError(f"cannot write {label}: cannot create files in {directory} "
                          f"({err.strerror or type(err).__name__})") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass


def _kind(path: Path) -> str | None:
    """"dir", "file", "special" (a device, a pipe: what ``path`` leads to, magic links such as
    /dev/stdout included), or None where nothing is there yet (or it cannot be looked at)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "special"


def check_output_file(path: PathLike, what: str = "", make_parents: bool = False) -> None:
    """Refuse now (OutputError, exit status 2) a ``path`` where a file cannot be written:
    a directory, a parent that is missing (unless ``make_parents``) or a file, a directory where
    files cannot be created, a read-only file, a device that cannot be opened for writing."""
    path = Path(path)
    label = _label(path, what)
    kind = _kind(path)
    if kind == "dir":
        raise OutputError(f"cannot write {label}: it is a directory")
    if kind == "special":  # a device or a pipe: written in place
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as err:
            raise OutputError(f"cannot write {label}: {err.strerror or type(err).__name__}") from None
        return
    real = Path(os.path.realpath(path))
    if kind == "file" and not os.access(real, os.W_OK):
        raise OutputError(f"cannot write {label}: the file is read-only")
    existing = _nearest_existing(real.parent)
    if not existing.is_dir():
        raise OutputError(f"cannot write {label}: {existing} is not a directory")
    if existing != real.parent and not make_parents:
        raise OutputError(f"cannot write {label}: directory {path.parent} does not exist")
    _probe(existing, label)


def check_output_dir(path: PathLike, what: str = "") -> None:
    """Refuse now (OutputError, exit status 2) a ``path`` that cannot become a directory of new
    files: an existing file, a parent that is a file, a place where files cannot be created."""
    path = Path(path)
    label = _label(path, what)
    real = Path(os.path.realpath(path))
    if real.exists() and not real.is_dir():
        raise OutputError(f"cannot write {label}: it is a file, not a directory")
    existing = _nearest_existing(real)
    if not existing.is_dir():
        raise OutputError(f"cannot write {label}: {existing} is not a directory")
    _probe(existing, label)


def make_output_dir(path: PathLike, what: str = "") -> Path:
    """``mkdir -p path``; OutputError (exit status 4) if it fails."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot write {_label(path, what)}: {err.strerror or type(err).__name__}"
                          f"{f' ({err.filename})' if err.filename and str(err.filename) != str(path) else ''}",
                          EXIT_IO) from None
    return path


def write_output(path: PathLike, data: Union[bytes, str], what: str = "") -> Path:
    """Write ``data`` to ``path`` whole (str as UTF-8). A regular file (or a new one) goes
    through a temporary file in the same directory, fsynced, then renamed over ``path``: if
    anything fails, ``path`` keeps what it held. A device or a pipe is written in place.
    OSError becomes OutputError with exit status 4 (EXIT_IO)."""
    path = Path(path)
    label = _label(path, what)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    try:
        if _kind(path) == "special":
            _write_all(path, payload, os.O_WRONLY)
            return path
        real = Path(os.path.realpath(path))  # a link to a file: the file is replaced, the link kept
        mode = stat.S_IMODE(real.stat().st_mode) if _kind(real) == "file" else None
    except OSError as err:
        raise OutputError(f"cannot write {label}: {err.strerror or type(err).__name__}", EXIT_IO) from None
    temp = real.with_name(f".{real.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        _write_all(temp, payload, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.replace(temp, real)
    except OSError as err:
        try:
            os.unlink(temp)
        except OSError:
            pass
        kept = f"; {path} is as it was" if mode is not None else ""
        raise OutputError(f"cannot write {label}: {err.strerror or type(err).__name__}{kept}", EXIT_IO) from None
    return path


def _write_all(path: Path, payload: bytes, flags: int, mode: int | None = None) -> None:
    fd = os.open(path, flags, 0o666)  # the umask applies, as for any new file
    try:
        if mode is not None:
            os.fchmod(fd, mode)  # replacing a file keeps its permissions
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fsync(fd)
    finally:
        os.close(fd)
