"""Optuna studies (ppo_research.sweep): real storages in tmp dirs, real tiny trainings, no mocks."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import REPO, TINY, read_metrics, read_summary, run_cli, without_timing
from helpers.sweeps import BASE, load, run_sweep, study_dir, write_spec
from helpers.wandb_files import wandb_records
from optuna.trial import TrialState
from scipy import stats as sps

from ppo_research.tools.sweep.cli import main as sweep_main
from ppo_research.tools.sweep.space import check_search_space
from ppo_research.tools.sweep.spec import SpecError, load_spec
from ppo_research.tools.sweep.study_report import _ci, ci_text, history_figure, objective_label, write_report

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


def wandb_run_record(run_dir: Path):
    files = list(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    return next(r.run for r in wandb_records(files[0]) if r.WhichOneof("record_type") == "run")


# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("storage", ["default", "journal"])
def test_two_workers_finish_exactly_the_requested_trials(tmp_path, storage):
    # default: SQLite under outputs/; journal: the file storage meant for a shared filesystem
    url = None if storage == "default" else f"journal:{tmp_path / 'shared' / 'study.journal'}"
    spec = write_spec(tmp_path, trials=4)
    res = run_sweep(tmp_path, str(spec), "--workers", "2", *(["--storage", url] if url else []))
    assert res.returncode == 0, res.stderr[-3000:]
    trials = load(tmp_path, storage=url).get_trials()
    # A worker that asks while the other takes the last place loses the race: its trial is told
    # FAIL with "skipped" and does not count (workers.claim). The counted ones are the budget.
    counted = [t for t in trials if "skipped" not in t.user_attrs]
    assert [t.state for t in counted] == [TrialState.COMPLETE] * 4
    assert all(t.state == TrialState.FAIL and t.number >= 4 for t in trials if t not in counted)
    assert sorted(t.number for t in counted) == [0, 1, 2, 3]  # the lowest numbers keep their place
    assert len({t.params["loss.epsilon"] for t in counted}) == 4  # no point evaluated twice
    # Which worker takes which trial is the scheduler's choice (a worker that starts late may find
    # the budget taken), so only this is asserted: trials ran in the spawned workers, at most two.
    pids = {t.user_attrs["pid"] for t in trials}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    dirs = sorted(p.name for p in (study_dir(tmp_path) / "trials").iterdir())
    assert dirs == ["0000", "0001", "0002", "0003"]  # a skipped trial never trains
    for t in counted:  # each trial trained exactly once, to the full budget
        rows = read_metrics(study_dir(tmp_path) / "trials" / f"{t.number:04d}" / "s0")
        assert rows[-1]["global_step"] == 256 and [r["iteration"] for r in rows] == [1, 2]


def test_sigterm_stops_the_study_after_a_checkpoint_with_143(tmp_path):
    # SIGTERM reaches the trial's training loop: it finishes the iteration, writes a checkpoint,
    # and the study marks the trial interrupted. The exit status is the signal's, as for a run.
    spec = write_spec(tmp_path, trials=2, overrides=[*BASE, "total_timesteps=1000000"])
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ppo_research.sweep", str(spec)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while not any(p.stat().st_size for p in study_dir(tmp_path).glob("trials/*/**/metrics.jsonl")):
        assert proc.poll() is None and time.time() < deadline, "no trial started training in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    for line in proc.stderr:
        if line.startswith("interrupted:"):
            assert line.strip() == "interrupted: re-run the same command to continue the study"
            # a second SIGTERM while the process leaves: still 143 (it used to meet CPython's
            # teardown, with the default handler back, and die of it: -15)
            time.sleep(0.15)
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err
    (trial,) = load(tmp_path).get_trials()
    assert trial.state == TrialState.FAIL and "interrupted" in trial.user_attrs


@pytest.mark.parametrize("to_group", [False, True], ids=["sigterm-to-the-command", "ctrl-c-to-the-group"])
def test_a_stopped_command_stops_its_workers_after_their_checkpoints(tmp_path, to_group):
    # --workers 2: SIGTERM to the command alone is passed on to its workers, and Ctrl-C (SIGINT to
    # the whole process group) reaches them twice - directly and passed on - without counting as
    # a second signal. Either way each worker finishes its iteration and writes a checkpoint.
    spec = write_spec(tmp_path, trials=2, overrides=[*BASE, "total_timesteps=1000000"])
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ppo_research.sweep", str(spec), "--workers", "2"], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # its own process group, as a shell job's
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while sum(1 for p in study_dir(tmp_path).glob("trials/*/**/metrics.jsonl") if p.stat().st_size) < 2:
        assert proc.poll() is None and time.time() < deadline, "the two trials did not start training in time"
        time.sleep(0.05)
    if to_group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    signum = signal.SIGINT if to_group else signal.SIGTERM
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and "exiting at once" not in err
    assert f"{signal.Signals(signum).name}: stopping the workers after their current iteration" in err
    assert err.strip().splitlines()[-1] == "interrupted: re-run the same command to continue the study"
    trials = load(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    for t in trials:
        assert t.user_attrs["interrupted"].startswith("stopped by SIG")
        run_dir = study_dir(tmp_path) / "trials" / f"{t.number:04d}" / "s0"
        last = read_metrics(run_dir)[-1]["iteration"]
        assert (run_dir / "checkpoints" / f"ckpt_{last:08d}.pt").is_file()  # the stop's checkpoint


def test_rerun_after_kill_keeps_finished_trials_and_fills_the_budget(tmp_path):
    spec = write_spec(tmp_path, trials=4, overrides=[*BASE, "total_timesteps=2048"])
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ppo_research.sweep", str(spec)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = study_dir(tmp_path) / "study.db"
    deadline = time.time() + 90
    try:
        while time.time() < deadline:  # kill while a trial runs, after at least one finished
            time.sleep(0.2)
            if not db.exists():
                continue
            try:
                states = [t.state for t in load(tmp_path).get_trials()]
            except Exception:  # the study is not created yet
                continue
            if TrialState.COMPLETE in states and states[-1] == TrialState.RUNNING:
                break
        else:
            pytest.fail("no trial finished in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = {t.number: (t.params, t.value) for t in load(tmp_path).get_trials() if t.state == TrialState.COMPLETE}
    running = [t.number for t in load(tmp_path).get_trials() if t.state == TrialState.RUNNING]
    assert 1 <= len(before) < 4 and len(running) <= 1  # 0 only if the kill fell between two trials

    res = run_sweep(tmp_path, str(spec))
    assert res.returncode == 0, res.stderr[-3000:]
    trials = load(tmp_path).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    for number, (params, value) in before.items():  # earlier trials kept, not re-run
        assert (trials[number].params, trials[number].value) == (params, value)
    for number in running:  # the trial the kill interrupted: FAIL, not counted, its place refilled
        assert trials[number].state == TrialState.FAIL and "interrupted" in trials[number].user_attrs
    assert len(trials) == 4 + len(running)
    table = (study_dir(tmp_path) / "trials.csv").read_text()
    assert table.count("COMPLETE") == 4 and table.count("INTERRUPTED") == len(running)


def test_crashing_trial_is_recorded_as_failed_and_the_study_goes_on(tmp_path):
    lr = "algo.learning_rate"  # 1e20 blows the value loss up to inf in the first update
    spec = write_spec(tmp_path, trials=3, params={lr: {"choices": [1.0e-3, 1.0e20]}},
                      enqueue=[{lr: 1.0e20}, {lr: 1.0e-3}, {lr: 1.0e-3}])
    res = run_sweep(tmp_path, str(spec))
    assert res.returncode == 0, res.stderr[-3000:]
    trials = load(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].params[lr] == 1e20
    assert trials[0].user_attrs["error"].startswith("NonFiniteError: non-finite")
    assert "FAIL" in (study_dir(tmp_path) / "trials.md").read_text()
    assert json.loads((study_dir(tmp_path) / "best.json").read_text())["counts"]["FAIL"] == 1


def test_pruned_trial_stops_early(tmp_path):
    # A real pruner that always prunes (every eval return is below 1e9): the point is that the
    # trial's training stops at the first report, not the pruning rule.
    spec = write_spec(tmp_path, trials=1, seeds=2, pruner={"name": "ThresholdPruner", "lower": 1.0e9},
                      overrides=[*BASE, "total_timesteps=1024", "eval.every=1"])
    res = run_sweep(tmp_path, str(spec))
    assert res.returncode == 0, res.stderr[-3000:]
    (trial,) = load(tmp_path).get_trials()
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [128]  # one evaluation after one 2x64-step iteration
    rows = read_metrics(study_dir(tmp_path) / "trials" / "0000" / "s0")
    assert rows[-1]["global_step"] == 128 < 1024 and len(rows) == 1
    assert not (study_dir(tmp_path) / "trials" / "0000" / "s1").exists()  # later seeds never start


def test_report_and_best_overrides_reproduce_the_best_trial(tmp_path):
    spec = write_spec(tmp_path, trials=4, params={"algo.learning_rate": {"low": 1e-5, "high": 3e-2, "log": True}},
                      objective={"metric": "eval_auc"}, overrides=[*BASE, "total_timesteps=512", "eval.every=1"])
    res = run_sweep(tmp_path, str(spec))
    assert res.returncode == 0, res.stderr[-3000:]
    out = study_dir(tmp_path)
    best = json.loads((out / "best.json").read_text())
    study = load(tmp_path)
    assert best["best_trial"] == study.best_trial.number and best["best_value"] == study.best_value
    assert set(best["importances"]) == {"algo.learning_rate"}  # computed, not the too-few-trials note
    assert (out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_rows = (out / "trials.csv").read_text().splitlines()
    assert csv_rows[0].startswith("number,state,value,algo.learning_rate") and len(csv_rows) == 5
    trials_md = (out / "trials.md").read_text().splitlines()
    assert trials_md[0].startswith("ci_low, ci_high: nominal 95% Student-t interval of the mean") and len(trials_md) == 8

    overrides = (out / "best_overrides.txt").read_text().split()
    assert f"algo.learning_rate={study.best_params['algo.learning_rate']!r}" in overrides
    res = run_cli([*overrides, "seed=0", "hydra.run.dir=repro"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    evals = [r["eval_return"] for r in read_metrics(tmp_path / "repro") if "eval_return" in r]
    assert sum(evals) / len(evals) == pytest.approx(study.best_trial.user_attrs["eval_auc/s0"], rel=1e-9)
    assert read_summary(tmp_path / "repro")["global_step"] == 512


def test_the_reproduce_command_of_a_population_trial_trains_its_population_again_exactly(tmp_path):
    """A trial trained with --population 2 has its population's numbers, not its solo runs'
    (docs/populations.md): its reproduce command (best.json, and the command's last lines) trains
    that population again, and every run of it comes back bit for bit."""
    spec = write_spec(tmp_path, trials=2, seeds=[0, 1], overrides=[*BASE, "total_timesteps=1280", "eval.every=2"])
    res = run_sweep(tmp_path, str(spec), "--population", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    best = json.loads((study_dir(tmp_path) / "best.json").read_text())
    (command,) = best["reproduce"]  # one population: one command
    assert f"reproduce trial {best['best_trial']}: {command}" in res.stdout
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "ppo_research.rerun"]

    res = run_cli(words[3:], cwd=tmp_path, module="ppo_research.rerun")
    assert res.returncode == 0, res.stderr[-3000:]
    out, trials = Path(words[words.index("--out") + 1]), study_dir(tmp_path) / "trials"
    assert study_dir(tmp_path) not in out.parents  # the study's report does not count the re-run's runs
    runs = sorted(trials.glob("*/s*"))
    assert len(runs) == 4  # 2 trials x 2 seeds, one population
    for run in runs:
        rows = read_metrics(out / run.relative_to(trials))
        assert len(rows) == 10 and without_timing(rows) == without_timing(read_metrics(run)), run


def test_a_trials_interval_is_the_reports_and_says_what_it_covers(tmp_path):
    """A trial's value over its runs gets the interval the report gives the same aggregate (the
    t-interval for a mean, the percentile bootstrap for an IQM), named with its measured coverage."""
    scores = [0.2, 0.5, 0.9]
    mean = load_spec(write_spec(tmp_path, seeds=[0, 1, 2]), out_dir=tmp_path / "o")
    t = sps.ttest_1samp(scores, 0.0).confidence_interval(0.95)
    assert _ci(mean, scores) == pytest.approx([t.low, t.high], rel=1e-12)
    assert _ci(mean, scores[:2]) is None  # too few runs for a confidence interval
    assert "Student-t interval" in ci_text(mean) and "measured coverage 0.95" in ci_text(mean)
    iqm = load_spec(write_spec(tmp_path, study="q", seeds=[0, 1, 2], objective={"metric": "eval_return",
                                                                                  "aggregate": "iqm"}),
                    out_dir=tmp_path / "o")
    assert _ci(iqm, scores) == pytest.approx([0.2, 0.9])  # at 3 runs the percentile bootstrap is the min-max
    assert "percentile bootstrap" in ci_text(iqm) and "0.74" in ci_text(iqm)


def test_history_names_its_objective_and_counts_trials_in_integers(tmp_path):
    spec = load_spec(write_spec(tmp_path, objective={"metric": "eval_auc", "aggregate": "iqm"}, seeds=[0, 1]),
                     out_dir=tmp_path / "outputs" / "sweeps")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: 100 * trial.suggest_float("loss.epsilon", 0.1, 0.3), n_trials=3)
    assert objective_label(spec) == "iqm eval_auc over 2 seeds (maximize)"
    fig = history_figure(study, objective_label(spec))
    ax = fig.axes[0]
    assert ax.get_ylabel() == "iqm eval_auc over 2 seeds (maximize)" and "eval_auc" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["trial value", "best so far"]
    fig.canvas.draw()
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() for t in ticks)  # 3 trials: 0, 1, 2, never 0.25
    write_report(spec, study)  # the study report draws the same figure
    assert (spec.study_dir / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_trial_runs_are_wandb_runs_grouped_by_study(tmp_path):
    spec = write_spec(tmp_path, study="wb", trials=1, overrides=["env=cartpole", *TINY])  # logger=wandb
    res = run_sweep(tmp_path, str(spec))
    assert res.returncode == 0, res.stderr[-3000:]
    (trial,) = load(tmp_path, "wb").get_trials()
    run = wandb_run_record(study_dir(tmp_path, "wb") / "trials" / "0000" / "s0")
    assert (run.run_group, run.job_type, run.display_name) == ("wb", "sweep-trial", "wb-t0000-s0")
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["loss"]["epsilon"] == trial.params["loss.epsilon"]
    assert "loss.epsilon=" in run.notes


def test_objective_averages_normalised_scores_over_envs(tmp_path):
    norms = {"cartpole": {"random": 0.0, "reference": 500.0}, "pendulum": {"random": -1500.0, "reference": 0.0}}
    spec = write_spec(tmp_path, trials=1, envs=norms, overrides=["logger=none", *TINY],
                      objective={"aggregate": "iqm"})
    res = run_sweep(tmp_path, str(spec))
    assert res.returncode == 0, res.stderr[-3000:]
    (trial,) = load(tmp_path).get_trials()
    raw = {env: trial.user_attrs[f"eval_return/{env}-s0"] for env in norms}
    expected = sum((raw[e] - n["random"]) / (n["reference"] - n["random"]) for e, n in norms.items()) / 2
    assert trial.value == pytest.approx(expected)
    assert sorted(p.name for p in (study_dir(tmp_path) / "trials" / "0000").iterdir()) == \
        ["cartpole-s0", "pendulum-s0"]
    assert len(json.loads((study_dir(tmp_path) / "best.json").read_text())["reproduce"]) == 2


@pytest.mark.parametrize("params, message", [
    ({"loss.epsilon": {"low": 0.4, "high": 0.1}}, "search space: loss.epsilon: low=0.4 > high=0.1"),
    ({"loss.epsilonn": {"low": 0.1, "high": 0.3}}, "unknown parameter 'loss.epsilonn'"),
    ({"loss.epsilon": {"low": 0.1, "high": 1.5}}, "search space: loss.epsilon=1.5: loss.epsilon=1.5 is invalid"),
    ({"loss.epsilon": {"low": 0.0, "high": 0.3, "log": True}}, "log scale needs low > 0"),
    ({"loss": {"choices": ["clip", "clp"]}}, "loss is a config group"),
])
def test_bad_search_space_is_one_line_error(tmp_path, params, message):
    spec = write_spec(tmp_path, params=params)
    with pytest.raises(SpecError, match=re.escape(message)):
        check_search_space(load_spec(spec, out_dir=tmp_path / "outputs" / "sweeps"))


def test_bad_search_space_cli_exits_nonzero_with_one_line(tmp_path):
    spec = write_spec(tmp_path, params={"loss.epsilon": {"low": 0.4, "high": 0.1}})
    res = run_sweep(tmp_path, str(spec))
    assert res.returncode == 2
    assert res.stderr.strip() == "error: search space: loss.epsilon: low=0.4 > high=0.1"
    assert not (tmp_path / "outputs").exists()


def test_continuing_with_a_different_spec_is_refused(tmp_path, capsys):
    spec = write_spec(tmp_path)
    out = str(tmp_path / "outputs" / "sweeps")
    assert sweep_main([str(spec), "--trials", "0", "--out", out]) == 0
    assert sweep_main([str(spec), "--trials", "0", "--out", out, "algo.num_epochs=3"]) == 2
    assert "was created with a different spec" in capsys.readouterr().err
    assert sweep_main([str(spec), "--trials", "0", "--out", out, "--study", "other", "algo.num_epochs=3"]) == 0


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_specs_load_and_their_search_spaces_validate(path, tmp_path):
    spec = load_spec(path, out_dir=tmp_path)
    check_search_space(spec)
    assert spec.pruner and spec.trials > 0 and spec.seeds


def test_shipped_specs_cover_the_issue():
    params = {p.stem: set(yaml.safe_load(p.read_text())["params"]) for p in (REPO / "sweeps").glob("*.yaml")}
    assert params["clip_epsilon"] == {"loss.epsilon"}
    assert params["klpen"] == {"loss.beta", "loss.kl_target"}
    assert params["klfixed_beta"] == {"loss.beta"}
    assert params["gae_lambda"] == {"advantage.lam"}


STOP_SCRIPT = """
import os, signal, sys
from ppo_research.run.signals import stops
order = sys.argv[1:]
stops.listen_for_forwarded_stops("the sweep command")  # as a sweep's worker process does first
requests = stops.StopRequests()
with requests.listening():
    for name in order:
        os.kill(os.getpid(), getattr(signal, name))
print(signal.Signals(requests.signal).name, requests.forwarded, flush=True)
"""


@pytest.mark.parametrize("order, stopped_by", [
    (["SIGUSR1", "SIGTERM"], "SIGTERM"),  # the command's stop passed on (reported as SIGTERM), then the same stop directly
    (["SIGINT", "SIGUSR1"], "SIGINT"),    # Ctrl-C to the group, then the command's copy of it
    (["SIGUSR1", "SIGUSR1"], None),       # the command asked twice: exit at once
    (["SIGUSR1", "SIGTERM", "SIGTERM"], None),  # a second signal of the worker's own
])
def test_a_worker_takes_the_commands_stop_once(order, stopped_by):
    res = subprocess.run([sys.executable, "-c", STOP_SCRIPT, *order], cwd=REPO, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)},
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if stopped_by:
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == [stopped_by, "False"]  # one stop, no longer waiting for the direct copy
    else:
        assert res.returncode == 128 + signal.SIGTERM, res.stderr
        assert "exiting at once" in res.stderr
