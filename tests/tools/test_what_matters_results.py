"""The committed What Matters re-runs at 1M steps (docs/what_matters.md, "Re-runs at 1M steps"):
observation normalisation on and off, and the policy's last layer at gain 1.0, on HalfCheetah-v5
and Walker2d-v5, 5 seeds each, every run evaluated 10 times at the same steps (the paper's score
is their mean); the report rebuilds the committed tables from the compact copies for both
scores, byte for byte."""
from __future__ import annotations

import itertools
import json

import pytest
from helpers import REPO, run_cli

OBS_NORM = REPO / "benchmarks" / "wm_obs_norm_1m"
POLICY_INIT = REPO / "benchmarks" / "wm_policy_init_1m"
TASKS = ["HalfCheetah-v5", "Walker2d-v5"]


def runs(directory):
    return sorted((d for d in directory.iterdir() if (d / "summary.json").is_file()), key=lambda d: int(d.name))


def grid(directory, *keys):
    """(task, the ``keys`` of the config, seed) of every run; each run evaluated ten times."""
    cells = []
    for run in runs(directory):
        config = json.loads((run / "run.json").read_text())["config"]
        cells.append((config["env"]["id"], *(config[group][key] for group, key in keys), config["seed"]))
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        evaluated = [r["global_step"] for r in rows if r.get("eval_return") is not None]
        assert evaluated == [100_352 * k for k in range(1, 11)], run  # every 49 iterations of 2048
    return sorted(cells)


def test_obs_norm_on_and_off_on_two_tasks_by_five_seeds_each_evaluated_ten_times():
    assert grid(OBS_NORM, ("env", "normalize_obs"), ("network", "policy_gain")) == sorted(
        itertools.product(TASKS, [False, True], [0.01], range(5)))


def test_policy_gain_one_on_two_tasks_by_five_seeds_each_evaluated_ten_times():
    assert grid(POLICY_INIT, ("env", "normalize_obs"), ("network", "policy_gain")) == sorted(
        itertools.product(TASKS, [True], [1.0], range(5)))  # the baseline: OBS_NORM's runs with normalize_obs


@pytest.mark.parametrize("score", ["eval_mean", "eval_return"])
@pytest.mark.parametrize("finding", ["obs_norm", "policy_init"])
def test_the_report_rebuilds_the_committed_tables(finding, score, tmp_path):
    dirs, committed = ([OBS_NORM], OBS_NORM) if finding == "obs_norm" else (
        [POLICY_INIT, *(OBS_NORM / str(job) for job in range(10))], POLICY_INIT)
    out = tmp_path / "report"
    res = run_cli([*map(str, dirs), "--final", score, "--out", str(out)], cwd=tmp_path,
                  module="ppo_research.report", timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("summary.md", "aggregate.md"):
        assert (out / name).read_text() == (committed / f"report_{score}" / name).read_text(), name
