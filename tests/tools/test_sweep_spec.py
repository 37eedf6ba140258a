"""The sweep's bad input (issue 29): a spec or a flag that cannot give a sound study is refused
before anything trains, in one ``error:`` line with exit status 2, and nothing is written (no
study folder, no study row); a trial's run never writes into a directory that holds another
run's files. Pure spec checks run in-process (no training); the cases about run directories
train real tiny trials."""
from __future__ import annotations

import json
import math
import re

import optuna
import pytest
import yaml
from helpers import read_metrics, read_summary, run_cli
from helpers.sweeps import BASE, load, run_sweep, study_dir, write_spec
from optuna.trial import TrialState

from ppo_research.tools.sweep.cli import main as sweep_main
from ppo_research.tools.sweep.spec import SPEC_KEYS, SUMMARY_METRICS, SpecError, load_spec, make_sampler
from ppo_research.tools.sweep.storage import make_storage

HELP = "(see python -m ppo_research.sweep --help)"


def refused(tmp_path, capsys, spec, *args) -> str:
    """Run the command in-process; it must exit 2 with one line and write nothing; returns the line."""
    out = tmp_path / "outputs" / "sweeps"
    assert sweep_main([str(spec), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert not (tmp_path / "outputs").exists()  # no study folder, no study.db, no run
    return err.strip()


# -- 1: two runs in one directory --------------------------------------------------------------

@pytest.mark.parametrize("population", ["1", "2"])
def test_a_repeated_seed_is_refused_before_anything_trains(tmp_path, capsys, population):
    # before: exit 0, the trial COMPLETE with 2 runs and trials/0000/s0/metrics.jsonl holding
    # iterations 1, 2, 1, 2 (with --population 2: 1, 1, 2, 2)
    spec = write_spec(tmp_path, trials=1, seeds=[0, 0])
    assert refused(tmp_path, capsys, spec, "--population", population) == (
        "error: seeds=[0, 0] is invalid: expected distinct seeds: seed 0 is listed 2 times, and a trial's runs "
        "with one seed would share one directory (trials/<number>/s0)")


@pytest.mark.parametrize("population", [1, 2])
def test_a_trial_never_trains_into_a_directory_holding_files(tmp_path, population):
    # the study exists (created with --trials 0) and its first trial's run directory holds a file
    # (left by a study of the same name in another storage): the trial fails, the file is kept
    spec = write_spec(tmp_path, trials=1)
    assert run_sweep(tmp_path, str(spec), "--trials", "0").returncode == 0
    run_dir = study_dir(tmp_path) / "trials" / "0000" / "s0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"iteration": 1, "global_step": 128}\n')
    res = run_sweep(tmp_path, str(spec), "--population", str(population))
    assert res.returncode == 0, res.stderr[-3000:]  # a failed trial is the study's business, as a diverged one
    (trial,) = load(tmp_path).get_trials()
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["error"] == (f"RunDirError: run directory {run_dir} already holds files (of another "
                                         f"study named 'tiny'?): a trial's run trains only into a new directory")
    assert (run_dir / "metrics.jsonl").read_text() == '{"iteration": 1, "global_step": 128}\n'
    assert sorted(p.name for p in run_dir.iterdir()) == ["metrics.jsonl"]


@pytest.mark.parametrize("how", ["study.db removed", "another storage"])
def test_a_new_study_is_not_created_over_the_trials_of_another(tmp_path, how):
    # before: the new study's trial 0 appended its rows to the old trial 0's metrics.jsonl
    spec = write_spec(tmp_path, trials=1)
    assert run_sweep(tmp_path, str(spec)).returncode == 0
    metrics = study_dir(tmp_path) / "trials" / "0000" / "s0" / "metrics.jsonl"
    before = metrics.read_bytes()
    if how == "study.db removed":
        (study_dir(tmp_path) / "study.db").unlink()
        args, url = [], f"sqlite:///{study_dir(tmp_path) / 'study.db'}"
    else:
        url = f"journal:{tmp_path / 'other.journal'}"
        args = ["--storage", url]
    res = run_sweep(tmp_path, str(spec), *args)
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.strip() == (
        f"error: the study folder {study_dir(tmp_path)} holds trials/ of a study 'tiny' that {url} does not have "
        f"(removed, or made with another --storage): expected a new folder for a new study: move "
        f"{study_dir(tmp_path) / 'trials'} away, or pass another --study or --out")
    assert metrics.read_bytes() == before
    assert optuna.study.get_all_study_names(make_storage(url)) == []  # no study row written
    # another study name is a new folder: fine
    assert run_sweep(tmp_path, str(spec), "--study", "tiny2", "--trials", "0", *args).returncode == 0


# -- 2 and 4: every spec key checked before the first trial --------------------------------------

LR, STEPS, MB = "algo.learning_rate", "algo.num_steps", "algo.minibatch_size"


@pytest.mark.parametrize("fields, line", [
    ({"seeds": [-1]}, "seeds=[-1] is invalid: expected integers >= 0 (seed -1 is negative)"),
    ({"seeds": [0, 1, 0]}, "seeds=[0, 1, 0] is invalid: expected distinct seeds: seed 0 is listed 2 times"),
    ({"seeds": 0}, "seeds=0 is invalid: expected a count >= 1 (seeds 0..count-1) or a list of distinct integers"),
    ({"seeds": 1.5}, "seeds=1.5 is invalid: expected a count >= 1"),
    ({"seeds": [True]}, "seeds=[True] is invalid: expected a count >= 1"),
    ({"objective": {"metric": "nosuch"}},
     "objective.metric='nosuch' is invalid: expected one of eval_return, eval_auc, eval_return_std, eval_episodes, "
     "train_return, train_return_last100, global_step, iterations, wall_time_s, sps (a key of the summary.json a "
     "run writes, or eval_auc: the mean of its periodic eval returns)"),
    ({"objective": "eval_return"}, "objective='eval_return' is invalid: expected a mapping with metric, direction "
                                   "and aggregate"),
    ({"objective": {"metrc": "eval_return"}}, "objective: unknown field(s) metrc; known: aggregate, direction, metric"),
    ({"enqueue": [{"loss.epsilon": 5.0}]},
     "enqueue[0].loss.epsilon=5.0 is invalid: expected a number in the search space's [0.1, 0.3]"),
    ({"enqueue": [{"nosuch": 1}]}, "enqueue[0].nosuch=1 is invalid: expected a key of the search space "
                                   "(loss.epsilon): an enqueued trial sets searched parameters only"),
    ({"enqueue": [{"loss.epsilon": "0.2"}]}, "enqueue[0].loss.epsilon='0.2' is invalid: expected a number in"),
    ({"enqueue": {"loss.epsilon": 0.2}}, "enqueue={'loss.epsilon': 0.2} is invalid: expected a list of trials"),
    ({"enqueue": [0.2]}, "enqueue[0]=0.2 is invalid: expected a mapping from search-space keys to values"),
    ({"params": {"loss": {"choices": ["clip", "klpen"]}}, "enqueue": [{"loss": "cpi"}]},
     "enqueue[0].loss='cpi' is invalid: expected one of the choices ['clip', 'klpen']"),
    # in the search space, but a combination a run rejects: the enqueued trial's own config check
    ({"params": {STEPS: {"choices": [64, 48]}, MB: {"choices": [32, 64]}}, "enqueue": [{STEPS: 48, MB: 64}]},
     "enqueue[0] (algo.minibatch_size=64 algo.num_steps=48): algo.minibatch_size=64 is invalid: expected a divisor "
     "of the batch size num_envs*num_steps=96"),
    ({"params": {"loss.epsilon": {"low": 0.1, "high": 0.3, "step": 0}}},
     "params.loss.epsilon.step=0 is invalid: expected a number > 0"),
    ({"params": {"loss.epsilon": {"low": 0.1, "high": 0.3, "step": -0.1}}},
     "params.loss.epsilon.step=-0.1 is invalid: expected a number > 0"),
    ({"params": {"algo.num_epochs": {"low": 1, "high": 4, "step": 0.5}}},
     "params.algo.num_epochs.step=0.5 is invalid: expected an integer >= 1 (type int)"),
    ({"params": {"algo.num_epochs": {"type": "int", "low": 0.5, "high": 4}}},
     "params.algo.num_epochs.low=0.5 is invalid: expected an integer (type int)"),
    ({"params": {LR: {"low": 1e-4, "high": 1e-2, "log": "false"}}},
     "params.algo.learning_rate.log='false' is invalid: expected true or false"),
    ({"params": {"loss.epsilon": {"low": 0.1, "high": 0.3, "choices": [0.2]}}},
     "search space: loss.epsilon: choices make a categorical parameter: give either choices or low/high"),
    ({"params": {"loss.epsilon": {"low": 0.1, "high": float("inf")}}},
     "params.loss.epsilon.high=inf is invalid: expected a finite number"),
    ({"params": {"loss.epsilon": 0.2}}, "params.loss.epsilon=0.2 is invalid: expected a mapping with low/high"),
    ({"study": ["a"]}, "study=['a'] is invalid: expected a study name of letters, digits, '_', '-' and '.'"),
    ({"overrides": "env=cartpole"}, "overrides='env=cartpole' is invalid: expected a list of Hydra overrides"),
    ({"sampler": "RandomSampler"}, "sampler='RandomSampler' is invalid: expected a mapping with name (an "
                                   "optuna.samplers class) and its arguments"),
    ({"pruner": {"n_startup_trials": 5}}, "pruner.name=None is invalid: expected the name of an optuna.pruners "
                                          "class"),
    ({"envs": {"cartpole": {"random": 0, "reference": "500"}}},
     "envs.cartpole={'random': 0, 'reference': '500'} is invalid: expected {random: R, reference: E} with numbers"),
    ({"envs": ["cartpole"]}, "envs=['cartpole'] is invalid: expected a mapping from env options"),
    ({"storage": ["sqlite:///x.db"]}, "storage=['sqlite:///x.db'] is invalid: expected a storage URL"),
    ({"trials": "4"}, "trials='4' is invalid: expected an integer >= 0"),
], ids=lambda v: None if isinstance(v, str) else re.sub(r"[^a-z0-9_.=-]+", "_", yaml.safe_dump(v).strip()[:40]))
def test_a_bad_spec_value_is_one_line_before_anything_trains(tmp_path, capsys, fields, line):
    # before: exit 0 with every trial FAIL (or trained, for enqueue [{nosuch: 1}]), or a traceback
    assert refused(tmp_path, capsys, write_spec(tmp_path, **{"trials": 2, **fields})).startswith(f"error: {line}")


# Every spec key (and the fields of the nested ones) given a value of each kind: the spec is
# loaded, or refused with one line naming the key; never a traceback.
WRONG = [["a"], {"a": 1}, "abc", 1.5, True, -1, 0, None, float("nan")]
PATHS = [(key,) for key in sorted(SPEC_KEYS)] + [
    ("params", "loss.epsilon", f) for f in ("type", "low", "high", "log", "step", "choices")] + [
    ("objective", f) for f in ("metric", "direction", "aggregate")] + [
    ("envs", "cartpole", f) for f in ("random", "reference")] + [
    ("envs", "cartpole"), ("sampler", "name"), ("pruner", "name"), ("enqueue", 0), ("enqueue", 0, "loss.epsilon")]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: ".".join(map(str, p)))
def test_every_spec_key_of_a_wrong_type_is_one_line_naming_it(tmp_path, path):
    for value in WRONG:
        spec = {"study": "s", "overrides": BASE, "params": {"loss.epsilon": {"low": 0.1, "high": 0.3}},
                "objective": {"metric": "eval_return"}, "envs": {"cartpole": {"random": 0.0, "reference": 500.0}},
                "sampler": {"name": "RandomSampler"}, "pruner": {"name": "MedianPruner"},
                "enqueue": [{"loss.epsilon": 0.2}]}
        node = spec
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        file = tmp_path / "s.yaml"
        file.write_text(yaml.safe_dump(spec))
        try:
            load_spec(file, out_dir=tmp_path / "out")
        except SpecError as err:
            message = str(err)
            assert "\n" not in message
            named = [str(k) for k in path if k != 0]
            assert named[-1] in message and (named[0] in message or message.startswith("search space: ")), \
                (path, value, message)
        assert not (tmp_path / "out").exists()


# -- 3: the study name ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../evil", "/tmp/abs_study", "a/b", "..", ".hidden", "a..b", "", "x" * 101])
def test_the_study_name_is_a_folder_name_inside_out(tmp_path, capsys, name):
    # before: --study ../../evil wrote <out>/../../evil/, an absolute --study ignored --out
    out = tmp_path / "a" / "b"
    spec = write_spec(tmp_path)
    assert sweep_main([str(spec), "--out", str(out), "--study", name, "--trials", "0"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --study={name!r} is invalid: expected a study name of letters, digits, '_', '-' and '.' "
                   f"(starting with a letter or digit, no '..', at most 100 characters): it names the folder "
                   f"<out>/<study>\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml", "wandb"]  # nothing made, in or outside


def test_a_spec_study_name_with_a_path_is_refused_and_a_plain_one_works(tmp_path, capsys):
    spec = write_spec(tmp_path, study="x")
    spec.write_text(spec.read_text().replace("study: x", "study: ../x"))
    assert refused(tmp_path, capsys, spec).startswith("error: study='../x' is invalid: expected a study name")
    out = tmp_path / "outputs" / "sweeps"
    assert sweep_main([str(write_spec(tmp_path, study="gae_lambda-hopper.v2")), "--out", str(out), "--trials", "0"]) == 0
    assert (out / "gae_lambda-hopper.v2" / "study.db").is_file()


# -- 5 and 6: the command line --------------------------------------------------------------------

@pytest.mark.parametrize("args, line", [
    (["--bogus"], f"error: unrecognized arguments: --bogus {HELP}"),
    (["--workers", "abc"], f"error: argument --workers: invalid int value: 'abc' {HELP}"),
    (["--trials"], f"error: argument --trials: expected one argument {HELP}"),
    ([], f"error: the following arguments are required: spec {HELP}"),
])
def test_a_usage_error_is_one_line(tmp_path, args, line):
    res = run_sweep(tmp_path, *(["spec.yaml"] if args else []), *args, timeout=60)
    assert res.returncode == 2
    assert res.stderr == line + "\n" and res.stdout == ""


def test_help_suggests_an_installed_postgres_driver(tmp_path):
    res = run_sweep(tmp_path, "--help", timeout=60)
    assert res.returncode == 0
    text = " ".join(res.stdout.split())  # argparse wraps the lines
    assert "postgresql+psycopg://USER@HOST/DB" in text and "postgresql://" not in text  # psycopg2: not installed


# -- 6: best_overrides.txt, each key once, reproduces the trial -------------------------------------

def test_best_overrides_name_each_key_once_and_reproduce_the_best_trial(tmp_path):
    # the spec says env=pendulum and one total_timesteps, the command line another env and budget
    tiny = [o for o in BASE if not o.startswith(("env=", "total_timesteps="))]
    spec = write_spec(tmp_path, trials=1, overrides=["env=pendulum", "total_timesteps=100000", *tiny, "eval.every=1"],
                      objective={"metric": "eval_auc"})
    res = run_sweep(tmp_path, str(spec), "env=cartpole", "total_timesteps=512")
    assert res.returncode == 0, res.stderr[-3000:]
    overrides = (study_dir(tmp_path) / "best_overrides.txt").read_text().split()
    keys = [o.partition("=")[0] for o in overrides]
    assert len(keys) == len(set(keys)), overrides  # before: env=pendulum ... env=cartpole, total_timesteps twice
    assert "env=cartpole" in overrides and "total_timesteps=512" in overrides
    best = json.loads((study_dir(tmp_path) / "best.json").read_text())
    assert best["best_overrides"] == overrides
    assert best["reproduce"] == [" ".join(["python -m ppo_research", *overrides[:-1], "seed=0", overrides[-1]])]

    res = run_cli([*overrides, "seed=0", "hydra.run.dir=repro"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (trial,) = load(tmp_path).get_trials()
    evals = [r["eval_return"] for r in read_metrics(tmp_path / "repro") if "eval_return" in r]
    assert sum(evals) / len(evals) == pytest.approx(trial.user_attrs["eval_auc/s0"], rel=1e-9)
    summary = read_summary(tmp_path / "repro")
    assert summary["global_step"] == 512
    # objective.metric is checked against these names: they are what a run writes
    assert sorted(summary) == sorted(SUMMARY_METRICS)
    assert all(isinstance(summary[k], (int, float)) and math.isfinite(summary[k]) for k in SUMMARY_METRICS)


# -- the sampler's seed: workers that start together draw different points ----------------------

def _first_draw(spec, job: str | None, monkeypatch, worker: int = 0, n_existing: int = 0) -> dict:
    if job is None:
        monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    else:
        monkeypatch.setenv("SLURM_JOB_ID", job)
    study = optuna.create_study(sampler=make_sampler(spec, worker, n_existing))
    trial = study.ask()
    return {p.key: p.suggest(trial) for p in spec.params}


def test_two_tasks_of_one_slurm_array_started_together_draw_different_parameters(tmp_path, monkeypatch):
    # CI11: the two tasks of an sbatch array ran on one host, each as worker 0, and started before
    # either had asked a trial (0 existing): equal sampler seeds, so both drew the same epsilon
    spec = load_spec(write_spec(tmp_path, params={"loss.epsilon": {"low": 0.1, "high": 0.3},
                                                  "algo.gae_lambda": {"low": 0.8, "high": 1.0}}))
    task_0, task_1 = (_first_draw(spec, job, monkeypatch) for job in ("4100", "4101"))  # one SLURM_JOB_ID each
    assert task_0 != task_1 and all(task_0[k] != task_1[k] for k in task_0)
    assert _first_draw(spec, "4100", monkeypatch) == task_0  # the seed stays reproducible per job
    # outside SLURM: workers differ by number and by the trials that existed when they started
    alone = _first_draw(spec, None, monkeypatch)
    assert alone != _first_draw(spec, None, monkeypatch, worker=1)
    assert alone != _first_draw(spec, None, monkeypatch, n_existing=4)
