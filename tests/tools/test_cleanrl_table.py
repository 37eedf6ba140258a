"""Runs beside CleanRL's published PPO figures, scored as openrlbenchmark scores CleanRL's runs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO, run_cli

from ppo_research.tools import cleanrl_table
from ppo_research.tools.cleanrl_table import CLEANRL_PPO_CONTINUOUS


def make_run(path: Path, env_id: str, seed: int, last100: float) -> Path:
    """A finished run directory (run.json, one metrics row, summary.json) with a known score."""
    path.mkdir(parents=True)
    config = {"seed": seed, "env": {"id": env_id}, "loss": {"_target_": "ppo_research.algo.losses.ClipLoss",
                                                             "epsilon": 0.2}}
    (path / "run.json").write_text(json.dumps({"config": config, "choices": {"env": "halfcheetah", "loss": "clip"},
                                               "overrides": [f"env.id={env_id}", f"seed={seed}"]}))
    (path / "metrics.jsonl").write_text(json.dumps({"iteration": 1, "global_step": 2048}) + "\n")
    (path / "summary.json").write_text(json.dumps({"global_step": 2048, "wall_time_s": 1.0, "sps": 2048.0,
                                                   "train_return": last100 + 1, "train_return_last100": last100}))
    return path


def test_scores_are_the_last_100_episodes_mean_with_cleanrl_std(tmp_path):
    cheetah = [3000.0, 2500.0, 3500.0, 1000.0, 4000.0]
    pendulum = [1000.0, 900.0, 1000.0]
    for seed, score in enumerate(cheetah):
        make_run(tmp_path / "sweep" / f"c{seed}", "HalfCheetah-v4", seed, score)
    for seed, score in enumerate(pendulum):
        make_run(tmp_path / "sweep" / f"p{seed}", "InvertedPendulum-v4", seed, score)
    make_run(tmp_path / "sweep" / "w0", "Walker2d-v5", 0, 10.0)  # not in CleanRL's table, one seed

    res = run_cli([str(tmp_path / "sweep"), "--out", str(tmp_path / "table.md")], cwd=tmp_path,
                  module="ppo_research.cleanrl_table")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "table.md").read_text() == res.stdout
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in res.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| env")}
    x = np.array(cheetah)
    # openrlbenchmark: mean ± ndarray.std() (ddof=0); the sample std beside it
    assert rows["HalfCheetah-v4"][3] == f"{x.mean():.2f} ± {x.std():.2f}" == "2800.00 ± 1029.56"
    assert rows["HalfCheetah-v4"][4] == f"{x.std(ddof=1):.2f}"
    assert rows["HalfCheetah-v4"][2] == "5 (0, 1, 2, 3, 4)"
    assert rows["HalfCheetah-v4"][6:] == ["2905.85 ± 1129.37", f"{2800 - 2905.85:.2f}", "no |"]
    assert rows["InvertedPendulum-v4"][6:] == ["950.98 ± 36.39", f"{2900 / 3 - 950.98:.2f}", "yes |"]
    assert rows["Walker2d-v5"][5:] == ["– (fewer than 3 seeds)", "– (not in CleanRL's table)", "–", "– |"]

    [row] = [r for r in cleanrl_table.rows(cleanrl_table.group_runs(cleanrl_table.find_runs([tmp_path / "sweep"])))
             if r["env"] == "HalfCheetah-v4"]
    low, high = row["interval"]
    half = 2.7764451051977987 * x.std(ddof=1) / np.sqrt(5)  # t(0.975, 4)
    assert (low, high) == pytest.approx((x.mean() - half, x.mean() + half))


def test_the_published_figures_are_the_tasks_of_the_benchmark_experiment():
    params = yaml.safe_load((REPO / "conf" / "experiment" / "mujoco_1m.yaml").read_text())["hydra"]["sweeper"]["params"]
    assert params["env.id"].split(",") == list(CLEANRL_PPO_CONTINUOUS)


@pytest.mark.parametrize("case", ["missing", "unfinished", "bad out"])
def test_bad_input_is_one_line(tmp_path, case, capsys):
    args = [str(tmp_path / "sweep")]
    if case != "missing":
        run = make_run(tmp_path / "sweep" / "0", "Hopper-v4", 0, 1.0)
        if case == "unfinished":
            (run / "summary.json").unlink()
        else:
            args += ["--out", str(tmp_path)]  # a directory
    assert cleanrl_table.main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1, err  # (unfinished runs are also named in a note line, as the report names them)
    assert {"missing": "no such directory", "unfinished": "no finished runs", "bad out": "it is a directory"}[case] \
        in err[0]
