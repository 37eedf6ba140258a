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
from helpers import TINY, read_summary, run_cli
from omegaconf import OmegaConf
from scipy import stats as sps

from ppo_research.tools.report import (
    CONVENTIONS,
    LEGEND_CHARS,
    Normalization,
    aggregate_groups,
    aggregate_stats,
    curves_figure,
    group_runs,
    summarize,
    variant_curve,
    write_report,
)
from ppo_research.tools.results import RUN_FILE, find_runs, read_run
from ppo_research.tools.stats import coverage_text


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


# -- on a real multirun ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def multirun(tmp_path_factory) -> Path:
    """A real multirun: loss=clip,klpen x seed=0,1 on CartPole, tiny (the tests only read it)."""
    root = tmp_path_factory.mktemp("multirun")
    sweep = root / "sweep"
    proc = run_cli(["-m", "loss=clip,klpen", "seed=0,1", "env=cartpole", "logger=none", *TINY,
                    f"hydra.sweep.dir={sweep}"], cwd=root, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return sweep


def test_report_of_a_multirun_matches_the_runs_summaries(tmp_path, multirun):
    sweep, out = multirun, tmp_path / "report"
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
        # two seeds: no confidence interval, their min-max instead, and said so
        assert row["final_mean_ci_low"] == row["final_mean_ci_high"] == "" and row["interval"] == "min–max of 2 seeds"
        assert (float(row["final_min"]), float(row["final_max"])) == pytest.approx((finals.min(), finals.max()))
        assert float(row["steps"]) == pytest.approx(np.mean([s["global_step"] for s in summaries]))
        assert float(row["wall_time_s"]) == pytest.approx(np.mean([s["wall_time_s"] for s in summaries]))
        assert float(row["sps"]) == pytest.approx(np.mean([s["sps"] for s in summaries]))
        assert (f"| CartPole-v1 | {row['key']} | {variant} | 2 | {finals.mean():.4g} ± {finals.std(ddof=1):.4g} | "
                f"[{finals.min():.4g}, {finals.max():.4g}] min–max of 2 seeds |") in markdown
    assert "95%" not in markdown and "95%" not in (out / "aggregate.md").read_text()
    assert is_png(out / "profiles.png")

    # --final train_return scores the training episodes instead, and says so
    proc = run_cli([str(sweep), "--out", str(out / "train"), "--final", "train_return"], cwd=tmp_path,
                   timeout=60, module="ppo_research.report")
    assert proc.returncode == 0, proc.stderr
    rows = {row["variant"]: row for row in read_csv(out / "train" / "summary.csv")}
    for variant, summaries in expected.items():
        assert rows[variant]["final_key"] == "train_return"
        assert float(rows[variant]["final_mean"]) == pytest.approx(np.mean([s["train_return"] for s in summaries]))
    assert "final return [train_return]" in (out / "train" / "summary.md").read_text()


def suptitle(fig) -> str:
    """The figure's title as one line (it is wrapped to fit the image)."""
    return " ".join(fig._suptitle.get_text().split())


def _visible_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


def test_split_draws_small_multiples_of_a_multirun(tmp_path, multirun):
    """--split: one panel per env and value (a group, a key, or each variant), an env's panels on
    one scale, every title inside the image; a bad value is one error line and writes nothing."""
    variants = group_runs(find_runs([multirun]))
    for split, titles in (("loss", ["CartPole-v1: loss=clip", "CartPole-v1: loss=klpen"]),
                          ("loss.epsilon", ["CartPole-v1: loss.epsilon=0.2", "CartPole-v1: loss.epsilon=None"]),
                          ("variant", ["CartPole-v1: V1 loss=clip", "CartPole-v1: V2 loss=klpen"])):
        fig = curves_figure(variants, smooth=3, split=split)
        axes = _visible_axes(fig)
        assert [ax.get_title() for ax in axes] == titles, split
        assert len({ax.get_ylim() for ax in axes}) == 1 and len({ax.get_xlim() for ax in axes}) == 1
        assert all(len(ax.get_lines()) == 1 for ax in axes)  # each variant in its own panel
        assert f"one panel per env and {split}" in suptitle(fig)
        assert "trailing moving average over 3 iterations" in axes[0].get_ylabel()
    assert len(_visible_axes(curves_figure(variants))) == 1  # no split: one panel per env

    out = tmp_path / "report"
    proc = run_cli([str(multirun), "--out", str(out), "--split", "loss", "--smooth", "3"], cwd=tmp_path,
                   timeout=60, module="ppo_research.report")
    assert proc.returncode == 0, proc.stderr
    assert is_png(out / "curves.png")
    assert ("trailing moving average over 3 iterations; one panel per env and loss, one y scale per env"
            in (out / "summary.md").read_text())
    for bad, message in (("nosuch", "error: --split nosuch: no run has a config group or key 'nosuch'"),
                         ("seed", "error: --split seed: its value differs between the seeds of CartPole-v1")):
        proc = run_cli([str(multirun), "--out", str(tmp_path / bad), "--split", bad], cwd=tmp_path, timeout=60,
                       module="ppo_research.report")
        assert proc.returncode == 2 and _one_error_line(proc.stderr).startswith(message), proc.stderr
        assert not (tmp_path / bad).exists()


def test_split_titles_stay_inside_the_image(tmp_path):
    """Twelve settings on one env (the paper table's case): a panel each, four a row, their long
    titles and the figure's title wrapped inside the panels and the image."""
    variants = _many_variants(tmp_path / "runs")
    fig = curves_figure(variants, smooth=5, split="variant")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = _visible_axes(fig)
    assert len(axes) == 12 and len({round(ax.get_position().y0, 3) for ax in axes}) == 3  # 3 rows of 4
    figure_box = fig.bbox
    titles = [ax.title.get_window_extent(renderer) for ax in axes]
    for ax, title in zip(axes, titles):  # each panel's title within the panel's width, none overlapping
        panel = ax.get_window_extent(renderer)
        assert panel.x0 <= title.x0 and title.x1 <= panel.x1 and "\n" in ax.get_title(), ax.get_title()
    assert not any(a.overlaps(b) for i, a in enumerate(titles) for b in titles[i + 1:])
    title_box = fig._suptitle.get_window_extent(renderer)
    assert figure_box.x0 <= title_box.x0 and title_box.x1 <= figure_box.x1 and title_box.y1 <= figure_box.y1
    assert is_png(write_report([tmp_path / "runs"], tmp_path / "out", smooth=5, split="variant")["curves"])


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
    table = [line for line in (out / "summary.md").read_text().splitlines() if line.startswith("| CartPole-v1 |")]
    assert len(table) == 2 and all("– (1 seed)" in line for line in table)  # one seed: no interval
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


def test_a_row_being_written_is_not_read(tmp_path):
    """A running run's metrics.jsonl may end in a row half written (or a killed run's in a row cut
    off): the complete rows are read, the partial one is not."""
    run = make_run(tmp_path / "run", summary=None)
    whole = read_run(run).metrics
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 4, "global_st')
    assert read_run(run).metrics == whole and len(whole) == 3


def test_the_results_layer_reads_the_file_the_trainer_writes():
    from ppo_research.run.rundir import files

    assert RUN_FILE == files.RUN_FILE


@pytest.mark.parametrize("case", ["missing", "empty", "unfinished", "bad final key", "no evaluations",
                                  "evaluated at other steps"])
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
    if case in ("no evaluations", "evaluated at other steps"):
        make_run(target / "0", evals={1: 5.0, 3: 7.0})
        make_run(target / "1", seed=1, evals=None if case == "no evaluations" else {2: 5.0, 3: 7.0})
        args += ["--final", "eval_mean"]
    proc = run_cli(args, cwd=tmp_path, timeout=60, module="ppo_research.report")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert {"missing": "no such directory", "empty": "no runs under", "unfinished": "no finished runs",
            "bad final key": "no 'no_such_key'",
            "no evaluations": f"--final eval_mean: {target / '1'} has no eval_return in its metrics.jsonl",
            "evaluated at other steps": "--final eval_mean: CartPole-v1 runs evaluated at different steps"}[case] \
        in errors[0]


# -- on hand-made runs ----------------------------------------------------------------------------

LOSSES = {"clip": {"_target_": "ppo_research.algo.losses.ClipLoss", "epsilon": 0.2},
          "klpen": {"_target_": "ppo_research.algo.losses.KLPenaltyLoss", "beta": 1.0, "kl_target": 0.01,
                    "epsilon": None}}
ENVS = {"cartpole": ("CartPole-v1", 0.98), "pendulum": ("Pendulum-v1", 0.99)}


def make_run(path: Path, loss: str = "clip", env: str = "cartpole", seed: int = 0, epsilon: float | None = None,
             final: float = 1.0, summary: dict | None | bool = True, total: int = 300, extra: dict | None = None,
             logger: str = "none", evals: dict[int, float] | None = None) -> Path:
    """A run directory as the trainer and Hydra leave it, with known numbers (``extra``: more
    top-level config sections or values; ``evals``: iteration -> the eval_return of its row)."""
    env_id, gamma = ENVS[env]
    loss_node = dict(LOSSES[loss], **({"epsilon": epsilon} if epsilon is not None else {}))
    config = {"seed": seed, "total_timesteps": total, "progress": False, "env": {"id": env_id},
              "loss": loss_node, "advantage": {"_target_": "ppo_research.algo.advantages.GAE", "gamma": gamma},
              **(extra or {})}
    overrides = [f"loss={loss}", f"env={env}", f"seed={seed}"] + ([f"loss.epsilon={epsilon}"] if epsilon else [])
    (path / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), path / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), path / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": {
        "loss": loss, "env": env, "advantage": "gae", "logger": logger, "hydra/launcher": "basic"}}}}),
        path / ".hydra" / "hydra.yaml")
    rows = [{"iteration": i, "global_step": 100 * i, "episode_return": final * i / 3} for i in (1, 2, 3)]
    for row in rows:
        if row["iteration"] in (evals or {}):
            row["eval_return"] = evals[row["iteration"]]
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


# -- report fixes (issue 14) ----------------------------------------------------------------------

def test_a_seed_run_twice_warns_and_counts_once(tmp_path, capsys):
    make_run(tmp_path / "0", "clip", seed=0, final=1.0)
    make_run(tmp_path / "1", "clip", seed=0, final=3.0)  # the same seed again: not a new replicate
    make_run(tmp_path / "2", "clip", seed=1, final=10.0)
    make_run(tmp_path / "3", "klpen", seed=0, final=5.0)
    make_run(tmp_path / "4", "klpen", seed=1, final=7.0)
    files = write_report([tmp_path], tmp_path / "out")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "loss=clip" in warnings[0] and "seed 0" in warnings[0] and "klpen" not in warnings[0]
    rows = {row["variant"]: row for row in read_csv(files["summary_csv"])}
    clip = rows["loss=clip"]
    assert (clip["n_seeds"], clip["n_runs"], clip["seeds"]) == ("2", "3", "0 1")
    assert float(clip["final_mean"]) == pytest.approx((2.0 + 10.0) / 2)  # seed 0's runs averaged first
    assert float(clip["final_std"]) == pytest.approx(np.std([2.0, 10.0], ddof=1))
    assert (rows["loss=klpen"]["n_seeds"], rows["loss=klpen"]["n_runs"]) == ("2", "2")
    assert "| 2 (3 runs) |" in files["summary_md"].read_text()
    [clip_variant] = [v for v in group_runs(find_runs([tmp_path])) if v.label == "loss=clip"]
    *_, n_seeds = variant_curve(clip_variant, "episode_return")
    assert n_seeds == 2  # the curve's band is over seeds too


def test_below_three_seeds_no_interval_is_called_a_95_ci(tmp_path):
    for seed in (0, 1):
        make_run(tmp_path / "runs" / f"c{seed}", "clip", seed=seed, final=10.0 + seed)
    make_run(tmp_path / "runs" / "k0", "klpen", seed=0, final=3.0)
    files = write_report([tmp_path / "runs"], tmp_path / "out")
    for name in ("summary_md", "aggregate_md"):
        assert "95%" not in files[name].read_text() and "CI" not in files[name].read_text(), name
    summary = files["summary_md"].read_text()
    assert "[10, 11] min–max of 2 seeds" in summary and "– (1 seed)" in summary
    rows = {row["variant"]: row for row in read_csv(files["summary_csv"])}
    assert rows["loss=clip"]["interval"] == "min–max of 2 seeds" and rows["loss=clip"]["final_mean_ci_low"] == ""
    assert rows["loss=klpen"]["interval"] == "none (1 seed)"
    fig = curves_figure(group_runs(find_runs([tmp_path / "runs"])))
    title = suptitle(fig)
    assert "95%" not in title and "min–max of 2 seeds" in title and "none for 1 seed" in title

    # from three seeds on, the mean gets the 95% t-interval and the IQM the 95% bootstrap CI, each
    # named, with the coverage measured at few seeds and the quantile conventions
    make_run(tmp_path / "runs" / "c2", "clip", seed=2, final=13.0)
    files = write_report([tmp_path / "runs"], tmp_path / "out3")
    rows = {row["variant"]: row for row in read_csv(files["summary_csv"])}
    clip = rows["loss=clip"]
    assert (clip["interval"], clip["iqm_interval"]) == ("95% t-interval", "95% bootstrap CI")
    x = np.array([10.0, 11.0, 13.0])
    half = sps.t.ppf(0.975, 2) * x.std(ddof=1) / math.sqrt(3)
    assert (float(clip["final_mean_ci_low"]), float(clip["final_mean_ci_high"])) == pytest.approx(
        (x.mean() - half, x.mean() + half))
    assert 10.0 <= float(clip["final_iqm_ci_low"]) < float(clip["final_iqm_ci_high"]) <= 13.0  # resampled seeds
    summary = files["summary_md"].read_text()
    assert f"[{x.mean() - half:.4g}, {x.mean() + half:.4g}] 95% t-interval" in summary
    assert "95% bootstrap CI" in summary
    assert f"the mean's: Student-t interval ({coverage_text('mean', 't')}" in summary
    assert f"the IQM's: percentile bootstrap, 2000 resamples ({coverage_text('iqm', 'percentile')})" in summary
    assert CONVENTIONS in summary


def test_tracking_only_settings_never_name_a_variant(tmp_path):
    tracking = [  # (extra config, logger choice): each run records or keeps itself differently
        ({"logger": {"project": "a", "mode": "offline"}, "checkpoint": {"every": 10, "keep": 3},
          "eval": {"every": 10, "episodes": 10}, "torch_threads": 1, "resume": None}, "wandb"),
        ({"logger": {"loggers": {"wandb": {"mode": "online"}, "tensorboard": {"log_dir": "tb"}}},
          "checkpoint": {"every": 1, "keep": 9}, "eval": {"every": 2, "episodes": 10}, "torch_threads": 2,
          "resume": "outputs/x", "progress": True}, "wandb_tensorboard"),
    ]
    i = 0
    for loss in ("clip", "klpen"):
        for seed, (extra, logger) in enumerate(tracking):
            make_run(tmp_path / str(i), loss, seed=seed, extra=extra, logger=logger)
            i += 1
    variants = group_runs(find_runs([tmp_path]))
    assert [(v.label, len(v.runs)) for v in variants] == [("loss=clip", 2), ("loss=klpen", 2)]
    # eval.episodes changes the score itself: it is not tracking-only
    make_run(tmp_path / "other", "clip", seed=5, extra={"eval": {"every": 10, "episodes": 3}})
    labels = [v.label for v in group_runs(find_runs([tmp_path]))]
    assert "loss=clip, eval.episodes=3" in labels


def _many_variants(root: Path, n: int = 12) -> list:
    for i in range(n):
        for seed in (0, 1, 2):
            make_run(root / f"{i}-{seed}", "clip", seed=seed, epsilon=round(0.05 * (i + 1), 2), final=10.0 * i + seed,
                     extra={"algo": {"learning_rate": round(1e-4 * (i + 1), 6), "num_epochs": 10 + i,
                                     "normalize_advantage": "minibatch" if i % 2 else "batch"}})
    return group_runs(find_runs([root]))


def test_many_variants_keep_the_legend_outside_the_panels(tmp_path):
    variants = _many_variants(tmp_path / "runs")
    assert len(variants) == 12 and len(variants[0].label) > 60  # long labels
    fig = curves_figure(variants, smooth=3)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert all(ax.get_legend() is None for ax in axes)  # no legend drawn over the curves
    [legend] = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == 12 and texts[0].startswith("V1 ") and all(len(t) <= LEGEND_CHARS + 12 for t in texts)
    assert legend._ncols >= 2  # in columns, not one long list
    box = legend.get_window_extent(renderer)
    for ax in axes:  # below the panels, clear of their tick labels and axis labels
        assert not box.overlaps(ax.get_tightbbox(renderer))
        assert box.y1 <= ax.get_tightbbox(renderer).y0
    files = write_report([tmp_path / "runs"], tmp_path / "out", smooth=3)
    summary = files["summary_md"].read_text()
    for key, variant in zip([f"V{i}" for i in range(1, 13)], sorted(v.label for v in variants)):
        assert f"| {key} | {variant} |" in summary  # the key table spells out every abbreviated label
    assert is_png(files["curves"]) and is_png(files["profiles"])


def test_the_smoothing_window_is_named(tmp_path):
    for seed in (0, 1, 2):
        make_run(tmp_path / "runs" / str(seed), seed=seed)
    variants = group_runs(find_runs([tmp_path / "runs"]))
    fig = curves_figure(variants, smooth=5)
    assert "moving average over 5 iterations" in fig.axes[0].get_ylabel()
    assert "moving average over 5 iterations" in suptitle(fig)
    assert "not smoothed" in curves_figure(variants, smooth=1).axes[0].get_ylabel()
    files = write_report([tmp_path / "runs"], tmp_path / "out", smooth=5)
    assert "moving average over 5 iterations" in files["summary_md"].read_text()


def test_aggregate_statistics_on_normalised_runs(tmp_path):
    finals = {("clip", "cartpole"): (100.0, 120.0, 140.0), ("klpen", "cartpole"): (50.0, 60.0, 70.0),
              ("clip", "pendulum"): (-200.0, -300.0, -400.0), ("klpen", "pendulum"): (-1000.0, -1100.0, -1200.0)}
    i = 0
    for (loss, env), values in finals.items():
        for seed, final in enumerate(values):
            make_run(tmp_path / "runs" / str(i), loss, env, seed, final=final)
            i += 1
    norm = Normalization(random={"CartPole-v1": 10.0, "Pendulum-v1": -1300.0},
                         reference={"CartPole-v1": 210.0, "Pendulum-v1": -100.0}, name="reference")
    # by hand: each run's (score - random) / (reference - random), pooled over the two envs
    clip = [0.45, 0.55, 0.65, 1100 / 1200, 1000 / 1200, 900 / 1200]
    klpen = [0.2, 0.25, 0.3, 300 / 1200, 200 / 1200, 100 / 1200]
    iqm_by_hand = {label: float(np.mean(sorted(x)[1:-1])) for label, x in (("loss=clip", clip), ("loss=klpen", klpen))}
    rows = summarize(group_runs(find_runs([tmp_path / "runs"])), normalization=norm)
    [group] = aggregate_groups(rows, norm)
    assert group.tasks == ["CartPole-v1", "Pendulum-v1"] and group.min_seeds == 3
    result = aggregate_stats(group, n_boot=500)
    assert result.iqm == pytest.approx(iqm_by_hand)
    assert result.improvement[("loss=clip", "loss=klpen")] == 1.0  # every clip run beats every klpen run
    assert result.improvement[("loss=klpen", "loss=clip")] == 0.0
    low, high = result.iqm_ci["loss=clip"]
    assert min(clip) <= low <= iqm_by_hand["loss=clip"] <= high <= max(clip)
    tau = result.taus[50]
    assert result.profile["loss=clip"][50] == pytest.approx(np.mean([np.mean(np.array(clip[:3]) > tau),
                                                                     np.mean(np.array(clip[3:]) > tau)]))

    out = tmp_path / "out"
    files = write_report([tmp_path / "runs"], out, normalization=norm, n_boot=500)
    text = files["aggregate_md"].read_text()
    assert "2 env(s), normalised score (random policy = 0, reference = 1)" in text
    assert f"| V1 | loss=clip | {iqm_by_hand['loss=clip']:.4g} | [" in text
    assert f"| V2 | loss=klpen | {iqm_by_hand['loss=klpen']:.4g} | [" in text
    assert "| V1 | – | 1 |" in text and "| V2 | 0 | – |" in text  # P(row > column)
    assert is_png(files["profiles"])

    # without a normalisation, envs do not pool: one section per env, raw returns
    files = write_report([tmp_path / "runs"], tmp_path / "raw", n_boot=500)
    text = files["aggregate_md"].read_text()
    assert "## CartPole-v1" in text and "## Pendulum-v1" in text and "final return [eval_return]" in text
    assert f"| V1 | loss=clip | {np.mean([100.0, 120.0, 140.0]):.4g} |" in text


def test_eval_mean_scores_a_run_by_the_mean_of_its_evaluations(tmp_path):
    """What Matters' score (--final eval_mean: the mean of a run's evaluations during training and at
    the end) beside the final evaluation: here the two order the settings oppositely."""
    for seed in (0, 1, 2):
        make_run(tmp_path / "runs" / f"clip{seed}", "clip", seed=seed, final=50.0 + seed,
                 evals={1: 10.0 + seed, 2: 20.0 + seed, 3: 50.0 + seed})  # learns early: mean 26.67 + seed
        make_run(tmp_path / "runs" / f"klpen{seed}", "klpen", seed=seed, final=100.0 + seed,
                 evals={1: 0.0 + seed, 2: 5.0 + seed, 3: 100.0 + seed})  # learns late: mean 35 + seed
    variants = group_runs(find_runs([tmp_path / "runs"]))
    by_mean = {r["variant"]: r for r in summarize(variants, final="eval_mean", n_boot=300)}
    assert by_mean["loss=clip"]["final_key"] == "eval_mean"
    assert by_mean["loss=clip"]["final_mean"] == pytest.approx(80 / 3 + 1)
    assert by_mean["loss=klpen"]["final_mean"] == pytest.approx(35 + 1)
    by_final = {r["variant"]: r for r in summarize(variants, final="eval_return", n_boot=300)}
    assert (by_final["loss=clip"]["final_mean"], by_final["loss=klpen"]["final_mean"]) == (51.0, 101.0)

    # P(X > Y) and its interval, per env, on either score
    rows = summarize(variants, final="eval_mean", n_boot=300)
    result = aggregate_stats(aggregate_groups(rows, None)[0], n_boot=300)
    assert result.improvement[("loss=klpen", "loss=clip")] == 1.0  # every klpen mean (35-37) above every clip one
    assert ("loss=klpen", "loss=clip") in result.improvement_ci
    files = write_report([tmp_path / "runs"], tmp_path / "out", final="eval_mean", n_boot=300)
    assert "eval_mean: the mean of each run's evaluations in metrics.jsonl" in files["summary_md"].read_text()
    assert "final return [eval_mean]" in files["aggregate_md"].read_text()


# -- bad output paths, curves that end early (issue 29) -------------------------------------------

def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("out, message", [
    ("/proc/report", "error: cannot write report /proc/report: cannot create files in /proc (No such file or "
                     "directory)"),
    ("{tmp}/a_file", "error: cannot write report {tmp}/a_file: it is a file, not a directory"),
    ("{tmp}/a_file/report", "error: cannot write report {tmp}/a_file/report: {tmp}/a_file is not a directory"),
], ids=["proc", "existing-file", "under-a-file"])
def test_an_unwritable_out_is_one_line(tmp_path, out, message):
    make_run(tmp_path / "runs" / "0")
    (tmp_path / "a_file").write_text("kept")
    fill = {"tmp": str(tmp_path)}
    proc = run_cli([str(tmp_path / "runs"), "--out", out.format(**fill)], cwd=tmp_path, timeout=60,
                   module="ppo_research.report")
    assert proc.returncode == 2
    assert _one_error_line(proc.stderr) == message.format(**fill)
    assert proc.stdout == "" and (tmp_path / "a_file").read_text() == "kept"


def test_report_on_a_read_only_file_system_is_one_line(tmp_path):
    from helpers.namespaces import run_on_tmpfs

    make_run(tmp_path / "runs" / "0")
    mount = tmp_path / "mnt"
    got = run_on_tmpfs(tmp_path, "ro", "ppo_research.report", [str(tmp_path / "runs"), "--out", str(mount / "report")])
    assert got["returncode"] == 2, got["stderr"]
    assert _one_error_line(got["stderr"]) == (f"error: cannot write report {mount / 'report'}: cannot create files in "
                                              f"{mount} (Read-only file system)")


def test_a_failed_write_is_one_line_and_keeps_the_earlier_files(tmp_path):
    """summary.md is a link to /dev/full: the report fails there (exit status 4, one line); the
    files of the earlier report it had not reached yet are as they were."""
    make_run(tmp_path / "runs" / "0", seed=0)
    make_run(tmp_path / "runs" / "1", seed=1)
    out = tmp_path / "report"
    out.mkdir()
    (out / "aggregate.md").write_text("the earlier report")
    (out / "summary.md").symlink_to("/dev/full")
    proc = run_cli([str(tmp_path / "runs"), "--out", str(out)], cwd=tmp_path, timeout=60, module="ppo_research.report")
    assert proc.returncode == 4
    assert _one_error_line(proc.stderr) == f"error: cannot write {out / 'summary.md'}: No space left on device"
    assert (out / "aggregate.md").read_text() == "the earlier report"
    assert is_png(out / "curves.png") and not list(out.glob(".*.tmp"))


def test_usage_errors_are_one_line(tmp_path):
    proc = run_cli([str(tmp_path), "--smooth", "x"], cwd=tmp_path, timeout=60, module="ppo_research.report")
    assert proc.returncode == 2
    assert _one_error_line(proc.stderr).startswith("error: argument --smooth: invalid int value: 'x'")


def test_a_curve_that_ends_early_says_where_and_why(tmp_path):
    """Seed 1 finished no episode in its last iteration: the variant's curve (the steps every seed
    has a value at) ends at step 200 of 300, and the report says so: a note line on stderr, a
    line in summary.md, an x at the curve's end in curves.png."""
    for seed in (0, 1):
        make_run(tmp_path / "runs" / f"c{seed}", "clip", seed=seed)
    make_run(tmp_path / "runs" / "k0", "klpen", seed=0)
    rows = [json.loads(line) for line in (tmp_path / "runs" / "c1" / "metrics.jsonl").read_text().splitlines()]
    rows[-1]["episode_return"] = None  # as the trainer logs an iteration in which no episode ended
    (tmp_path / "runs" / "c1" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_cli([str(tmp_path / "runs"), "--out", str(tmp_path / "out")], cwd=tmp_path, timeout=60,
                   module="ppo_research.report")
    assert proc.returncode == 0, proc.stderr
    note = ("CartPole-v1 V1 loss=clip: the episode_return curve ends at step 200 of 300: seed 1 has no "
            "episode_return after step 200 (no episode finished in its last iterations)")
    assert proc.stderr.strip().splitlines() == [f"note: {note}"]  # the klpen curve runs to its end: no note
    assert f"- {note}" in (tmp_path / "out" / "summary.md").read_text()
    fig = curves_figure(group_runs(find_runs([tmp_path / "runs"])))
    assert "x: the curve ends before its runs do" in suptitle(fig)
    ends = [line for line in fig.axes[0].get_lines() if line.get_marker() == "x"]
    assert len(ends) == 1 and list(ends[0].get_xdata()) == [200]
    assert fig.axes[0].get_xlim()[1] >= 300  # the axis reaches the runs' end: the gap is visible


def test_a_real_curve_without_episodes_at_the_end_is_named(tmp_path):
    """Real Pendulum runs (episodes of 200 steps, iterations of 64): the last iteration ends no
    episode, so both seeds' episode_return stops at step 256 of 320."""
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "seed=0,1", "env=pendulum", "env.max_episode_steps=200", "algo.num_envs=1",
                    "algo.num_steps=64", "algo.minibatch_size=32", "algo.num_epochs=1", "total_timesteps=320",
                    "eval.episodes=1", "progress=false", "logger=none", f"hydra.sweep.dir={sweep}"],
                   cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli([str(sweep), "--out", str(tmp_path / "out")], cwd=tmp_path, timeout=120,
                   module="ppo_research.report")
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith("note: Pendulum-v1 V1 ")
    assert notes[0].endswith(": the episode_return curve ends at step 256 of 320: seeds 0, 1 have no episode_return "
                             "after step 256 (no episode finished in their last iterations)")
