"""The committed 1M-step benchmark (``benchmarks/mujoco_1m/``, docs/benchmarks.md "A 1M-step
benchmark beside CleanRL"): CleanRL's four MuJoCo v4 tasks x 5 seeds, each run at 1M steps, and
``cleanrl_table`` rebuilds the committed table from the compact copy, byte for byte."""
from __future__ import annotations

import itertools
import json

from helpers import REPO, run_cli

from ppo_research.tools.cleanrl_table import CLEANRL_PPO_CONTINUOUS

MUJOCO_1M = REPO / "benchmarks" / "mujoco_1m"


def test_four_tasks_by_five_seeds_each_at_1m_steps():
    runs = sorted((d for d in MUJOCO_1M.iterdir() if (d / "summary.json").is_file()), key=lambda d: int(d.name))
    assert len(runs) == 20
    grid = []
    for run in runs:
        config = json.loads((run / "run.json").read_text())["config"]
        grid.append((config["env"]["id"], config["seed"]))
        assert config["total_timesteps"] == 1_000_000
        assert json.loads((run / "summary.json").read_text())["global_step"] >= 1_000_000, run
    assert sorted(grid) == sorted(itertools.product(CLEANRL_PPO_CONTINUOUS, range(5)))


def test_cleanrl_table_rebuilds_the_committed_table(tmp_path):
    out = tmp_path / "cleanrl_table.md"
    res = run_cli([str(MUJOCO_1M), "--out", str(out)], cwd=tmp_path, module="ppo_research.cleanrl_table", timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert out.read_text() == (MUJOCO_1M / "cleanrl_table.md").read_text()
