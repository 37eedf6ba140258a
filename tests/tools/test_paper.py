"""The PPO paper's Table 1: experiment files, the job plan, random baselines and the score table."""
from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO, TINY, compose_config, read_summary, run_cli

from ppo_research.tools import paper
from ppo_research.tools.report import Normalization
from ppo_research.tools.results import ResultsError

PAPER_ENV_IDS = {"HalfCheetah-v5", "Hopper-v5", "InvertedDoublePendulum-v5", "InvertedPendulum-v5", "Reacher-v5",
                 "Swimmer-v5", "Walker2d-v5"}
SMALL_SETTINGS = ["No clipping or penalty", "Clipping, ε = 0.2", "Adaptive KL, d_targ = 0.01", "Fixed KL, β = 1"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- settings and plans --------------------------------------------------------------------------

def test_setting_names_come_from_loss_values_and_name_what_the_paper_did_not_run():
    klpen = {"_target_": "ppo_research.algo.losses.KLPenaltyLoss", "beta": 1.0, "kl_target": 0.01, "adaptive": True}
    assert paper.setting_of(klpen) == "Adaptive KL, d_targ = 0.01"
    assert paper.setting_of({**klpen, "direction": "reverse"}) == "Adaptive KL, d_targ = 0.01 (direction=reverse)"
    assert paper.setting_of({**klpen, "beta": 2.0}) == "Adaptive KL, d_targ = 0.01 (beta=2.0)"
    # With beta fixed, d_targ is never read: it does not make another setting.
    assert paper.setting_of({**klpen, "adaptive": False, "kl_target": 0.05}) == "Fixed KL, β = 1"
    assert paper.setting_of({**klpen, "adaptive": False, "epsilon": 0.2}) == "Fixed KL, β = 1 (epsilon=0.2)"
    assert paper.setting_of({"_target_": "ppo_research.algo.losses.ClipLoss", "epsilon": 0.1}) == "Clipping, ε = 0.1"


def test_full_scale_plan_lists_231_jobs_of_the_paper_protocol():
    """The grid, expanded as -m expands it; every job composed would take ~30 s, so one job of
    each setting and one of each task are composed and validated here (the small plan below
    composes all of its 36; the committed full run, tests/tools/test_table1_results.py, is the
    231 jobs themselves)."""
    jobs = paper.plan(["experiment=ppo_paper_table1"], compose=False)
    assert len(jobs) == 231 and [j.number for j in jobs] == list(range(231))
    cells = [dict(o.split("=", 1) for o in j.overrides) for j in jobs]
    grid = {(c["paper_setting"], c["env"], c["seed"]) for c in cells}
    assert len(grid) == 231
    settings, envs = sorted({c["paper_setting"] for c in cells}), sorted({c["env"] for c in cells})
    assert len(settings) == 11 and envs == sorted(paper.PAPER_ENVS)
    assert grid == set(itertools.product(settings, envs, ("0", "1", "2")))
    sample = [next(j for j, c in zip(jobs, cells) if c["paper_setting"] == s) for s in settings]
    sample += [next(j for j, c in zip(jobs, cells) if c["env"] == e) for e in envs]
    checked = [paper.plan(list(j.overrides))[0] for j in sample]  # composes and validates each
    assert {j.setting for j in checked} == set(paper.PUBLISHED)
    assert {j.env_id for j in checked} == PAPER_ENV_IDS
    assert {j.total_timesteps for j in checked} == {1_000_000}
    # The per-job loss parameters behind the names, checked on the composed config itself.
    composed = compose_config(["experiment=ppo_paper_table1", "paper_setting=klpen_0.003", "env=hopper"])
    assert (composed.loss.kl_target, composed.loss.beta, composed.loss.adaptive) == (0.003, 1.0, True)
    composed = compose_config(["experiment=ppo_paper_table1", "paper_setting=klfixed_10", "env=hopper"])
    assert (composed.loss.beta, composed.loss.adaptive) == (10.0, False)


@pytest.mark.parametrize("env", sorted(paper.PAPER_ENVS))
def test_paper_hyperparameters_for_every_env(env):
    cfg = compose_config(["experiment=ppo_paper_table1", f"env={env}"])
    algo = cfg.algo
    assert (algo.num_envs, algo.num_steps, algo.num_epochs, algo.minibatch_size) == (1, 2048, 10, 64)
    assert (algo.learning_rate, algo.ent_coef, algo.anneal_lr) == (3e-4, 0.0, False)
    assert (cfg.advantage.gamma, cfg.advantage.lam) == (0.99, 0.95)
    assert list(cfg.network.hidden_sizes) == [64, 64] and cfg.network.activation == "tanh"
    assert cfg.total_timesteps == 1_000_000 and cfg.env.normalize_obs and cfg.env.normalize_reward


def test_plan_command_and_small_scale_plan():
    res = run_cli(["plan", "experiment=ppo_paper_table1", "--no-compose"], cwd=REPO, module="ppo_research.paper")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[-1] == "231 jobs" and len(lines) == 232
    assert not (REPO / "multirun.yaml").exists()  # nothing launched, nothing written
    jobs = paper.plan(["experiment=ppo_paper_table1_small"])
    assert len(jobs) == 36 and {j.setting for j in jobs} == set(SMALL_SETTINGS)
    assert {j.env_id for j in jobs} == {"Hopper-v5", "InvertedPendulum-v5", "Reacher-v5"}
    assert {j.seed for j in jobs} == {0, 1, 2} and {j.total_timesteps for j in jobs} == {200_704}


def test_plan_rejects_a_bad_override_in_one_line():
    res = run_cli(["plan", "experiment=ppo_paper_table1", "paper_setting=clip_0.25"], cwd=REPO,
                  module="ppo_research.paper")
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "clip_0.2" in res.stderr
    assert "Traceback" not in res.stderr


# -- random baselines ----------------------------------------------------------------------------

def test_random_baselines_command(tmp_path):
    out = tmp_path / "baselines.json"
    res = run_cli(["baselines", "--envs", "inverted_pendulum,reacher", "--episodes", "3", "--seed", "7",
                   "--out", str(out)], cwd=tmp_path, module="ppo_research.paper")
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text())
    assert set(result["random"]) == {"InvertedPendulum-v5", "Reacher-v5"} and result["episodes"] == 3
    # Same seed, same numbers, in process or not.
    env_id, returns = paper.random_returns("reacher", 3, seed=7)
    assert env_id == "Reacher-v5" and result["random"][env_id] == pytest.approx(returns.mean())
    assert (returns < 0).all()  # Reacher pays a distance and a control cost every step
    _, pendulum = paper.random_returns("inverted_pendulum", 3, seed=7)
    assert ((pendulum >= 1) & (pendulum < 100) & (pendulum == np.round(pendulum))).all()  # +1 per step, falls soon
    assert not np.array_equal(paper.random_returns("reacher", 3, seed=8)[1], returns)
    # The file is a report.py normalisation file too.
    norm = Normalization.from_file(out)
    assert norm.reference == "best" and norm.random == result["random"]


def test_committed_baselines_cover_the_paper_envs():
    result = json.loads(paper.BASELINES_FILE.read_text())
    assert set(result["random"]) == PAPER_ENV_IDS and result["episodes"] == 100
    assert all(math.isfinite(v) for v in result["random"].values())
    assert Normalization.from_file(paper.BASELINES_FILE).random == result["random"]


# -- the table -----------------------------------------------------------------------------------

def expected_scores(jobs: list[Path], random: dict) -> dict[str, float]:
    """The paper's score recomputed from summary.json files: per env the best setting's mean is 1,
    the random policy 0; a setting's score is the mean over its runs."""
    finals: dict[tuple[str, str], list[float]] = {}
    for job in jobs:
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        finals.setdefault((cfg["env"]["id"], paper.setting_of(cfg["loss"])), []).append(
            read_summary(job)["train_return_last100"])
    best = {env: max(np.mean(v) for (e, _), v in finals.items() if e == env) for env, _ in finals}
    scores: dict[str, list[float]] = {}
    for (env, setting), values in finals.items():
        scores.setdefault(setting, []).extend((x - random[env]) / (best[env] - random[env]) for x in values)
    return {s: float(np.mean(v)) for s, v in scores.items()}


def test_small_experiment_at_toy_budget_produces_the_table(tmp_path):
    """The small-scale experiment file, its multirun through joblib and the table command, with
    the grid cut to 2 envs x 1 seed and a toy budget."""
    overrides = ["experiment=ppo_paper_table1_small", "env=inverted_pendulum,reacher", "seed=0", "logger=none", *TINY]
    sweep_dir = tmp_path / "multirun"
    res = run_cli(["-m", *overrides, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                   f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sorted((p.parent for p in sweep_dir.glob("*/summary.json")), key=lambda p: int(p.name))
    assert len(jobs) == 8
    # The plan is the list Hydra launched, job for job.
    planned = paper.plan(overrides, compose=False)
    assert [list(j.overrides) for j in planned] == [yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text())
                                                    for d in jobs]

    res = run_cli(["table", str(sweep_dir)], cwd=tmp_path, module="ppo_research.paper")
    assert res.returncode == 0, res.stderr[-3000:]
    out = sweep_dir / "paper_table1"
    rows = read_csv(out / "table1.csv")
    assert [r["setting"] for r in rows] == SMALL_SETTINGS  # one row per setting, in the paper's order
    random = json.loads(paper.BASELINES_FILE.read_text())["random"]
    expected = expected_scores(jobs, random)
    for row in rows:
        assert float(row["score"]) == pytest.approx(expected[row["setting"]], rel=1e-9)
        assert float(row["published"]) == paper.PUBLISHED[row["setting"]] and row["runs"] == "2"
    assert "| Clipping, ε = 0.2 | " in res.stdout and "| 0.82 |" in res.stdout
    assert (out / "table1.md").read_text() in res.stdout
    assert (out / "report" / "curves.png").stat().st_size > 0  # report.py's curves, same runs


def fake_run(root: Path, name: str, env_id: str, loss: dict, seed: int, score: float, steps: int = 1000) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    config = {"seed": seed, "total_timesteps": steps, "env": {"id": env_id}, "loss": loss,
              "algo": {"num_steps": 2048}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    row = {"iteration": 1, "global_step": steps, "episode_return": score}
    (run / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    (run / "summary.json").write_text(json.dumps({"global_step": steps, "wall_time_s": 1.0, "sps": 1000.0,
                                                  "train_return_last100": score}))
    return run


CLIP = {"_target_": "ppo_research.algo.losses.ClipLoss", "epsilon": 0.2}
CPI = {"_target_": "ppo_research.algo.losses.CPILoss"}


def test_table_numbers_by_hand(tmp_path):
    # A: random 0; clip 10, 20 (mean 15, the best); cpi 0, -6.  B: random -10; clip 0, 0; cpi 10, 30 (mean 20, best)
    for i, (env, loss, seed, score) in enumerate([("A-v0", CLIP, 0, 10.0), ("A-v0", CLIP, 1, 20.0),
                                                  ("A-v0", CPI, 0, 0.0), ("A-v0", CPI, 1, -6.0),
                                                  ("B-v0", CLIP, 0, 0.0), ("B-v0", CLIP, 1, 0.0),
                                                  ("B-v0", CPI, 0, 10.0), ("B-v0", CPI, 1, 30.0)]):
        fake_run(tmp_path / "runs", str(i), env, loss, seed, score)
    baselines = tmp_path / "random.json"
    baselines.write_text(json.dumps({"random": {"A-v0": 0.0, "B-v0": -10.0}}))
    text, files = paper.write_table([str(tmp_path / "runs")], baselines, tmp_path / "out", n_boot=200, curves=False)
    rows = {r["setting"]: r for r in read_csv(files["table_csv"])}
    # clip: A (10/15, 20/15), B (10/30, 10/30) -> mean 0.67;  cpi: A (0, -6/15), B (20/30, 40/30) -> 0.4
    assert float(rows["Clipping, ε = 0.2"]["score"]) == pytest.approx((10 / 15 + 20 / 15 + 2 * 10 / 30) / 4)
    assert float(rows["No clipping or penalty"]["score"]) == pytest.approx((0 - 6 / 15 + 20 / 30 + 40 / 30) / 4)
    assert float(rows["No clipping or penalty"]["B-v0"]) == pytest.approx(1.0)
    assert (rows["Clipping, ε = 0.2"]["rank"], rows["No clipping or penalty"]["rank"]) == ("1", "2")
    # best = the best single run: A 20, B 30 -> clip: A (10/20, 20/20), B (10/40, 10/40); cpi: A (0, -6/20),
    # B (20/40, 40/40)
    assert float(rows["Clipping, ε = 0.2"]["score_best_run"]) == pytest.approx((0.5 + 1 + 0.25 + 0.25) / 4)
    assert float(rows["No clipping or penalty"]["score_best_run"]) == pytest.approx((0 - 0.3 + 0.5 + 1) / 4)
    assert "| best setting's mean | 15.0 | 20.0 |" in text and "| best single run | 20.0 | 30.0 |" in text
    # two runs per env: too few for an interval, and the table says none
    assert rows["Clipping, ε = 0.2"]["ci_low"] == rows["Clipping, ε = 0.2"]["ci_low_best_run"] == ""
    assert "| Clipping, ε = 0.2 | 0.67 | – | 1 | 0.50 | – | 1 | 4 | 0.82 | 1 |" in text
    assert "Their order holds for 1 under the best setting's mean and for 1 under the best single run." in text
    assert "Every ordering of the paper holds under both readings." in text and "intervals apart: none" not in text


def test_table_refuses_mixed_protocols_and_missing_baselines(tmp_path):
    fake_run(tmp_path / "runs", "0", "A-v0", CLIP, 0, 1.0, steps=1000)
    fake_run(tmp_path / "runs", "1", "A-v0", CPI, 0, 2.0, steps=2000)
    baselines = tmp_path / "random.json"
    baselines.write_text(json.dumps({"random": {"A-v0": 0.0}}))
    with pytest.raises(ResultsError, match="differ in total_timesteps"):
        paper.write_table([str(tmp_path / "runs")], baselines, tmp_path / "out", curves=False)
    baselines.write_text(json.dumps({"random": {"B-v0": 0.0}}))
    res = run_cli(["table", str(tmp_path / "runs"), "--baselines", str(baselines), "--no-curves"], cwd=tmp_path,
                  module="ppo_research.paper")
    assert res.returncode == 2 and res.stderr.startswith("error: no random baseline for A-v0")


def test_table_notes_an_incomplete_grid(tmp_path):
    for i, (env, loss, score) in enumerate([("A-v0", CLIP, 2.0), ("A-v0", CPI, 1.0), ("B-v0", CLIP, 3.0)]):
        fake_run(tmp_path / "runs", str(i), env, loss, 0, score)
    baselines = tmp_path / "random.json"
    baselines.write_text(json.dumps({"random": {"A-v0": 0.0, "B-v0": 0.0}}))
    text, files = paper.write_table([str(tmp_path / "runs")], baselines, tmp_path / "out", n_boot=50, curves=False)
    assert "Note: the grid is incomplete (No clipping or penalty on B-v0)" in text
    rows = {r["setting"]: r for r in read_csv(files["table_csv"])}
    assert (rows["No clipping or penalty"]["runs"], float(rows["No clipping or penalty"]["score"])) == ("1", 0.5)


# -- both readings of "best", the stratified interval (issue 31) ----------------------------------------

#: raw scores built so that the two readings of "best" order clip and cpi differently: B-v0's best
#: single run (cpi's 30) is three times its best setting mean, so reading best as the best run
#: shrinks B-v0, where cpi is ahead, against A-v0, where clip is ahead
FLIP = {("A-v0", "clip"): [9.0, 10.0, 11.0], ("A-v0", "cpi"): [4.0, 5.0, 6.0],
        ("B-v0", "clip"): [2.0, 3.0, 4.0], ("B-v0", "cpi"): [0.0, 0.0, 30.0]}
FLIP_RANDOM = {"A-v0": -2.0, "B-v0": 1.0}


def brute_force_table(finals: dict, random: dict, reading: str, n_boot: int, seed: int = 1):
    """Scores and stratified percentile intervals straight from the definitions, by loops."""
    envs = sorted({env for env, _ in finals})
    best = {env: max((np.mean(v) if reading == "mean" else max(v)) for (e, _), v in finals.items() if e == env)
            for env in envs}
    normalised = {}
    for (env, setting), values in finals.items():
        normalised.setdefault(setting, []).append([(x - random[env]) / (best[env] - random[env]) for x in values])
    rng = np.random.default_rng(seed)
    out = {}
    for setting, tasks in normalised.items():
        score = np.mean([x for task in tasks for x in task])
        resampled = [np.mean([x for task in tasks for x in rng.choice(task, len(task))]) for _ in range(n_boot)]
        out[setting] = (score, *np.percentile(resampled, [2.5, 97.5]))
    return out


def test_the_two_readings_of_best_can_flip_the_order(tmp_path):
    names = {"clip": ("Clipping, ε = 0.2", CLIP), "cpi": ("No clipping or penalty", CPI)}
    for i, ((env, setting), values) in enumerate(FLIP.items()):
        for seed, score in enumerate(values):
            fake_run(tmp_path / "runs", f"{i}-{seed}", env, names[setting][1], seed, score)
    by_mean = brute_force_table(FLIP, FLIP_RANDOM, "mean", 4000)
    by_run = brute_force_table(FLIP, FLIP_RANDOM, "run", 4000)
    assert by_mean["clip"][0] < by_mean["cpi"][0] and by_run["clip"][0] > by_run["cpi"][0]  # the case flips

    baselines = tmp_path / "random.json"
    baselines.write_text(json.dumps({"random": FLIP_RANDOM}))
    text, files = paper.write_table([str(tmp_path / "runs")], baselines, tmp_path / "out", n_boot=4000,
                                    curves=False)
    rows = {r["setting"]: r for r in read_csv(files["table_csv"])}
    for setting, (name, _) in names.items():
        row = rows[name]
        for suffix, expected in (("", by_mean[setting]), ("_best_run", by_run[setting])):
            got = [float(row[f"{key}{suffix}"]) for key in ("score", "ci_low", "ci_high")]
            assert got[0] == pytest.approx(expected[0], rel=1e-12)
            assert got[1:] == pytest.approx(expected[1:], abs=0.02)  # two Monte Carlo bootstraps
    assert (rows["No clipping or penalty"]["rank"], rows["Clipping, ε = 0.2"]["rank"]) == ("1", "2")
    assert (rows["Clipping, ε = 0.2"]["rank_best_run"], rows["No clipping or penalty"]["rank_best_run"]) == ("1", "2")
    # the table says plainly which of the paper's orderings hold under which reading
    assert ("Table 1 ranks apart 1 pair of these settings (ties left out). Their order holds for 0 under the best "
            "setting's mean (0 with the two intervals apart) and for 1 under the best single run (") in text
    clip, cpi = by_mean["clip"][0], by_mean["cpi"][0]
    assert (f"| Clipping, ε = 0.2 > No clipping or penalty | 0.82 vs -0.39 | {clip:.2f} vs {cpi:.2f}: reversed "
            f"(intervals overlap) | {by_run['clip'][0]:.2f} vs {by_run['cpi'][0]:.2f}: holds") in text
    assert "| best setting's mean | 10.0 | 10.0 |" in text and "| best single run | 11.0 | 30.0 |" in text
    assert ("measured coverage 0.87 / 0.89 / 0.93 at 3 / 5 / 10 runs per env (normal data, a stratified mean over 7 "
            "tasks; tools/stats.py COVERAGE)") in text


def test_the_interval_resamples_each_env_on_its_own(tmp_path):
    """With one env constant, the interval comes from the other env alone, weighted by its share
    of the runs: what a bootstrap stratified by env gives, and a pooled one would not."""
    for seed, (a, b) in enumerate([(2.0, 10.0), (4.0, 10.0), (9.0, 10.0)]):
        fake_run(tmp_path / "runs", f"a{seed}", "A-v0", CLIP, seed, a)
        fake_run(tmp_path / "runs", f"b{seed}", "B-v0", CLIP, seed, b)
    envs, table, _ = paper.score_table(paper.finished(paper.find_runs([tmp_path / "runs"]), []),
                                       {"A-v0": 0.0, "B-v0": 0.0}, n_boot=2000)
    [row] = table
    a = np.array([2.0, 4.0, 9.0]) / 5.0  # A's best setting mean is 5; B's runs all normalise to 1
    assert row["score"] == pytest.approx((a.sum() + 3) / 6)
    low, high = row["ci_low"], row["ci_high"]
    assert (a.min() + 1) / 2 - 1e-9 <= low < row["score"] < high <= (a.max() + 1) / 2 + 1e-9
    assert high - low < (a.max() - a.min()) / 2 + 1e-9  # B never varies, A counts half


# -- compact copies (issue 31) -----------------------------------------------------------------------

def test_downsample_keeps_the_first_and_last_rows():
    rows = list(range(1000))
    kept = paper.downsample(rows, 200)
    assert len(kept) == 200 and kept[0] == 0 and kept[-1] == 999 and kept == sorted(set(kept))
    assert paper.downsample(rows[:150], 200) == rows[:150]
    assert paper.downsample(rows[:7], 2) == [0, 6]


def test_a_compact_copy_keeps_every_evaluation_row(tmp_path):
    """A run evaluated every 49 of 490 iterations (wm_*_1m): its copy keeps the 200 evenly spaced rows
    and the 10 evaluation rows, so the report's mean of evaluations is the same from the copy."""
    from ppo_research.tools.report import EVAL_MEAN, run_score
    from ppo_research.tools.results import find_runs

    lines = [json.dumps({"iteration": i, "global_step": 2048 * i, "episode_return": float(i),
                         **({"eval_return": 10.0 * i} if i % 49 == 0 else {})}) for i in range(1, 491)]
    kept = [json.loads(line) for line in paper.compact_rows(lines, 200)]
    evaluated = [row["iteration"] for row in kept if "eval_return" in row]
    assert evaluated == list(range(49, 491, 49)) and kept[0]["iteration"] == 1 and kept[-1]["iteration"] == 490
    assert [row["iteration"] for row in kept] == sorted({row["iteration"] for row in kept})
    assert set(paper.downsample(lines, 200)) <= set(paper.compact_rows(lines, 200)) and len(kept) <= 200 + 10

    run = tmp_path / "sweep" / "0"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"config": {"seed": 0, "env": {"id": "HalfCheetah-v5"}}, "choices": {},
                                              "overrides": ["seed=0"]}))
    (run / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    (run / "summary.json").write_text(json.dumps({"global_step": 2048 * 490, "eval_return": 4900.0}))
    paper.compact(tmp_path / "sweep", tmp_path / "copy")
    [original], [copy] = find_runs([tmp_path / "sweep"]), find_runs([tmp_path / "copy"])
    assert run_score(copy, EVAL_MEAN) == run_score(original, EVAL_MEAN) == (2695.0, EVAL_MEAN)


def test_a_compact_copy_rebuilds_the_same_table(tmp_path, capsys):
    """A real multirun (2 settings x 3 seeds on CartPole, 10 iterations each), cut to 4 metrics
    rows per run: the table from the copy is the table from the sweep, byte for byte."""
    sweep, copy = tmp_path / "sweep", tmp_path / "benchmarks" / "table1"
    overrides = ["loss=clip,cpi", "seed=0,1,2", "env=cartpole", "logger=none", *TINY, "total_timesteps=1280"]
    res = run_cli(["-m", *overrides, f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sorted((p.parent for p in sweep.glob("*/summary.json")), key=lambda p: int(p.name))
    assert len(jobs) == 6
    res = run_cli(["compact", str(sweep), str(copy), "--rows", "4"], cwd=tmp_path, module="ppo_research.paper")
    assert res.returncode == 0 and res.stdout.strip() == f"6 runs -> {copy}", res.stderr
    for job in jobs:
        kept = copy / job.name
        assert sorted(p.name for p in kept.iterdir()) == ["metrics.jsonl", "overrides.yaml", "run.json",
                                                          "summary.json"]
        assert yaml.safe_load((kept / "overrides.yaml").read_text()) == yaml.safe_load(
            (job / ".hydra" / "overrides.yaml").read_text())
        for name in ("run.json", "summary.json"):
            assert (kept / name).read_bytes() == (job / name).read_bytes()
        full = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
        short = [json.loads(line) for line in (kept / "metrics.jsonl").read_text().splitlines()]
        assert len(full) == 10 and len(short) == 4
        by_iteration = {row["iteration"]: row for row in full}
        assert [row["iteration"] for row in short] == [1, 4, 7, 10]  # evenly spaced, first and last kept
        for row in short:  # the default fields, to 6 significant digits
            original = by_iteration[row["iteration"]]
            assert set(row) == set(paper.COMPACT_FIELDS) & set(original)
            assert row == pytest.approx({k: original[k] for k in row}, rel=5e-6)
    res = run_cli(["compact", str(sweep), str(tmp_path / "whole"), "--rows", "4", "--fields", "all"], cwd=tmp_path,
                  module="ppo_research.paper")
    assert res.returncode == 0, res.stderr
    for job in jobs:  # --fields all: the rows as they are
        full = (job / "metrics.jsonl").read_text().splitlines()
        whole = (tmp_path / "whole" / job.name / "metrics.jsonl").read_text().splitlines()
        assert len(whole) == 4 and all(json.loads(a) == json.loads(b) for a, b in zip(whole, full[::3]))

    baselines = tmp_path / "random.json"
    baselines.write_text(json.dumps({"random": {"CartPole-v1": 22.0}}))
    common = ["--baselines", str(baselines), "--bootstrap", "300"]
    res = run_cli(["table", str(sweep), "--out", str(tmp_path / "from_sweep"), "--no-curves", *common],
                  cwd=tmp_path, module="ppo_research.paper")
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli(["table", str(copy), "--out", str(tmp_path / "from_copy"), *common], cwd=tmp_path,
                  module="ppo_research.paper")
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("table1.md", "table1.csv"):
        assert (tmp_path / "from_copy" / name).read_text() == (tmp_path / "from_sweep" / name).read_text()
    rows = {r["setting"]: r for r in read_csv(tmp_path / "from_copy" / "table1.csv")}
    assert set(rows) == {"Clipping, ε = 0.2", "No clipping or penalty"}
    assert all(row["runs"] == "3" and row["ci_low"] != "" and row["ci_low_best_run"] != "" for row in rows.values())
    assert (tmp_path / "from_copy" / "report" / "curves.png").stat().st_size > 0  # the report reads the copy

    # bad input: one error line, exit status 2, nothing written (the command line's main, in process)
    capsys.readouterr()
    for args, message in (([str(sweep), str(sweep / "copy")], "error: compact: "),
                          ([str(tmp_path / "nowhere"), str(tmp_path / "c")], "error: no such directory"),
                          ([str(baselines.parent / "from_sweep"), str(tmp_path / "c")], "error: no runs under"),
                          ([str(sweep), str(baselines)], f"error: cannot write compact copy {baselines}"),
                          ([str(sweep), str(tmp_path / "c"), "--rows", "1"], "error: --rows must be at least 2"),
                          ([str(sweep), str(tmp_path / "c"), "--fields", "episode_return"],
                           "error: --fields episode_return: must keep iteration and global_step")):
        status = paper.main(["compact", *args])
        lines = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and len(lines) == 1 and lines[0].startswith(message), lines
    assert not (sweep / "copy").exists() and not (tmp_path / "c").exists()
