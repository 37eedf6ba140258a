"""wandb logging, checked by reading back the offline ``.wandb`` files that real runs write.

Nothing here reaches the network: runs are offline, and the one online attempt is pointed at a
closed local port (WANDB_BASE_URL=http://127.0.0.1:9).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import imageio
import numpy as np
import pytest
from helpers import TINY, read_metrics, read_summary, run_cli
from helpers.wandb_files import wandb_records
from wandb.proto import wandb_internal_pb2 as pb

from ppo_research.errors import ConfigError
from ppo_research.run.loggers.naming import HydraContext, default_group, default_name, sweep_name
from ppo_research.run.loggers.wandb import WandbLogger


def _key(item) -> str:
    return item.key or ".".join(item.nested_key)


@dataclass
class OfflineRun:
    run: pb.RunRecord
    config: dict
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    exit_code: int | None = None
    artifacts: list = field(default_factory=list)


def read_offline_run(path: Path) -> OfflineRun:
    """Everything logged to one offline run, decoded from its ``.wandb`` file."""
    out = None
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config = {u.key: json.loads(u.value_json) for u in record.run.config.update}
            out = OfflineRun(record.run, config)
        elif kind == "history":
            out.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            out.summary.update({_key(u): json.loads(u.value_json) for u in record.summary.update})
        elif kind == "exit":
            out.exit_code = record.exit.exit_code
        elif kind == "artifact":
            out.artifacts.append(record.artifact)
    assert out is not None, f"no run record in {path}"
    return out


def read_finished_run(path: Path, timeout: float = 10.0) -> OfflineRun:
    """wandb-core writes the file from its own process: right after an in-process ``finish`` the
    tail may not be on disk yet, so wait (briefly) for the exit record."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            run = read_offline_run(path)
            if run.exit_code is not None or time.monotonic() > deadline:
                return run
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def offline_runs(run_dir: Path) -> list[OfflineRun]:
    files = sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    return [read_finished_run(f) for f in files]


def the_offline_run(run_dir: Path) -> OfflineRun:
    runs = offline_runs(run_dir)
    assert len(runs) == 1, f"expected one offline run in {run_dir}, found {len(runs)}"
    return runs[0]


def warning_lines(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "WARNING" in line and "wandb" in line]


# -- real runs through the CLI ------------------------------------------------------------------

def test_offline_run_holds_config_and_history(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(["env=cartpole", "loss=klpen", "logger=wandb", "seed=3", *TINY, f"hydra.run.dir={run_dir}"],
                   cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    run = the_offline_run(run_dir)

    # the composed groups, nested so wandb can filter by loss._target_, env.id, seed ...
    assert run.config["loss"]["_target_"] == "ppo_research.algo.losses.KLPenaltyLoss"
    assert run.config["loss"]["kl_target"] == 0.01
    assert run.config["advantage"]["lam"] == 0.95
    assert run.config["env"]["id"] == "CartPole-v1"
    assert run.config["seed"] == 3
    assert run.config["choices"] == {"loss": "klpen", "advantage": "gae", "env": "cartpole", "network": "mlp",
                                     "logger": "wandb"}
    assert run.run.display_name == "klpen-gae-cartpole-s3"
    assert set(run.run.tags) == {"loss=klpen", "advantage=gae", "env=cartpole", "network=mlp"}
    assert run.run.job_type == "train"

    # one history row per iteration, the same keys and values as metrics.jsonl
    rows = read_metrics(run_dir)
    assert len(run.history) == len(rows) == 2
    for logged, local in zip(run.history, rows):
        for key in ("global_step", "policy_loss", "value_loss", "entropy", "kl", "beta", "episode_return"):
            assert logged[key] == pytest.approx(local[key]), key
    assert [h["global_step"] for h in run.history] == [128, 256]
    assert run.history[-1]["eval_return"] == pytest.approx(rows[-1]["eval_return"])

    summary = read_summary(run_dir)
    for key in ("global_step", "sps", "train_return", "eval_return", "eval_return_std"):
        assert run.summary[key] == pytest.approx(summary[key]), key
    assert run.exit_code == 0
    assert (run_dir / "wandb" / "run_id").read_text().strip() == run.run.run_id


def test_multirun_is_one_group_with_names_and_tags(tmp_path):
    sweep = tmp_path / "ablation"
    proc = run_cli(["-m", "loss=clip,klpen", "seed=0,1", "env=cartpole", "logger=wandb", *TINY,
                    f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr
    runs = [the_offline_run(sweep / str(i)) for i in range(4)]
    assert {r.run.display_name for r in runs} == {"clip-gae-cartpole-s0", "clip-gae-cartpole-s1",
                                                  "klpen-gae-cartpole-s0", "klpen-gae-cartpole-s1"}
    assert {r.run.run_group for r in runs} == {"ablation"}
    assert len({r.run.run_id for r in runs}) == 4
    for r in runs:
        loss = r.config["choices"]["loss"]
        assert set(r.run.tags) == {f"loss={loss}", "advantage=gae", "env=cartpole", "network=mlp"}
        assert r.exit_code == 0 and len(r.history) == 2


@pytest.mark.parametrize("api_key", ["b" * 40, None], ids=["bad-key", "no-key"])
def test_online_failure_falls_back_offline_and_warns_once(tmp_path, api_key):
    run_dir = tmp_path / "run"
    env = {"WANDB_BASE_URL": "http://127.0.0.1:9"}  # a closed local port: nothing leaves the machine
    if api_key:  # a well-formed key the server would reject; without one wandb refuses at once
        env["WANDB_API_KEY"] = api_key
    proc = run_cli(["env=cartpole", "logger=wandb", "logger.mode=online", "logger.init_timeout=2", *TINY,
                    f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=90, env=env)
    assert proc.returncode == 0, proc.stderr
    warnings = warning_lines(proc)
    assert len(warnings) == 1, warnings
    assert "online init failed" in warnings[0] and "offline" in warnings[0]
    assert "Traceback" not in proc.stderr
    run = the_offline_run(run_dir)
    assert len(run.history) == 2 and run.exit_code == 0
    assert read_summary(run_dir)["global_step"] == 256


def test_disabled_mode_trains_without_a_wandb_run(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(["env=cartpole", "logger=wandb", "logger.mode=disabled", *TINY, f"hydra.run.dir={run_dir}"],
                   cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert offline_runs(run_dir) == []
    assert len(read_metrics(run_dir)) == 2


def test_bad_logger_mode_fails_before_training(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(["env=cartpole", "logger.mode=onlin", *TINY, f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "logger.mode='onlin' is invalid: expected null or one of online, offline, disabled" in proc.stderr
    assert not (run_dir / "metrics.jsonl").exists()
    with pytest.raises(ConfigError, match="logger.init_timeout=0 is invalid"):
        WandbLogger(init_timeout=0)


# -- the logger in-process ----------------------------------------------------------------------

CONFIG = {"seed": 1, "resume": None, "loss": {"_target_": "ppo_research.algo.losses.ClipLoss", "epsilon": 0.2}}
CHOICES = {"loss": "clip", "advantage": "gae", "env": "pendulum"}


def test_a_crashed_run_is_finished_and_the_next_one_starts_clean(tmp_path):
    crashed, next_run = tmp_path / "0", tmp_path / "1"
    logger = WandbLogger()
    logger.start(crashed, CONFIG, CHOICES)
    logger.log({"global_step": 10, "policy_loss": 0.5}, step=10)
    logger.finish(1)  # what train_from_config does when training raises
    logger.start(next_run, {**CONFIG, "seed": 2}, CHOICES)
    logger.log({"global_step": 10, "policy_loss": 0.25}, step=10)
    logger.finish(0)
    first, second = the_offline_run(crashed), the_offline_run(next_run)
    assert (first.exit_code, second.exit_code) == (1, 0)
    assert first.run.run_id != second.run.run_id
    assert second.run.display_name == "clip-gae-pendulum-s2"
    assert second.history[0]["policy_loss"] == 0.25


def test_resumed_run_continues_the_same_wandb_run(tmp_path):
    logger = WandbLogger()
    logger.start(tmp_path, CONFIG, CHOICES)
    first_id = logger.run_id
    logger.log({"global_step": 10}, step=10)
    logger.finish(1)
    logger.start(tmp_path, {**CONFIG, "resume": str(tmp_path)}, CHOICES)
    assert logger.run_id == first_id
    logger.log({"global_step": 20}, step=20)
    logger.finish(0)
    runs = offline_runs(tmp_path)
    assert [r.run.run_id for r in runs] == [first_id, first_id]
    assert [h["global_step"] for r in runs for h in r.history] == [10, 20]


def test_video_and_checkpoint_artifact(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # artifact staging stays in tmp
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt_00000003.pt").write_bytes(b"weights")
    logger = WandbLogger(video=True, upload_checkpoint=True)
    assert logger.wants_video
    logger.start(tmp_path, CONFIG, CHOICES)
    frames = np.zeros((5, 480, 400, 3), np.uint8)
    for t in range(5):  # a bar that grows: distinct frames (identical ones would be merged in the GIF)
        frames[t, :, :80 * (t + 1)] = 255
    logger.log_video(frames, step=256, fps=10)
    logger.finish(0)
    run = the_offline_run(tmp_path)
    row = run.history[0]
    assert row["eval_video._type"] == "video-file" and row["eval_video.path"].endswith(".gif")
    [files] = tmp_path.glob("wandb/offline-run-*/files")
    assert (files / row["eval_video.path"]).read_bytes()[:6] == b"GIF89a"  # what `wandb sync` uploads
    assert row["global_step"] == 256
    gif = imageio.v2.mimread(tmp_path / "videos" / "eval_0000000256.gif")
    assert len(gif) == 5 and gif[0].shape[:2] == (240, 200)  # subsampled to at most 256 px a side
    assert len(run.artifacts) == 1
    artifact = run.artifacts[0]
    assert artifact.type == "model" and "final" in list(artifact.aliases)
    assert [e.path for e in artifact.manifest.contents] == ["ckpt_00000003.pt"]


# -- defaults -----------------------------------------------------------------------------------

def test_default_names_and_groups():
    assert default_name({"loss": "klpen", "advantage": "gae", "env": "hopper", "network": "mlp"}, 2) \
        == "klpen-gae-hopper-s2"
    assert default_name(CHOICES, 0, ("loss.epsilon=0.1", "seed=0", "env.id=X")) == "clip-gae-pendulum-epsilon0.1-s0"
    assert sweep_name("outputs/multirun/2026-11-24/03-25-36") == "2026-11-24_03-25-36"
    assert sweep_name("/tmp/abl") == "abl"
    assert default_group(HydraContext()) is None  # no Hydra runtime (the Optuna driver passes its own)
    assert default_group(HydraContext(experiment="table1")) == "table1"
    assert default_group(HydraContext(multirun=True, sweep_dir="/x/multirun/d/t", experiment="table1")) \
        == "table1-d_t"
