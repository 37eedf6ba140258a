"""``python -m ppo_research.report``: on a real multirun, and on hand-made run directories whose
numbers are known."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from omegaconf import OmegaConf

from conftest import TINY, read_summary, run_cli
from ppo_research.tools.report import Normalization, group_runs, summarize, write_report
from ppo_research.tools.results import RUN_FILE, find_runs, read_run


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


# -- on a real multirun ---------------------------------------------------------------------------

def test_report_of_a_multirun_matches_the_runs_summaries(tmp_path):
    sweep, out = tmp_path / "sweep", tmp_path / "report"
    proc = run_cli(["-m", "loss=clip,klpen", "seed=0,1", "env=cartpole", "logger=none", *TINY,
                    f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli([str(sweep), "--out", str(out)], cwd=tmp_path, timeout=60, module="ppo_research.report")
    assert proc.returncode == 0, proc.stderr
    assert is_png(out / "curves.png")

    # expected numbers, straight from each run's own files
    expected: dict[str, list[dict]] = {}
    for job in sorted(sweep.glob("[0-9]")):
        loss = next(o for o in OmegaConf.load(job / ".hydra" / "overrides.yaml") if o.startswith("loss="))
        expected.setdefault(loss, []).append(read_summary(job))
    rows = {row["variant"]: row for row in read_csv(out / "summary.csv")}
    assert set(rows) == {"loss=clip", "loss=klpen"}
    markdown = (out / "summary.md").read_text()
    assert "final return [eval_return]" in markdown
    for variant, summaries in expected.items():
        row = rows[variant]
        finals = np.array([s["eval_return"] for s in summaries])
        assert row["env"] == "CartPole-v1" and int(row["n_seeds"]) == 2 and row["final_key"] == "eval_return"
        assert float(row["final_mean"]) == pytest.approx(finals.mean())
        assert float(row["final_std"]) == pytest.approx(finals.std(ddof=1))
        assert float(row["final_iqm"]) == pytest.approx(finals.mean())  # IQM of two values is their mean
        assert float(row["final_mean_ci_low"]) >= finals.min() - 1e-9
        assert float(row["final_mean_ci_high"]) <= finals.max() + 1e-9
        assert float(row["steps"]) == pytest.approx(np.mean([s["global_step"] for s in summaries]))
        assert float(row["wall_time_s"]) == pytest.approx(np.mean([s["wall_time_s"] for s in summaries]))
        assert float(row["sps"]) == pytest.approx(np.mean([s["sps"] for s in summaries]))
        assert f"| CartPole-v1 | {variant} | 2 | {finals.mean():.4g} ± {finals.std(ddof=1):.4g} |" in markdown

    # --final train_return scores the training episodes instead, and says so
    proc = run_cli([str(sweep), "--out", str(out / "train"), "--final", "train_return"], cwd=tmp_path,
                   timeout=60, module="ppo_research.report")
    assert proc.returncode == 0, proc.stderr
    rows = {row["variant"]: row for row in read_csv(out / "train" / "summary.csv")}
    for variant, summaries in expected.items():
        assert rows[variant]["final_key"] == "train_return"
        assert float(rows[variant]["final_mean"]) == pytest.approx(np.mean([s["train_return"] for s in summaries]))
    assert "final return [train_return]" in (out / "train" / "summary.md").read_text()


def test_report_of_an_optuna_study_folder(tmp_path):
    """A study's trial runs (no Hydra: described by the trainer's run.json) are runs like any
    other: one variant per trial, named by its sampled value."""
    spec = {"study": "tiny", "overrides": ["env=cartpole", "logger=none", *TINY], "trials": 2,
            "params": {"loss.epsilon": {"low": 0.1, "high": 0.3}}, "sampler": {"name": "RandomSampler", "seed": 0}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(spec))
    proc = run_cli(["tiny.yaml"], cwd=tmp_path, timeout=180, module="ppo_research.sweep")
    assert proc.returncode == 0, proc.stderr[-3000:]
    study_dir, out = tmp_path / "outputs" / "sweeps" / "tiny", tmp_path / "report"
    run_dirs = sorted(study_dir.glob("trials/*/s0"))
    assert len(run_dirs) == 2 and not list(study_dir.rglob(".hydra"))
    trials = optuna.load_study(study_name="tiny", storage=f"sqlite:///{study_dir / 'study.db'}").get_trials()
    for trial, run_dir in zip(trials, run_dirs):  # each run says what it is
        described = json.loads((run_dir / RUN_FILE).read_text())
        assert described["config"]["loss"]["epsilon"] == trial.params["loss.epsilon"]
        assert described["choices"]["loss"] == "clip" and "seed=0" in described["overrides"]

    proc = run_cli([str(study_dir), "--out", str(out)], cwd=tmp_path, timeout=60, module="ppo_research.report")
    assert proc.returncode == 0, proc.stderr
    rows = {row["variant"]: row for row in read_csv(out / "summary.csv")}
    assert set(rows) == {f"loss.epsilon={t.params['loss.epsilon']}" for t in trials}
    for trial, run_dir in zip(trials, run_dirs):
        row = rows[f"loss.epsilon={trial.params['loss.epsilon']}"]
        assert (row["env"], row["n_seeds"], row["seeds"]) == ("CartPole-v1", "1", "0")
        assert float(row["final_mean"]) == pytest.approx(read_summary(run_dir)["eval_return"]) == trial.value
    assert len((out / "summary.md").read_text().splitlines()) == 4 + 2  # note, blank, header, rule + 2 rows
    assert is_png(out / "curves.png")


def test_run_json_describes_a_run_before_hydra_files(tmp_path):
    run = make_run(tmp_path / "run", loss="clip", epsilon=0.1)
    assert read_run(run).config["loss.epsilon"] == 0.1 and read_run(run).choices["loss"] == "clip"
    described = {"config": {"seed": 3, "env": {"id": "CartPole-v1"}, "loss": {**LOSSES["klpen"]}},
                 "choices": {"loss": "klpen", "env": "cartpole", "hydra/launcher": "basic"},
                 "overrides": ["loss=klpen", "seed=3"]}
    (run / RUN_FILE).write_text(json.dumps(described))
    read = read_run(run)
    assert (read.seed, read.choices) == (3, {"loss": "klpen", "env": "cartpole"})  # hydra/* is not a group
    assert read.overrides == ["loss=klpen", "seed=3"]
    assert read.values("loss") == LOSSES["klpen"] and read.summary["eval_return"] == 1.0


def test_the_results_layer_reads_the_file_the_trainer_writes():
    from ppo_research.run import train

    assert RUN_FILE == train.RUN_FILE


@pytest.mark.parametrize("case", ["missing", "empty", "unfinished", "bad final key"])
def test_bad_input_is_a_one_line_error(tmp_path, case):
    target = tmp_path / "runs"
    args = [str(target)]
    if case != "missing":
        target.mkdir()
    if case == "unfinished":
        make_run(target / "0", summary=None)
    if case == "bad final key":
        make_run(target / "0")
        args += ["--final", "no_such_key"]
    proc = run_cli(args, cwd=tmp_path, timeout=60, module="ppo_research.report")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert {"missing": "no such directory", "empty": "no runs under", "unfinished": "no finished runs",
            "bad final key": "no 'no_such_key'"}[case] in errors[0]


# -- on hand-made runs ----------------------------------------------------------------------------

LOSSES = {"clip": {"_target_": "ppo_research.algo.losses.ClipLoss", "epsilon": 0.2},
          "klpen": {"_target_": "ppo_research.algo.losses.KLPenaltyLoss", "beta": 1.0, "kl_target": 0.01,
                    "epsilon": None}}
ENVS = {"cartpole": ("CartPole-v1", 0.98), "pendulum": ("Pendulum-v1", 0.99)}


def make_run(path: Path, loss: str = "clip", env: str = "cartpole", seed: int = 0, epsilon: float | None = None,
             final: float = 1.0, summary: dict | None | bool = True, total: int = 300) -> Path:
    """A run directory as the trainer and Hydra leave it, with known numbers."""
    env_id, gamma = ENVS[env]
    loss_node = dict(LOSSES[loss], **({"epsilon": epsilon} if epsilon is not None else {}))
    config = {"seed": seed, "total_timesteps": total, "progress": False, "env": {"id": env_id},
              "loss": loss_node, "advantage": {"_target_": "ppo_research.algo.advantages.GAE", "gamma": gamma}}
    overrides = [f"loss={loss}", f"env={env}", f"seed={seed}"] + ([f"loss.epsilon={epsilon}"] if epsilon else [])
    (path / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), path / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), path / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": {
        "loss": loss, "env": env, "advantage": "gae", "hydra/launcher": "basic"}}}}), path / ".hydra" / "hydra.yaml")
    rows = [{"iteration": i, "global_step": 100 * i, "episode_return": final * i / 3} for i in (1, 2, 3)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary is not None:
        data = {"global_step": 300, "wall_time_s": 2.0 + seed, "sps": 150.0 - seed, "train_return": final - 1,
                "eval_return": final}
        (path / "summary.json").write_text(json.dumps(data))
    return path


def test_variants_are_named_by_what_varies(tmp_path):
    i = 0
    for env in ENVS:
        for loss, eps in (("clip", 0.1), ("clip", 0.3), ("klpen", None)):
            for seed in (0, 1):
                make_run(tmp_path / str(i), loss, env, seed, eps)
                i += 1
    variants = group_runs(find_runs([tmp_path]))
    # env is a facet (its preset's gamma is implied); epsilon is named only where it varies
    assert [(v.env, v.label, sorted(r.seed for r in v.runs)) for v in variants] == [
        (env_id, label, [0, 1]) for env_id in ("CartPole-v1", "Pendulum-v1")
        for label in ("loss=clip, loss.epsilon=0.1", "loss=clip, loss.epsilon=0.3", "loss=klpen")]


def test_a_difference_outside_the_varying_groups_is_named(tmp_path):
    make_run(tmp_path / "0", "clip", total=300)
    make_run(tmp_path / "1", "klpen", total=600)  # not implied by loss=klpen: the reader must see it
    assert [v.label for v in group_runs(find_runs([tmp_path]))] == ["loss=clip, total_timesteps=300",
                                                                    "loss=klpen, total_timesteps=600"]


def test_one_run_dir_is_a_report_too(tmp_path):
    run = make_run(tmp_path / "run", final=7.0)
    files = write_report([run])
    assert files["summary_csv"].parent == run / "report"
    [row] = read_csv(files["summary_csv"])  # nothing varies: the setting names itself
    assert (row["variant"], row["n_seeds"], float(row["final_mean"]), row["final_std"]) == ("loss=clip, advantage=gae", "1", 7.0, "")


def test_normalized_scores_random_zero_best_one(tmp_path):
    finals = {("clip", "cartpole"): (100.0, 120.0), ("klpen", "cartpole"): (50.0, 70.0),
              ("clip", "pendulum"): (-200.0, -400.0), ("klpen", "pendulum"): (-1000.0, -1200.0)}
    i = 0
    for (loss, env), values in finals.items():
        for seed, final in enumerate(values):
            make_run(tmp_path / "runs" / str(i), loss, env, seed, final=final)
            i += 1
    spec = tmp_path / "norm.yaml"
    spec.write_text("name: best setting\nrandom: {CartPole-v1: 10.0, Pendulum-v1: -1300.0}\nreference: best\n")
    out = tmp_path / "out"
    proc = run_cli([str(tmp_path / "runs"), "--out", str(out), "--normalize", str(spec)], cwd=tmp_path,
                   timeout=60, module="ppo_research.report")
    assert proc.returncode == 0, proc.stderr
    table = {row["variant"]: row for row in read_csv(out / "normalized.csv")}
    cart_klpen = (60.0 - 10.0) / (110.0 - 10.0)  # means 60 and 110; random 10
    pend_klpen = (-1100.0 + 1300.0) / (-300.0 + 1300.0)
    assert float(table["loss=clip"]["CartPole-v1"]) == pytest.approx(1.0)
    assert float(table["loss=clip"]["Pendulum-v1"]) == pytest.approx(1.0)
    assert float(table["loss=klpen"]["CartPole-v1"]) == pytest.approx(cart_klpen)
    assert float(table["loss=klpen"]["mean over envs"]) == pytest.approx((cart_klpen + pend_klpen) / 2)
    assert "random policy = 0, best setting = 1" in (out / "normalized.md").read_text()

    # the API a paper table uses: fixed reference scores per env; an env without a baseline is blank
    norm = Normalization(random={"CartPole-v1": 10.0}, reference={"CartPole-v1": 210.0}, name="paper")
    rows = summarize(group_runs(find_runs([tmp_path / "runs"])), normalization=norm)
    by = {(r["env"], r["variant"]): r["normalized_mean"] for r in rows}
    assert by[("CartPole-v1", "loss=clip")] == pytest.approx((110.0 - 10.0) / 200.0)
    assert math.isnan(by[("Pendulum-v1", "loss=clip")])
