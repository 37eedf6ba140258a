"""A throwaway PostgreSQL server for tests, from the machine's own binaries.

``/usr/lib/postgresql/<version>/bin/initdb`` and ``pg_ctl`` (Debian's ``postgresql`` package)
make a cluster in a fresh temporary folder with trust authentication, listening on 127.0.0.1 on
a free port; ``stop()`` shuts it down and deletes the folder. PostgreSQL refuses to run as root,
so as root the binaries run as the ``postgres`` system user (``runuser``/``su``) in a folder that
user owns; as anyone else they run as the current user.
"""
from __future__ import annotations

import glob
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

SERVER_USER = "postgres"


def find_bin_dir() -> Optional[Path]:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb and pg_ctl, or None."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
             if os.access(Path(p).parent / "pg_ctl", os.X_OK)]

    def version(path: Path) -> tuple:
        return tuple(int(x) for x in re.findall(r"\d+", path.parent.name)) or (0,)

    return max(found, key=version) if found else None


def unavailable_reason() -> Optional[str]:
    """One line saying why no server can be started here, or None if one can."""
    if find_bin_dir() is None:
        return "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb); apt-get install postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no '{SERVER_USER}' system user to run the server as"
        if not (shutil.which("runuser") or shutil.which("su")):
            return "running as root and neither runuser nor su is available"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -c constraints.txt -e '.[dev]')"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``with PostgresServer() as pg: pg.create_database("x"); pg.url("x")``."""

    def __init__(self) -> None:
        self.bin_dir = find_bin_dir()
        if self.bin_dir is None:
            raise RuntimeError(unavailable_reason())
        self.as_root = os.geteuid() == 0
        self.dir: Optional[Path] = None
        self.port = 0
        self.running = False

    # -- running the binaries as the right user ---------------------------------------------

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_root:
            if shutil.which("runuser"):
                cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
            else:
                cmd = ["su", SERVER_USER, "-s", "/bin/sh", "-c", shlex.join(cmd)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if res.returncode != 0:
            log = self.dir / "server.log" if self.dir else None
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({res.returncode}): {res.stderr.strip()}\n{tail}")
        return res

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "PostgresServer":
        # /tmp rather than pytest's tmp_path: the server user must be able to reach the folder.
        self.dir = Path(tempfile.mkdtemp(prefix="ppo-pg-"))
        if self.as_root:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        data = self.dir / "data"
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C",
                  "--no-sync")
        for attempt in range(3):  # the free port may be taken between the probe and the start
            self.port = free_port()
            options = (f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c synchronous_commit=off "
                       f"-c full_page_writes=off")
            try:
                self._run("pg_ctl", "-D", str(data), "-l", str(self.dir / "server.log"), "-o", options,
                          "-w", "-t", "60", "start")
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        self.running = True
        return self

    def stop(self) -> None:
        if self.dir is None:
            return
        try:
            if self.running:
                self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
                self.running = False
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- databases ----------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) of a database on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def wait_until(predicate, timeout: float, every: float = 0.2) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())
