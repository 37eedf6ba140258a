"""The committed 1M-step benchmark (``benchmarks/mujoco_1m/``, docs/benchmarks.md "A 1M-step
benchmark beside CleanRL"): CleanRL's four MuJoCo v4 tasks x 5 seeds, each run at 1M steps; the
investigation with CleanRL's two other settings (``benchmarks/mujoco_1m_cleanrl_settings/``:
HalfCheetah and Walker2d, learning rate annealed, value loss clipped at 0.2); and ``cleanrl_table``
rebuilds each committed table from its compact copy, byte for byte."""
from __future__ import annotations

import itertools
import json

import pytest
from helpers import REPO, run_cli

from ppo_research.tools.cleanrl_table import CLEANRL_PPO_CONTINUOUS

MUJOCO_1M = REPO / "benchmarks" / "mujoco_1m"
CLEANRL_SETTINGS = REPO / "benchmarks" / "mujoco_1m_cleanrl_settings"


def configs(directory):
    runs = sorted((d for d in directory.iterdir() if (d / "summary.json").is_file()), key=lambda d: int(d.name))
    for run in runs:
        assert json.loads((run / "summary.json").read_text())["global_step"] >= 1_000_000, run
        yield json.loads((run / "run.json").read_text())["config"]


def test_four_tasks_by_five_seeds_each_at_1m_steps_at_the_papers_settings():
    runs = list(configs(MUJOCO_1M))
    assert sorted((c["env"]["id"], c["seed"]) for c in runs) == sorted(itertools.product(CLEANRL_PPO_CONTINUOUS,
                                                                                          range(5)))
    for c in runs:
        assert c["total_timesteps"] == 1_000_000
        assert (c["algo"]["anneal_lr"], c["algo"]["clip_value_loss"]) == (False, None)


def test_the_investigation_reruns_two_tasks_with_cleanrls_other_settings():
    runs = list(configs(CLEANRL_SETTINGS))
    assert sorted((c["env"]["id"], c["seed"]) for c in runs) == sorted(
        itertools.product(["HalfCheetah-v4", "Walker2d-v4"], range(5)))
    for c in runs:
        assert c["total_timesteps"] == 1_000_000
        assert (c["algo"]["anneal_lr"], c["algo"]["clip_value_loss"]) == (True, 0.2)


@pytest.mark.parametrize("directory", [MUJOCO_1M, CLEANRL_SETTINGS], ids=lambda d: d.name)
def test_cleanrl_table_rebuilds_the_committed_table(directory, tmp_path):
    out = tmp_path / "cleanrl_table.md"
    res = run_cli([str(directory), "--out", str(out)], cwd=tmp_path, module="ppo_research.cleanrl_table", timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert out.read_text() == (directory / "cleanrl_table.md").read_text()
