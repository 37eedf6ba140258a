"""The committed What Matters re-runs at 1M steps (docs/what_matters.md, "Re-runs at 1M steps"):
observation normalisation on and off on HalfCheetah-v5 and Walker2d-v5, 5 seeds each, every run
evaluated 10 times at the same steps (the paper's score is their mean); the report rebuilds the
committed tables from the compact copy for both scores, byte for byte."""
from __future__ import annotations

import itertools
import json

import pytest
from helpers import REPO, run_cli

OBS_NORM = REPO / "benchmarks" / "wm_obs_norm_1m"


def runs(directory):
    return sorted((d for d in directory.iterdir() if (d / "summary.json").is_file()), key=lambda d: int(d.name))


def test_obs_norm_on_and_off_on_two_tasks_by_five_seeds_each_evaluated_ten_times():
    grid = []
    for run in runs(OBS_NORM):
        config = json.loads((run / "run.json").read_text())["config"]
        grid.append((config["env"]["id"], config["env"]["normalize_obs"], config["seed"]))
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        evaluated = [r["global_step"] for r in rows if r.get("eval_return") is not None]
        assert evaluated == [100_352 * k for k in range(1, 11)], run  # every 49 iterations of 2048
    assert sorted(grid) == sorted(itertools.product(["HalfCheetah-v5", "Walker2d-v5"], [False, True], range(5)))


@pytest.mark.parametrize("score", ["eval_mean", "eval_return"])
def test_the_report_rebuilds_the_committed_tables(score, tmp_path):
    out = tmp_path / "report"
    res = run_cli([str(OBS_NORM), "--final", score, "--out", str(out)], cwd=tmp_path, module="ppo_research.report",
                  timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("summary.md", "aggregate.md"):
        assert (out / name).read_text() == (OBS_NORM / f"report_{score}" / name).read_text(), name
