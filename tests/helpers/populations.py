"""What a population launcher's multirun leaves: its job directories, their overrides, and the
check that one is a finished run as a basic-launcher job leaves it (hydra/launcher=population and
population_slurm alike)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from helpers import read_metrics, read_summary, run_cli


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def overrides_of(job: Path) -> dict[str, str]:
    return dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))


def assert_complete(job: Path, steps: int = 256) -> None:
    """A finished run directory, as a basic-launcher job leaves it."""
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        assert (job / ".hydra" / name).is_file(), job
    rows = read_metrics(job)
    assert [r["iteration"] for r in rows] == list(range(1, len(rows) + 1)) and rows[-1]["global_step"] == steps
    summary = read_summary(job)
    assert summary["global_step"] == steps and summary["eval_return"] is not None
    assert list((job / "checkpoints").glob("ckpt_*.pt"))
    described = json.loads((job / "run.json").read_text())
    config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
    assert described["config"]["seed"] == config["seed"] and described["config"]["loss"] == config["loss"]
    hydra = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert hydra["job"]["num"] == int(job.name) and Path(hydra["runtime"]["output_dir"]) == job.resolve()


def report_rows(sweep: Path, out: Path) -> dict[str, dict]:
    """``python -m ppo_research.report`` over a multirun's sweep directory (it must succeed): its
    summary.csv rows by variant."""
    proc = run_cli([str(sweep), "--out", str(out)], cwd=out.parent, timeout=120, module="ppo_research.report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "summary.csv", newline="") as f:
        return {row["variant"]: row for row in csv.DictReader(f)}
