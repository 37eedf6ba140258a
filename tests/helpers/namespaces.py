"""Running a command where a tmpfs is mounted read-only or nearly full, without root's mounts on
the host: in a user and mount namespace of its own (``unshare -rm``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

#: Run inside a user and mount namespace (``unshare -rm``): mounts a tmpfs, writes files there,
#: runs one command line, reports what happened. Root outside still cannot write a read-only
#: mount or past a full one, so these are the real failures, not mode bits root ignores.
NAMESPACE_DRIVER = """
import hashlib, json, os, subprocess, sys
mount_dir, options, files, argv, cwd, report = json.loads(sys.argv[1])
subprocess.run(["mount", "-t", "tmpfs", "-o", options, "none", mount_dir], check=True)
digests = {}
for name, size in files.items():
    data = os.urandom(size)
    with open(os.path.join(mount_dir, name), "wb") as f:
        f.write(data)
    digests[name] = hashlib.sha256(data).hexdigest()
proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
unchanged = {name: hashlib.sha256(open(os.path.join(mount_dir, name), "rb").read()).hexdigest() == digest
             for name, digest in digests.items()}
with open(report, "w") as f:
    json.dump({"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
               "listing": sorted(os.listdir(mount_dir)), "unchanged": unchanged}, f)
"""


def namespaces_available() -> bool:
    import shutil

    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o ro none /mnt"], capture_output=True)
    return probe.returncode == 0


def run_on_tmpfs(tmp_path: Path, options: str, module: str, args: list[str], files: dict[str, int] = {}) -> dict:
    """``python -m module args`` while ``tmp_path/mnt`` is a tmpfs mounted with ``options``
    (``ro``; ``size=64k``) holding ``files`` (name -> size, random bytes). Returns the exit status,
    stdout, stderr, the mount's listing afterwards and, per file, whether it is unchanged."""
    if not namespaces_available():
        pytest.skip("unshare -rm (user and mount namespaces) is not permitted here")
    mount_dir = tmp_path / "mnt"
    mount_dir.mkdir(exist_ok=True)
    report = tmp_path / "namespace_report.json"
    argv = [sys.executable, "-m", module, *args]
    spec = json.dumps([str(mount_dir), options, files, argv, str(tmp_path), str(report)])
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    driver = subprocess.run(["unshare", "-rm", sys.executable, "-c", NAMESPACE_DRIVER, spec], env=env,
                            capture_output=True, text=True, timeout=600)
    assert driver.returncode == 0, driver.stderr
    return json.loads(report.read_text())
