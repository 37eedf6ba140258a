"""The repo's one-node SLURM cluster as the cluster tests see it: commands that answer or not, the
default partition, and the ``Key=value`` records of scontrol and the jobcomp file.

Start the cluster with ``scripts/slurm_one_node.sh start`` (as root); .ci/run does so before the
tests. The ``partition`` fixture (tests/cluster/conftest.py) skips without a cluster, or fails
with PPO_RESEARCH_REQUIRE_CLUSTER=1 (set by .ci/run), so CI cannot pass by skipping."""
from __future__ import annotations

import re
import shutil
import subprocess
from typing import Optional


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
