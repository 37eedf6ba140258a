"""Atari from the command line, as docs/atari.md shows it: a game trains on both backends (the
paper's Atari experiment with its annealed clip range), play and ONNX export work on the run
(the exported CNN policy checked with onnxruntime), and what cannot work is one line.

Needs the atari extra (ale-py, opencv); the EnvPool run needs the envpool extra. Both are in
``dev``, so CI runs every case."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from helpers import compose_config, read_metrics, read_summary, run_cli

from ppo_research.errors import ConfigError
from ppo_research.run.loop.build import check

HAVE_ALE = importlib.util.find_spec("ale_py") is not None and importlib.util.find_spec("cv2") is not None
HAVE_ENVPOOL = importlib.util.find_spec("envpool") is not None
pytestmark = pytest.mark.skipif(not HAVE_ALE, reason='the atari extra is not installed (pip install -e ".[atari]")')

TIMING = {"time_s", "sps", "time_rollout_s", "time_update_s", "time_eval_s"}
# Breakout at the paper's settings, cut to 2 iterations of 2 envs x 128 steps
SMALL = ["experiment=ppo_paper_atari", "env=breakout", "total_timesteps=512", "algo.num_envs=2",
         "eval.every=0", "eval.episodes=1", "progress=false", "logger=none"]


@pytest.fixture(scope="module")
def breakout(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("atari")
    res = run_cli([*SMALL, f"hydra.run.dir={root / 'run'}"], cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]
    return root / "run"


def test_a_game_trains_at_the_papers_settings(breakout):
    rows = read_metrics(breakout)
    assert [r["global_step"] for r in rows] == [256, 512]
    assert [r["epsilon"] for r in rows] == pytest.approx([0.1, 0.05])  # clip 0.1 x alpha
    assert [r["learning_rate"] for r in rows] == pytest.approx([2.5e-4, 1.25e-4])
    assert rows[-1]["epochs"] == 3
    summary = read_summary(breakout)
    assert "eval_return" in summary
    config = json.loads((breakout / "run.json").read_text())["config"]
    assert config["network"]["_target_"] == "ppo_research.algo.cnn.NatureCNN"


@pytest.mark.skipif(not HAVE_ENVPOOL, reason="EnvPool is not installed")
def test_a_game_trains_on_envpool(tmp_path):
    res = run_cli([*SMALL, "env.backend=envpool", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [r["global_step"] for r in read_metrics(tmp_path / "run")] == [256, 512]


def test_play_and_the_exported_cnn_policy(breakout, tmp_path):
    played = run_cli([str(breakout), "--episodes", "1", "--stochastic"], cwd=tmp_path, module="ppo_research.play")
    assert played.returncode == 0, played.stderr[-2000:]
    assert re.search(r"return -?[\d.]+ ± [\d.]+", played.stdout)
    out = tmp_path / "breakout.onnx"
    exported = run_cli([str(breakout), "--format", "onnx", "--out", str(out), "--verify", "200"], cwd=tmp_path,
                       module="ppo_research.export")
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "obs float32 [batch, 4, 84, 84] -> action int64 [batch] in 0..3" in exported.stdout
    assert "on 200 observations: max |diff| = 0" in exported.stdout  # onnxruntime vs play's policy


def test_a_bfloat16_run_trains_plays_and_exports_in_float32(tmp_path):
    """``network.precision=bfloat16`` trains (the ratio starts near 1: the rollout and the update
    compute pi_old alike); play and export act in float32 on its float32 weights, and the export
    matches play."""
    run = tmp_path / "run"
    res = run_cli([*SMALL, "network.precision=bfloat16", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_metrics(run)
    assert [r["global_step"] for r in rows] == [256, 512]
    assert all(0 <= r["kl"] < 0.05 and 0.5 < r["ratio_min"] <= r["ratio_max"] < 2 for r in rows), rows
    played = run_cli([str(run), "--episodes", "1", "--stochastic"], cwd=tmp_path, module="ppo_research.play")
    assert played.returncode == 0, played.stderr[-2000:]
    out = tmp_path / "bf16.onnx"
    exported = run_cli([str(run), "--format", "onnx", "--out", str(out), "--verify", "50"], cwd=tmp_path,
                       module="ppo_research.export")
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "on 50 observations: max |diff| = 0" in exported.stdout


@pytest.mark.parametrize("args, says", [
    (["env=breakout", "network=mlp"], "network='MLPActorCritic' is invalid: expected a network for images"),
    (["env=pendulum", "network=nature_cnn"], "network='NatureCNN' is invalid: expected a network for flat"),
    (["env=breakout", "env.normalize_obs=true"], "env.normalize_obs=True is invalid"),
    (["env=cartpole", "env.episodic_life=true"], "env.episodic_life=True is invalid"),
    (["env=pendulum", "eval.deterministic=false"], "eval.deterministic=False is invalid"),
    (["env=breakout", "env.id=ALE/NoSuchGame-v5"], "env.id='ALE/NoSuchGame-v5' is invalid"),
])
def test_what_cannot_work_is_refused_before_training(args, says):
    """The checks every run makes before an env starts (run/loop/build.py), in this process; the
    command line turns each into one line and exit status 2 (the first case shows it)."""
    with pytest.raises(ConfigError) as err:
        check(compose_config(args))
    assert str(err.value).startswith(says) and "\n" not in str(err.value)


def test_a_refusal_is_one_line_and_writes_nothing(tmp_path):
    res = run_cli(["env=breakout", "network=mlp", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert res.returncode == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "expected a network for images" in errors[0], res.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_a_population_multirun_stacks_the_cnns_and_each_member_is_its_solo_run(breakout, tmp_path):
    """Two seeds of the CNN train as one population (algo/cnn.py: each member's forward is its own
    network's on its rows); every member's metrics are its solo run's to float32 round-off (the
    stacked update's means over padded minibatches and its one Adam: tests/run/loop/test_train.py).
    One process, so the launcher keeps the two jobs in one population (with two it would split
    them to keep both processes busy)."""
    sweep = tmp_path / "sweep"
    res = run_cli(["-m", *SMALL, "seed=0,1", "hydra/launcher=population", "hydra.launcher.processes=1",
                   f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "as 1 population(s)" in res.stdout + res.stderr
    solo_1 = tmp_path / "solo_1"
    res = run_cli([*SMALL, "seed=1", f"hydra.run.dir={solo_1}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    for job, solo in (("0", breakout), ("1", solo_1)):
        population = json.loads((sweep / job / "run.json").read_text())["population"]
        assert len(population["members"]) == 2 and population["index"] == int(job)
        member, alone = read_metrics(sweep / job), read_metrics(solo)
        assert [r["global_step"] for r in member] == [r["global_step"] for r in alone] == [256, 512]
        for got, want in zip(member, alone):
            assert got.keys() == want.keys()
            for key in want.keys() - TIMING:
                assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-6), (job, got["iteration"], key)
