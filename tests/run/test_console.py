"""The console: whole progress lines (never fused across processes), [job N] under multiruns, a
tqdm bar on a terminal, and the run's one end line."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, TINY, read_metrics, read_summary, run_cli

from ppo_research.run.console import end_line

PROGRESS = re.compile(r"^iter (\d+)/(\d+) \| step (\d+) \| sps \d+( \| return -?[\d.]+)?( \| eval -?[\d.]+)? \| kl [\d.]+$")
END = re.compile(r"^done: (\S+) \| (\d+) steps in [\d.]+s \| eval (-?[\d.]+) ± ([\d.]+) \((\d+) episodes\)"
                 r"( \| upload: wandb sync (\S+))?$")
RUN = ["env=cartpole", *[a for a in TINY if a != "progress=false"]]

WRITER = r"""
import sys
from ppo_research.run.console import write_line
tag = sys.argv[1]
for i in range(2000):
    write_line(f"[job {tag}] iter {i}/2000 | step {i * 128} | sps 1000 | return 12.5 | kl 0.0012", sys.stderr)
"""


def test_concurrent_writers_never_fuse_lines():
    """Four processes writing progress lines into one pipe at once, as the joblib launcher's
    workers share the parent's stderr: every line arrives whole. (Measured on this machine:
    writing the text and its newline separately fused 400 of 12,000 such lines.)"""
    read_end, write_end = os.pipe()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(k)], stderr=write_end, env=env) for k in range(4)]
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 1 << 16):
        chunks.append(chunk)
    os.close(read_end)
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lines = b"".join(chunks).decode().splitlines()
    assert len(lines) == 4 * 2000
    pattern = re.compile(r"^\[job [0-3]\] iter (\d+)/2000 \| step (\d+) \| sps 1000 \| return 12\.5 \| kl 0\.0012$")
    assert [line for line in lines if not pattern.match(line)] == []
    for k in range(4):  # each writer's lines complete and in order
        mine = [int(line.split()[3].split("/")[0]) for line in lines if line.startswith(f"[job {k}]")]
        assert mine == list(range(2000))


def test_multirun_lines_carry_the_job_number(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", *RUN, "total_timesteps=512", "seed=0,1,2", "logger=none", "hydra/launcher=joblib",
                      "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    jobs: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for line in lines:
        match = re.match(r"^\[job (\d)\] (.*)$", line)
        assert match, f"a line without its job number, or fused: {line!r}"
        jobs[int(match.group(1))].append(match.group(2))
    for job, own in jobs.items():
        progress, end = own[:-1], own[-1]
        assert [PROGRESS.match(p).group(1) for p in progress] == ["1", "2", "3", "4"], own
        match = END.match(end)
        assert match and Path(match.group(1)).name == str(job) and match.group(2) == "512", end
        rows = read_metrics(sweep / str(job))
        assert [int(PROGRESS.match(p).group(3)) for p in progress] == [r["global_step"] for r in rows]


def test_a_terminal_gets_a_progress_bar(tmp_path):
    """stderr on a pseudo-terminal: tqdm's bar (carriage returns, a percentage, the statistics),
    no plain progress lines; the end line after the bar."""
    import fcntl
    import pty
    import struct
    import termios

    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 40 rows x 160 columns
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ppo_research", *RUN, "total_timesteps=512", "logger=none",
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=secondary)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    assert proc.wait(timeout=600) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "\r" in screen and "100%" in screen and "4/4" in screen, screen
    assert "kl " in screen and "step 512" in screen  # the statistics ride along as the bar's postfix
    assert not re.search(r"^iter \d+/4 \|", screen.replace("\r", "\n"), re.M)
    last = screen.replace("\r", "\n").strip().splitlines()[-1]
    assert END.match(last.strip()), last
    assert len(read_metrics(tmp_path / "run")) == 4


def test_end_line_of_an_offline_wandb_run(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli([*RUN, "logger=wandb", "progress=false", f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1  # progress=false: the end line only
    match = END.match(lines[0])
    assert match, lines[0]
    summary = read_summary(run_dir)
    assert match.group(1) == "run" and int(match.group(2)) == summary["global_step"]
    assert float(match.group(3)) == pytest.approx(summary["eval_return"], abs=0.006)
    assert int(match.group(5)) == summary["eval_episodes"]
    sync = tmp_path / match.group(7)
    assert sync.parent == run_dir / "wandb" and sync.name.startswith("offline-run-") and list(sync.glob("*.wandb"))


def test_no_end_line_for_a_rejected_run(tmp_path):
    result = run_cli([*RUN, "logger=none", "loss.epsilon=1.5", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2
    assert "done:" not in result.stderr


def test_end_line_text():
    summary = {"global_step": 1_000_000, "wall_time_s": 3725.4, "eval_return": 2310.456, "eval_return_std": 41.0,
               "eval_episodes": 10}
    assert end_line(Path("/tmp/x/run"), summary, "wandb sync run/wandb/offline-run-1", job=None) == (
        "done: /tmp/x/run | 1000000 steps in 1h 02m 05s | eval 2310.46 ± 41.00 (10 episodes) "
        "| upload: wandb sync run/wandb/offline-run-1")
    no_eval = {"global_step": 2048, "wall_time_s": 75.0, "train_return": 12.25}
    assert end_line(Path("/tmp/x/run"), no_eval, None, job=3) == (
        "[job 3] done: /tmp/x/run | 2048 steps in 1m 15s | train return 12.25 (no evaluation)")


def test_no_line_is_printed_to_stderr_in_two_writes():
    """print(text, file=sys.stderr) writes the text and its newline separately when stderr is a
    pipe (CPython's stderr is unbuffered there): two processes' lines then fuse. Every line goes
    through console.write_line (one write) instead."""
    import ast

    root = Path(__file__).resolve().parents[2]
    found = []
    for path in [*(root / "ppo_research").rglob("*.py"), *(root / "hydra_plugins").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print" and \
                    any(k.arg == "file" for k in node.keywords):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not found, found
