"""The repo's one-node SLURM cluster as the cluster tests see it: commands that answer or not, the
default partition, and the ``Key=value`` records of scontrol and the jobcomp file.

Start the cluster with ``scripts/slurm_one_node.sh start`` (as root); .ci/run does so before the
tests. The ``partition`` fixture (tests/cluster/conftest.py) skips without a cluster, or fails
with PPO_RESEARCH_REQUIRE_CLUSTER=1 (set by .ci/run), so CI cannot pass by skipping."""
from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest


def cmd(*args: str, timeout: float = 20) -> Optional[str]:
    """The command's stdout, or None when it fails or does not answer within ``timeout`` s."""
    try:
        res = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def default_partition() -> tuple[Optional[str], str]:
    """(partition, "") when the default partition has a node that can run jobs, else (None, why)."""
    if not shutil.which("sinfo"):
        return None, "no SLURM here (sinfo not found); start one with: sudo scripts/slurm_one_node.sh start"
    out = cmd("sinfo", "-h", "-o", "%P %t")
    if out is None:
        return None, "sinfo gets no answer from slurmctld; start it with: sudo scripts/slurm_one_node.sh start"
    rows = [line.split() for line in out.splitlines() if line.strip()]
    default = [(name[:-1], state) for name, state in rows if name.endswith("*")]
    if not default:
        return None, "SLURM has no default partition"
    for name, state in default:  # one row per node state; "*" after a state: the node does not respond
        if not state.endswith("*") and state.rstrip("~#$@") in ("idle", "mix", "alloc", "comp"):
            return name, ""
    return None, f"the default partition {default[0][0]} has no responding node " \
                 f"(states: {', '.join(s for _, s in default)})"


def config_value(key: str) -> Optional[str]:
    """A value of ``scontrol show config`` (None when unset or no answer)."""
    out = cmd("scontrol", "show", "config") or ""
    match = re.search(rf"^{key}\s*=\s*(\S*)", out, re.MULTILINE)
    return match.group(1) if match else None


def fields(line: str) -> dict[str, str]:
    """``Key=value Key=value`` (scontrol -o, jobcomp/filetxt lines) as a dict."""
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


def job_record(job: str) -> dict[str, str]:
    """``scontrol -o show job`` of one job as a dict ({} once SLURM has forgotten it)."""
    out = cmd("scontrol", "-o", "show", "job", job) or ""
    return fields(out.splitlines()[0]) if out.strip() else {}


JOB_STATES_RUNNING = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD")


def wait(condition, timeout: float, what: str, poll: float = 0.1):
    """``condition()``'s first true value, polled; the test fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def written_rows(path: Path) -> int:
    """The complete rows of a metrics.jsonl being written (a row in flight is not counted)."""
    try:
        return sum(1 for line in path.read_text().splitlines() if line.endswith("}"))
    except OSError:
        return 0


def final_record(job: str, timeout: float = 60) -> dict[str, str]:
    """``scontrol``'s record of ``job`` once it has ended."""
    return wait(lambda: (lambda r: r if r.get("JobState") not in JOB_STATES_RUNNING else None)(job_record(job)),
                timeout, f"SLURM to record the end of job {job}")


def jobcomp_attempts(job: str) -> Optional[list[dict[str, str]]]:
    """The jobcomp/filetxt lines of ``job`` (``<id>`` or ``<array id>_<task>``), one per attempt;
    None when SLURM does not write that file."""
    if config_value("JobCompType") != "jobcomp/filetxt":
        return None
    lines = [fields(line) for line in Path(config_value("JobCompLoc")).read_text().splitlines()]
    if "_" in job:
        array, task = job.split("_")
        return [r for r in lines if r.get("ArrayJobId") == array and r.get("ArrayTaskId") == task]
    return [r for r in lines if r.get("JobId") == job]


def start_requeued_now(job: str, restarts: int = 1) -> dict[str, str]:
    """Wait until ``job`` is requeued (PENDING, ``restarts`` restarts) and let it start at once
    instead of after SLURM's 2-minute hold, as an operator could. Returns its record then."""
    record = wait(lambda: (lambda r: r if r.get("Restarts") == str(restarts) and r.get("JobState") == "PENDING"
                           else None)(job_record(job)), 120, f"job {job} to be requeued (PENDING, Restarts={restarts})",
                  poll=0.2)
    if record.get("Reason") == "BeginTime":
        # Not within the second of the requeue: slurmd revoked the first attempt's credential
        # at a one-second resolution, and refuses a relaunch whose credential is from that same
        # second ("Job credential revoked": the job then fails instead of restarting).
        time.sleep(2.0)
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, timeout=20)
    return record


@contextlib.contextmanager
def background_multirun(args: list[str], cwd: Path, env: dict, sweep_dir: Path):
    """``python -m ppo_research <args>`` in the background (output to files: the launcher logs
    while it waits); yields (process, its stderr file). If it still runs on the way out (a failed
    test), it is killed and the SLURM jobs in ``sweep_dir/.submitit`` are cancelled."""
    stderr = cwd / "multirun.err"
    with open(cwd / "multirun.out", "w") as out, open(stderr, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ppo_research", *args], cwd=cwd, env=env, stdout=out,
                                stderr=err, text=True)
    try:
        yield proc, stderr
    finally:
        if proc.poll() is None:  # the test failed while the multirun was waiting for its jobs
            proc.kill()
            proc.wait()
            folder = sweep_dir / ".submitit"
            for job in (p.name for p in folder.iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name)):
                cmd("scancel", job)
