"""A resumed run with an extended budget describes itself with the new budget (issue: the report
read the old total_timesteps from .hydra/config.yaml and mislabelled the run)."""
from __future__ import annotations

import json

from helpers import TINY, run_cli

from ppo_research.tools.results import find_runs


def test_an_extended_resume_is_described_and_reported_with_its_new_budget(tmp_path):
    run_dir = tmp_path / "run"
    first = run_cli([*TINY, "env=cartpole", "logger=none", f"hydra.run.dir={run_dir}"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    more = run_cli([f"resume={run_dir}", "total_timesteps=512"], tmp_path)
    assert more.returncode == 0, more.stderr[-2000:]
    assert json.loads((run_dir / "run.json").read_text())["config"]["total_timesteps"] == 512
    (run,) = find_runs([tmp_path])
    assert run.config["total_timesteps"] == 512  # the results layer reads run.json, not the stale .hydra/
