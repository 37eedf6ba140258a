"""``python -m ppo_research.bench``: a real (tiny) measurement, with the reference timed beside it."""
from __future__ import annotations

import json

from conftest import REPO, run_cli


def test_bench_times_the_framework_and_the_reference_side_by_side(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli(["--case", "cartpole", "--repeats", "1", "--steps", "512", "--json", str(out)], cwd=REPO,
                     module="ppo_research.bench", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["env"] == "cartpole" and row["global_step"] >= 512
    assert row["train_sps"] > 0 and row["reference_sps"] > 0
    assert row["vs_reference"] == row["train_sps"] / row["reference_sps"]  # one repeat: its own ratio
    assert "| x ref |" in result.stdout and "cartpole" in result.stdout
