"""Reliability: exact resume after a kill, clean stops on signals, NaN stops that keep the last
good checkpoint, and the pieces underneath (env state capture, metrics truncation, atomic
writes). The CLI tests run ``python -m ppo_research`` in subprocesses, as a user would."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, TIMING_KEYS, read_metrics

from ppo_research.run.rundir import checkpoint

# Small but long enough (40+ iterations) that a kill lands mid-run; checkpoints every 3
# iterations, so a kill usually leaves rows past the last checkpoint to be dropped on resume.
COMMON = ["progress=false", "algo.num_epochs=2", "eval.episodes=1", "eval.every=4", "checkpoint.every=3",
          "checkpoint.keep=2", "seed=7"]
RUNS = {
    "cartpole": ["env=cartpole", "total_timesteps=5120", "algo.num_envs=2", "algo.num_steps=32",
                 "algo.minibatch_size=32", *COMMON],
    "pendulum": ["env=pendulum", "total_timesteps=5120", "algo.num_envs=2", "algo.num_steps=64",
                 "algo.minibatch_size=64", *COMMON],  # normalised obs and rewards: their stats resume too
}


def comparable(rows: list[dict]) -> list[dict]:
    """Rows without wall-clock fields (``time_s``, ``sps``, per-phase ``time_*``)."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS and not k.startswith("time_")} for r in rows]


def start_cli(args: list[str], cwd: Path, logger: str = "none") -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(cwd),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "ppo_research", f"logger={logger}", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(args: list[str], cwd: Path, logger: str = "none", timeout: float = 300) -> subprocess.CompletedProcess:
    proc = start_cli(args, cwd, logger)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for_rows(run_dir: Path, proc: subprocess.Popen, rows: int, timeout: float = 120) -> int:
    """Poll metrics.jsonl until it has ``rows`` complete lines; returns the count seen."""
    path, deadline = run_dir / "metrics.jsonl", time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"run ended before it could be stopped: {proc.stderr.read()[-2000:]}"
        if path.exists():
            n = path.read_bytes().count(b"\n")
            if n >= rows:
                return n
        time.sleep(0.005)
    raise TimeoutError(f"{path} never reached {rows} rows")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def policy_of(run_dir: Path) -> dict:
    return checkpoint.load(checkpoint.latest(run_dir))["policy"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs, one per env preset in RUNS, made on first use."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            cwd = tmp_path_factory.mktemp(f"reference_{name}")
            result = run([*RUNS[name], f"hydra.run.dir={cwd / 'run'}"], cwd)
            assert result.returncode == 0, result.stderr[-3000:]
            made[name] = cwd / "run"
        return made[name]

    return get


# ---------------------------------------------------------------------------------------------
# 1. SIGKILL mid-run, resume: identical to the uninterrupted run

@pytest.mark.parametrize("name", sorted(RUNS))
def test_sigkill_then_resume_reproduces_the_uninterrupted_run(tmp_path, reference, name):
    run_dir = tmp_path / "run"
    proc = start_cli([*RUNS[name], f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for_rows(run_dir, proc, 5)  # past the first checkpoint (iteration 3)
    proc.send_signal(signal.SIGKILL)  # no handler runs: what a pre-empted machine does
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = len(read_metrics(run_dir)) if (run_dir / "metrics.jsonl").exists() else 0
    reference_rows = read_metrics(reference(name))
    assert not (run_dir / "summary.json").exists() and killed_at < len(reference_rows), "kill came too late"

    result = run([f"resume={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" in result.stderr
    resumed_from = checkpoint.list_checkpoints(run_dir)  # the resumed run's own checkpoints by now
    assert resumed_from

    rows = read_metrics(run_dir)
    assert [r["iteration"] for r in rows] == list(range(1, len(reference_rows) + 1))  # no duplicates, no gaps
    assert comparable(rows) == comparable(reference_rows)
    mine, theirs = policy_of(run_dir), policy_of(reference(name))
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert torch.equal(mine[key], theirs[key]), key
    summary = json.loads((run_dir / "summary.json").read_text())
    expected = json.loads((reference(name) / "summary.json").read_text())
    for key in ("global_step", "iterations", "train_return", "eval_return", "eval_return_std"):
        assert summary[key] == expected[key], key


# ---------------------------------------------------------------------------------------------
# 2. SIGTERM / SIGINT: finish the iteration, checkpoint, close wandb, distinct exit status

def wandb_records(path: Path) -> list:
    """Records of an offline ``.wandb`` file: a LevelDB-style log of 32 KiB blocks with 7-byte
    chunk headers (crc32, length, type), after a 7-byte ``:W&B`` file header."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pending, records = 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a record is complete
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def offline_runs(run_dir: Path) -> list[tuple[str, list]]:
    """(run id, records) of each offline wandb run under ``run_dir``, oldest first."""
    found = []
    for run_path in sorted((run_dir / "wandb").glob("offline-run-*"), key=lambda p: p.stat().st_mtime):
        (wandb_file,) = run_path.glob("run-*.wandb")
        found.append((wandb_file.stem.removeprefix("run-"), wandb_records(wandb_file)))
    return found


@pytest.mark.parametrize("sig,logger", [(signal.SIGTERM, "wandb"), (signal.SIGINT, "none")])
def test_signal_stops_after_a_checkpoint_and_the_run_resumes_exactly(tmp_path, reference, sig, logger):
    run_dir = tmp_path / "run"
    proc = start_cli([*RUNS["cartpole"], f"hydra.run.dir={run_dir}"], tmp_path, logger=logger)
    wait_for_rows(run_dir, proc, 4)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 128 + sig, err[-3000:]
    assert "Traceback" not in err
    stop_lines = [line for line in err.splitlines() if line.startswith(f"stopped by {sig.name}")]
    assert len(stop_lines) == 1 and f"resume={run_dir}" in stop_lines[0]
    # No lost work: the iteration under way was finished, logged and checkpointed.
    rows = read_metrics(run_dir)
    last = checkpoint.latest(run_dir)
    state = checkpoint.load(last)
    assert state["iteration"] == rows[-1]["iteration"] == int(last.stem.split("_")[1])
    assert rows[-1]["iteration"] < len(read_metrics(reference("cartpole")))
    assert all(torch.isfinite(v).all() for v in state["policy"].values())

    if logger == "wandb":
        ((run_id, records),) = offline_runs(run_dir)
        exits = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
        assert len(exits) == 1 and exits[0].exit_code == 128 + sig  # wandb was finished, not abandoned
        assert state["logger_run_id"] == run_id

    result = run([f"resume={run_dir}"], tmp_path, logger=logger)
    assert result.returncode == 0, result.stderr[-3000:]
    assert comparable(read_metrics(run_dir)) == comparable(read_metrics(reference("cartpole")))
    if logger == "wandb":  # the same wandb run continues (a second offline segment of that id)
        runs = offline_runs(run_dir)
        assert [rid for rid, _ in runs] == [run_id, run_id]
        exits = [r.exit for r in runs[1][1] if r.WhichOneof("record_type") == "exit"]
        assert len(exits) == 1 and exits[0].exit_code == 0


def test_second_signal_exits_at_once(tmp_path):
    # Long iterations (a 4096-step rollout, 30 epochs of 256 minibatches of 16: about 4 s here,
    # unloaded) so that both signals land inside iteration 2. With 0.7 s iterations the second
    # signal could land after iteration 2 had ended, while the interpreter was shutting down
    # (CPython puts back the default handlers there): the process then died of it (-15).
    run_dir = tmp_path / "run"
    proc = start_cli(["env=pendulum", "total_timesteps=40960", "algo.num_envs=1", "algo.num_steps=4096",
                      "algo.minibatch_size=16", "algo.num_epochs=30", "eval.every=0", "progress=true",
                      f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for_rows(run_dir, proc, 1)
    # the row is written just before iteration 1's own stop check: a signal landing in between
    # would stop the run there; half a second later iteration 2 is under way
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "SIGTERM again: exiting at once" in err
    assert "Traceback" not in err
    assert len(read_metrics(run_dir)) == 1  # the second iteration was abandoned, not finished
    assert checkpoint.list_checkpoints(run_dir) == []  # checkpoint.every=10: none was due yet


def test_second_signal_after_the_stop_still_exits_with_its_status(tmp_path):
    # A stop prints its line once the run is closed; then the process leaves. A second SIGTERM
    # during that exit used to kill it by signal (-15: with torch loaded the interpreter's teardown
    # took half a second here, with the default handler back). Several delays after the line.
    for delay in (0.05, 0.15, 0.3):
        proc = start_cli(["env=cartpole", "total_timesteps=1000000", "eval.every=0", "progress=true",
                          f"hydra.run.dir={tmp_path / f'run{delay}'}"], tmp_path)
        for line in proc.stderr:
            if line.startswith("iter 1/"):
                proc.send_signal(signal.SIGTERM)
            if line.startswith("stopped by SIGTERM"):
                time.sleep(delay)
                proc.send_signal(signal.SIGTERM)  # a no-op if it has already exited
                break
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, (delay, proc.returncode, err[-2000:])


# ---------------------------------------------------------------------------------------------
# 3. NaN/Inf: stop with where it happened, exit 3, the last good checkpoint untouched

NAN_RUN = ["env=cartpole", "algo.num_envs=2", "algo.num_steps=32", "algo.minibatch_size=32", "algo.num_epochs=2",
           "eval.episodes=1", "checkpoint.every=1", "progress=false"]


def test_divergence_keeps_the_last_good_checkpoint_byte_for_byte(tmp_path):
    # A KL penalty whose beta is multiplied by 1e40 after each iteration: iteration 1 is sound and
    # checkpointed with beta = 1e40, which is inf in float32, so iteration 2's loss is non-finite.
    run_dir = tmp_path / "run"
    diverging = [*NAN_RUN, "loss=klpen", "loss.factor=1e40", "loss.kl_target=1e-12"]
    first = run([*diverging, "total_timesteps=64", f"hydra.run.dir={run_dir}"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (good,) = checkpoint.list_checkpoints(run_dir)
    assert checkpoint.load(good)["loss"]["beta"] == 1e40
    digest, rows = sha256(good), (run_dir / "metrics.jsonl").read_text()

    result = run([f"resume={run_dir}", "total_timesteps=256"], tmp_path)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert "non-finite policy_loss at iteration 2" in line and str(good) in line
    assert checkpoint.list_checkpoints(run_dir) == [good]  # nothing written after the bad update
    assert sha256(good) == digest
    assert (run_dir / "metrics.jsonl").read_text() == rows  # the failed iteration logged nothing


def test_divergence_on_the_first_iteration_says_no_checkpoint_exists(tmp_path):
    run_dir = tmp_path / "run"
    result = run([*NAN_RUN, "algo.learning_rate=1e30", "total_timesteps=256", f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 3, result.stderr[-3000:]
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert "training diverged: non-finite" in line and "at iteration 1" in line
    assert "no checkpoint had been written" in line
    assert "Traceback" not in result.stderr
    assert checkpoint.list_checkpoints(run_dir) == []


# ---------------------------------------------------------------------------------------------
# the pieces: env state, metrics truncation, atomic writes


# ---------------------------------------------------------------------------------------------
# 4. which checkpoint a resume takes (issue 16): the newest that loads, verifies and belongs to
#    the run; older ones are the fallback; nothing is truncated before the choice is made

FALLBACK_RUN = ["env=cartpole", "total_timesteps=384", "algo.num_envs=2", "algo.num_steps=64",
                "algo.minibatch_size=64", "algo.num_epochs=2", "eval.episodes=1", "eval.every=0",
                "checkpoint.every=1", "checkpoint.keep=3", "seed=3", "progress=false"]


@pytest.fixture(scope="module")
def three_checkpoints(tmp_path_factory):
    """A finished CartPole run of 3 iterations with a checkpoint after each."""
    cwd = tmp_path_factory.mktemp("three")
    result = run([*FALLBACK_RUN, f"hydra.run.dir={cwd / 'run'}"], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in checkpoint.list_checkpoints(cwd / "run")] == [f"ckpt_0000000{i}.pt" for i in (1, 2, 3)]
    return cwd / "run"


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: skipped")]


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(three_checkpoints, tmp_path):
    run_dir = copy_run(three_checkpoints, tmp_path / "run")
    newest = checkpoint.latest(run_dir)
    newest.write_bytes(newest.read_bytes()[:1000])  # a torn file
    result = run([f"resume={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]  # it exited 2 before
    (warning,) = warnings_of(result.stderr)
    assert "ckpt_00000003.pt (PytorchStreamReader failed" in warning and "resuming from ckpt_00000002.pt" in warning
    assert "resuming" in result.stderr and "from iteration 2" in result.stderr
    assert (run_dir / "checkpoints" / "ckpt_00000003.pt.unusable").exists()  # set aside, not deleted
    # iteration 3 was run again from checkpoint 2: the run ends as it did
    assert comparable(read_metrics(run_dir)) == comparable(read_metrics(three_checkpoints))
    for key, value in policy_of(three_checkpoints).items():
        assert torch.equal(policy_of(run_dir)[key], value), key


def test_a_flipped_bit_is_caught_by_the_checksum(three_checkpoints, tmp_path):
    run_dir = copy_run(three_checkpoints, tmp_path / "run")
    newest = checkpoint.latest(run_dir)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the stored body: torch itself would load this silently
    newest.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="is damaged: checksum mismatch"):
        checkpoint.load(newest)
    result = run([f"resume={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (warning,) = warnings_of(result.stderr)
    assert "ckpt_00000003.pt (damaged: checksum mismatch" in warning
    for key, value in policy_of(three_checkpoints).items():
        assert torch.equal(policy_of(run_dir)[key], value), key


def test_a_checkpoint_of_another_run_is_not_taken(three_checkpoints, tmp_path):
    """A Pendulum checkpoint copied in as the newest file: the CartPole run stays CartPole, its
    rows and summary are untouched (before: exit 0, switched to Pendulum, rows dropped)."""
    other = tmp_path / "other"
    result = run([*RUNS["pendulum"], "total_timesteps=128", "checkpoint.every=1",
                  f"hydra.run.dir={other}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = copy_run(three_checkpoints, tmp_path / "run")
    foreign = run_dir / "checkpoints" / "ckpt_00000009.pt"
    foreign.write_bytes(checkpoint.latest(other).read_bytes())
    rows, summary = (run_dir / "metrics.jsonl").read_text(), (run_dir / "summary.json").read_text()

    result = run([f"resume={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (warning,) = warnings_of(result.stderr)
    assert "ckpt_00000009.pt (belongs to another run (run id " in warning
    assert "resuming from ckpt_00000003.pt" in warning
    assert (run_dir / "metrics.jsonl").read_text() == rows
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == json.loads(summary)["global_step"]
    assert json.loads((run_dir / "run.json").read_text())["config"]["env"]["id"] == "CartPole-v1"

    # the same file alone: no usable checkpoint, one line naming it, nothing touched
    alone = tmp_path / "alone"
    (alone / "checkpoints").mkdir(parents=True)
    (alone / "run.json").write_text((three_checkpoints / "run.json").read_text())
    (alone / "metrics.jsonl").write_text(rows)
    (alone / "checkpoints" / "ckpt_00000001.pt").write_bytes(checkpoint.latest(other).read_bytes())
    result = run([f"resume={alone}"], tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot resume {alone}: no usable checkpoint in ")
    assert "ckpt_00000001.pt: belongs to another run (run id" in line
    assert (alone / "metrics.jsonl").read_text() == rows


def test_a_checkpoint_without_a_run_id_is_matched_by_its_config(three_checkpoints, tmp_path):
    """A run directory whose run.json has no run id (or a checkpoint without one): the config
    decides."""
    from ppo_research.run.rundir.resume import RunIdentity, foreign_reason

    state = checkpoint.load(checkpoint.latest(three_checkpoints))
    described = json.loads((three_checkpoints / "run.json").read_text())
    assert state["run_id"] == described["run_id"]
    assert foreign_reason(state, RunIdentity(None, described["config"])) is None
    other = json.loads(json.dumps(described["config"]))
    other["env"]["id"] = "Pendulum-v1"
    reason = foreign_reason({**state, "run_id": None}, RunIdentity(None, other))
    assert reason == "belongs to another run (its config has env.id='CartPole-v1' where the run has 'Pendulum-v1' " \
                     "in run.json)"
    changed = json.loads(json.dumps(described["config"]))
    changed["total_timesteps"] = 10**6  # a resume may change this: the same run
    assert foreign_reason(state, RunIdentity(described["run_id"], changed)) is None


@pytest.mark.parametrize("damage", ["missing", "short"])
def test_a_missing_or_short_metrics_file_is_reported_in_one_line(three_checkpoints, tmp_path, damage):
    run_dir = copy_run(three_checkpoints, tmp_path / "run")
    metrics = run_dir / "metrics.jsonl"
    if damage == "missing":
        metrics.unlink()
    else:
        metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])
    result = run([f"resume={run_dir}", "total_timesteps=512"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("warning: ") and "metrics" in ln]
    if damage == "missing":
        assert line.startswith(f"warning: {metrics} is missing: 3 of the 3 iteration(s) before the checkpoint")
        assert [r["iteration"] for r in read_metrics(run_dir)] == [4]
    else:
        assert line.startswith(f"warning: {metrics} lacks the rows of iteration(s) 2-3: 2 of the 3 iteration(s)")
        assert [r["iteration"] for r in read_metrics(run_dir)] == [1, 4]


def test_resuming_a_finished_run_whose_budget_is_not_a_multiple_of_the_batch(tmp_path):
    """Issue 14: the default Pendulum run (200,000 steps in batches of 4,096) ends at 200,704
    steps; resuming it refused with 'expected at least 200704'. Docs promise exit 0."""
    run_dir = tmp_path / "run"
    args = ["env=pendulum", "total_timesteps=300", "algo.num_envs=2", "algo.num_steps=64", "algo.minibatch_size=64",
            "algo.num_epochs=1", "eval.episodes=1", "progress=false"]
    result = run([*args, f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 384
    rows = (run_dir / "metrics.jsonl").read_text()
    result = run([f"resume={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "metrics.jsonl").read_text() == rows
    result = run([f"resume={run_dir}", "total_timesteps=256"], tmp_path)  # 2 iterations < the 3 done
    assert result.returncode == 2
    assert "total_timesteps=256 is invalid: expected at least 257" in result.stderr


def test_a_run_directory_with_an_interpolation_in_its_name_resumes(three_checkpoints, tmp_path):
    """``${...}`` in a resume path is part of the name (docs/reliability.md): Hydra's own use of the
    run directory (its job log's file name) must not read it as an interpolation either."""
    run_dir = copy_run(three_checkpoints, tmp_path / "lit${x}")
    checkpoint.list_checkpoints(run_dir)[-1].unlink()  # one iteration left to train
    result = run([f"resume={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]  # "Interpolation key 'x' not found" before
    assert comparable(read_metrics(run_dir)) == comparable(read_metrics(three_checkpoints))
    assert json.loads((run_dir / "run.json").read_text())["config"]["resume"] == str(run_dir)


def test_a_full_disk_line_says_where_and_what_is_kept(three_checkpoints, tmp_path, capfd):
    from hydra.conf import HydraConf
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from ppo_research.run.jobs import job_failure

    single_run = OmegaConf.create({"hydra": OmegaConf.structured(HydraConf(mode=RunMode.RUN))})
    HydraConfig.instance().set_config(single_run)  # the job is a single run: it exits with the status
    run_dir = copy_run(three_checkpoints, tmp_path / "run")
    empty = tmp_path / "empty"
    empty.mkdir()
    for where, kept in ((run_dir, f"the last checkpoint is {checkpoint.latest(run_dir)}"),
                        (empty, "no checkpoint had been written")):
        with pytest.raises(SystemExit) as exited:
            job_failure(OSError(errno.ENOSPC, "No space left on device"), where)
        assert exited.value.code == 4
        line = capfd.readouterr().err.strip()
        assert line == f"error: No space left on device: while writing in {where}; {kept}", line
