"""Optuna studies trained as populations (``python -m ppo_research.sweep ... --population N``):
real optuna, real SQLite storages in tmp dirs, real tiny trainings on CartPole, nothing mocked.

A trial's runs trained as population members are the runs the solo path trains, to float32
round-off (tests/run/loop/test_train.py says why not bit for bit)."""
from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import REPO, TINY, pg_server, read_metrics, read_summary, run_cli
from helpers.postgres import STUDY, start
from helpers.postgres import load as pg_load
from helpers.postgres import write_spec as pg_spec
from helpers.wandb_files import wandb_records
from optuna.trial import TrialState

from ppo_research.run.loop.train import MEMBER_KEYS
from ppo_research.tools.sweep.cli import main as sweep_main
from ppo_research.tools.sweep.space import check_search_space
from ppo_research.tools.sweep.spec import load_spec
from ppo_research.tools.sweep.storage import make_storage

# 2 envs x 64 steps = 128 steps an iteration; 4 iterations; an evaluation after each
BASE = ["env=cartpole", "logger=none", *TINY, "total_timesteps=512", "eval.every=1"]
LR, EPS = "algo.learning_rate", "loss.epsilon"
# four different trials, so a member matching its own solo run is a real match
ENQUEUED = [{EPS: 0.1, LR: 3e-4}, {EPS: 0.2, LR: 1e-3}, {EPS: 0.3, LR: 3e-3}, {EPS: 0.15, LR: 1e-2}]


def write_spec(folder: Path, study: str = "pop", **fields) -> Path:
    spec = {"study": study, "overrides": BASE,
            "params": {EPS: {"low": 0.1, "high": 0.3}, LR: {"low": 1e-4, "high": 1e-2, "log": True}},
            "trials": 4, "sampler": {"name": "RandomSampler", "seed": 0}, **fields}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{study}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_sweep(cwd: Path, *args: str, timeout: float = 300):
    return run_cli([*args], cwd=cwd, module="ppo_research.sweep", timeout=timeout)


def load(cwd: Path, study: str = "pop") -> optuna.Study:
    url = f"sqlite:///{cwd / 'outputs' / 'sweeps' / study / 'study.db'}"
    return optuna.load_study(study_name=study, storage=make_storage(url))


def run_dir(cwd: Path, number: int, run: str = "s0", study: str = "pop") -> Path:
    return cwd / "outputs" / "sweeps" / study / "trials" / f"{number:04d}" / run


def counted(trials) -> list:
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and "error" in t.user_attrs)]


# ---------------------------------------------------------------------------------------------

def test_a_population_of_four_trials_gives_the_solo_trials(tmp_path):
    """4 trials, --population 4, a pruner consulted at every evaluation: one population trains
    them all; each trial's run directory is complete and its run is the solo path's run."""
    # MedianPruner waits for 5 finished trials: consulted at every report, it prunes none here
    # (so the solo study, whose later trials see finished ones, trains the same four trials)
    spec = {"enqueue": ENQUEUED, "pruner": {"name": "MedianPruner"}}
    pop, solo = tmp_path / "pop", tmp_path / "solo"
    res = run_sweep(pop, str(write_spec(pop, **spec)), "--population", "4")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "populations of 4 trials" in res.stdout
    res = run_sweep(solo, str(write_spec(solo, **spec)))  # today's path: one trial, one run at a time
    assert res.returncode == 0, res.stderr[-3000:]

    together, alone = load(pop).get_trials(), load(solo).get_trials()
    assert [t.state for t in together] == [TrialState.COMPLETE] * 4
    assert [t.params for t in together] == [t.params for t in alone] == ENQUEUED
    assert all(t.user_attrs["population"] == [0, 1, 2, 3] for t in together)  # trained as one population
    for t, s in zip(together, alone):
        folder = run_dir(pop, t.number)
        assert sorted(p.name for p in folder.parent.iterdir()) == ["s0"]  # trial_dir/s0, as today
        assert {"run.json", "metrics.jsonl", "summary.json"} <= {p.name for p in folder.iterdir()}
        described = json.loads((folder / "run.json").read_text())
        assert described["config"]["loss"]["epsilon"] == t.params[EPS]
        assert described["config"]["algo"]["learning_rate"] == t.params[LR]
        rows, ref = read_metrics(folder), read_metrics(run_dir(solo, s.number))
        assert [r["global_step"] for r in rows] == [r["global_step"] for r in ref] == [128, 256, 384, 512]
        for key in ("policy_loss", "value_loss", "entropy", "approx_kl_k3"):  # first iteration: round-off only
            assert rows[0][key] == pytest.approx(ref[0][key], rel=1e-3, abs=1e-6), (t.number, key)
        for row, r in zip(rows, ref):
            assert row["value_loss"] == pytest.approx(r["value_loss"], rel=1e-3), (t.number, row["iteration"])
        # the objective and the reports: the same steps, the same values up to round-off
        assert t.value == pytest.approx(s.value, rel=0.05, abs=1.0)
        assert t.user_attrs["eval_return/s0"] == t.value == read_summary(folder)["eval_return"]
        assert list(t.intermediate_values) == list(s.intermediate_values) == [128, 256, 384, 512]
        assert list(t.intermediate_values.values()) == pytest.approx(list(s.intermediate_values.values()),
                                                                     rel=0.05, abs=1.0)
    # the trials are different runs: their losses differ
    assert len({round(read_metrics(run_dir(pop, n))[1]["policy_loss"], 8) for n in range(4)}) == 4
    # the report works on it as on any study
    table = (pop / "outputs" / "sweeps" / "pop" / "trials.csv").read_text()
    assert table.count("COMPLETE") == 4


PRUNE_ONE = '''
import optuna


class PruneTrial(optuna.pruners.BasePruner):
    """Prunes trial ``number`` at its first report, never another."""

    def __init__(self, number):
        self.number = number

    def prune(self, study, trial):
        return trial.number == self.number
'''


def test_pruning_is_per_trial_and_stops_all_its_runs(tmp_path):
    # 3 trials x 2 seeds = 6 members; trial 1 is pruned at its first report (after both its
    # runs evaluated iteration 1): the run whose evaluation completed the report stops at once,
    # its other run at its next evaluation; the other trials train to the end.
    (tmp_path / "prune_one.py").write_text(textwrap.dedent(PRUNE_ONE))  # `python -m` imports from the cwd
    spec = write_spec(tmp_path, trials=3, seeds=2, enqueue=ENQUEUED[:3],
                      pruner={"name": "prune_one.PruneTrial", "number": 1})
    res = run_sweep(tmp_path, str(spec), "--population", "3")
    assert res.returncode == 0, res.stderr[-3000:]
    trials = load(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    pruned = trials[1]
    # its one report: the mean over its 2 runs, at the 2 x 128 steps the trial had used
    assert list(pruned.intermediate_values) == [256]
    evals = [read_metrics(run_dir(tmp_path, 1, f"s{s}"))[0]["eval_return"] for s in (0, 1)]
    assert pruned.intermediate_values[256] == pytest.approx(sum(evals) / 2)
    assert [len(read_metrics(run_dir(tmp_path, 1, f"s{s}"))) for s in (0, 1)] == [2, 1]
    assert not any((run_dir(tmp_path, 1, f"s{s}") / "summary.json").exists() for s in (0, 1))
    assert "eval_return/s0" not in pruned.user_attrs
    for t in (trials[0], trials[2]):  # the others: every run to the end, the objective over both seeds
        runs = [run_dir(tmp_path, t.number, f"s{s}") for s in (0, 1)]
        assert [len(read_metrics(r)) for r in runs] == [4, 4]
        finals = [read_summary(r)["eval_return"] for r in runs]
        assert t.value == pytest.approx(sum(finals) / 2)
        assert list(t.intermediate_values) == [256, 512, 768, 1024]  # 2 runs x 128 steps per iteration
    assert "trial 1 PRUNED pruned at step 256" in res.stdout


def test_several_envs_train_as_one_population_per_env(tmp_path):
    norms = {"cartpole": {"random": 0.0, "reference": 500.0}, "pendulum": {"random": -1500.0, "reference": 0.0}}
    spec = write_spec(tmp_path, trials=2, envs=norms, seeds=[0, 1], enqueue=ENQUEUED[:2],
                      overrides=[o for o in BASE if o != "env=cartpole"])
    res = run_sweep(tmp_path, str(spec), "--population", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    trials = load(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for t in trials:
        assert sorted(p.name for p in run_dir(tmp_path, t.number).parent.iterdir()) == \
            ["cartpole-s0", "cartpole-s1", "pendulum-s0", "pendulum-s1"]
        scores = [(t.user_attrs[f"eval_return/{env}-s{s}"] - n["random"]) / (n["reference"] - n["random"])
                  for env, n in norms.items() for s in (0, 1)]
        assert t.value == pytest.approx(sum(scores) / 4)
        # cartpole first (2 runs x 128 steps an iteration), then pendulum after its 1024 steps
        assert list(t.intermediate_values) == [256, 512, 768, 1024, 1280, 1536, 1792, 2048]
        last = (read_summary(run_dir(tmp_path, t.number, "pendulum-s0"))["eval_return"]
                + read_summary(run_dir(tmp_path, t.number, "pendulum-s1"))["eval_return"]) / 2
        assert t.intermediate_values[2048] == pytest.approx((last + 1500.0) / 1500.0)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_budget_is_exact_with_populations(tmp_path, workers):
    # 5 trials, populations of 4: one worker trains 4 then 1; two workers split them by the same
    # claim rule, never training a sixth. Two enqueued trials go first.
    spec = write_spec(tmp_path, trials=5, enqueue=ENQUEUED[:2], overrides=[*BASE, "total_timesteps=256"])
    res = run_sweep(tmp_path, str(spec), "--population", "4", "--workers", str(workers))
    assert res.returncode == 0, res.stderr[-3000:]
    trials = load(tmp_path).get_trials()
    done = counted(trials)
    assert len(done) == 5 and all(t.state == TrialState.COMPLETE for t in done)
    assert all("skipped" in t.user_attrs for t in trials if t not in done)  # lost races only
    assert [t.params for t in trials[:2]] == ENQUEUED[:2]
    trained = sorted(p.name for p in (tmp_path / "outputs" / "sweeps" / "pop" / "trials").iterdir())
    assert trained == [f"{t.number:04d}" for t in done]
    populations = {tuple(t.user_attrs["population"]) for t in done}
    assert sorted(n for p in populations for n in p) == sorted(t.number for t in done)  # each in one population
    assert all(len(p) <= 4 for p in populations)
    if workers == 1:
        assert populations == {(0, 1, 2, 3), (4,)}
        assert len(trials) == 5


def test_population_members_are_wandb_runs_grouped_by_study(tmp_path):
    spec = write_spec(tmp_path, study="wb", trials=2, enqueue=ENQUEUED[:2],
                      overrides=["env=cartpole", *TINY])  # logger=wandb
    res = run_sweep(tmp_path, str(spec), "--population", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    trials = load(tmp_path, "wb").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for t in trials:
        (file,) = run_dir(tmp_path, t.number, study="wb").glob("wandb/offline-run-*/run-*.wandb")
        run = next(r.run for r in wandb_records(file) if r.WhichOneof("record_type") == "run")
        assert (run.run_group, run.job_type) == ("wb", "sweep-trial")
        # named as `python -m ppo_research <the run's overrides>` names its run
        assert run.display_name == f"clip-gae-cartpole-epsilon{t.params[EPS]!r}-s0"
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert (config["loss"]["epsilon"], config["algo"]["learning_rate"]) == (t.params[EPS], t.params[LR])


def test_a_diverging_trial_fails_alone_in_its_population(tmp_path):
    # 1e20 blows the value loss up in the first update: that member ends with NonFiniteError and
    # its trial is FAIL with the error's one line, as on the solo path; the others train on
    spec = write_spec(tmp_path, trials=3, params={LR: {"choices": [1.0e-3, 1.0e20]}},
                      enqueue=[{LR: 1.0e-3}, {LR: 1.0e20}, {LR: 1.0e-3}])
    res = run_sweep(tmp_path, str(spec), "--population", "3")
    assert res.returncode == 0, res.stderr[-3000:]
    trials = load(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["error"].startswith("NonFiniteError: non-finite")
    assert "\n" not in trials[1].user_attrs["error"]
    assert not (run_dir(tmp_path, 1) / "summary.json").exists()
    for t in (trials[0], trials[2]):
        assert len(read_metrics(run_dir(tmp_path, t.number))) == 4
        assert t.value == read_summary(run_dir(tmp_path, t.number))["eval_return"]
    assert json.loads((tmp_path / "outputs" / "sweeps" / "pop" / "best.json").read_text())["counts"]["FAIL"] == 1


@pytest.mark.postgres
def test_postgres_workers_with_populations_keep_the_budget_when_one_is_killed(pg, tmp_path, workers):
    """Workers sharing only a PostgreSQL URL, each training populations of 2 trials: the killed
    worker's two running trials are both marked interrupted (by process id, or by their stale
    heartbeats from another host), and exactly the budget of trials completes."""
    url = pg.create_database("populations")
    spec = pg_spec(tmp_path, trials=5, total_timesteps=4096)  # 32 iterations: seconds per population
    args = ("--population", "2")
    victim = start(workers, tmp_path, "pg-worker-a", spec, url, *args)  # creates the study, then trains
    assert pg_server.wait_until(lambda: f"study {STUDY}:" in victim.log.read_text() or victim.proc.poll() is not None,
                                180), victim.output()
    other = start(workers, tmp_path, "pg-worker-b", spec, url, *args)
    study = pg_load(url)

    def victim_training() -> list[int]:  # the victim's running population, once it has written an iteration
        running = [t.number for t in study.get_trials(deepcopy=False)
                   if t.state == TrialState.RUNNING and t.user_attrs.get("pid") == victim.pid]
        return running if running and all((victim.run_dir(n) / "metrics.jsonl").exists() for n in running) else []

    assert pg_server.wait_until(lambda: victim_training() or victim.proc.poll() is not None, 180), victim.output()
    killed = victim_training()
    assert len(killed) == 2, f"the victim never trained a population of two:\n{victim.output()}"
    victim.proc.send_signal(signal.SIGKILL)
    assert victim.proc.wait() == -signal.SIGKILL
    replacement = start(workers, tmp_path, "pg-worker-c", spec, url, *args)
    for w in (other, replacement):
        assert w.wait() == 0, w.output()

    trials = pg_load(url).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 5  # exactly the budget, after the kill
    for number in killed:
        dead = trials[number]
        assert dead.state == TrialState.FAIL and "interrupted" in dead.user_attrs and "error" not in dead.user_attrs
        assert dead.user_attrs["population"] == killed
        assert not (victim.run_dir(number) / "summary.json").exists()  # it really died mid-training
        assert sum(f"trial {number}: worker gone" in w.log.read_text() for w in (other, replacement)) == 1
    assert all(t.state == TrialState.COMPLETE or "skipped" in t.user_attrs for t in trials if t.number not in killed)
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert len(t.user_attrs["population"]) <= 2 and t.number in t.user_attrs["population"]


# -- bad input -----------------------------------------------------------------------------------

def test_a_search_space_outside_the_member_keys_is_refused_in_one_line(tmp_path):
    spec = write_spec(tmp_path, params={EPS: {"low": 0.1, "high": 0.3}, "algo.num_epochs": {"low": 1, "high": 4}})
    res = run_sweep(tmp_path, str(spec), "--population", "2")
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "error: search space: algo.num_epochs cannot differ between the members of a population (--population 2): "
        f"members may differ only in {', '.join(MEMBER_KEYS)}; search it with --population 1")
    assert not (tmp_path / "outputs").exists()
    # the same space is fine without populations (nothing trains with --trials 0)
    assert sweep_main([str(spec), "--trials", "0", "--out", str(tmp_path / "outputs" / "sweeps")]) == 0


@pytest.mark.parametrize("args, fields, message", [
    (["--population", "0"], {}, "error: population=0 is invalid: expected an integer >= 1"),
    (["--population", "-3"], {}, "error: population=-3 is invalid: expected an integer >= 1"),
    ([], {"population": "four"}, "error: population='four' is invalid: expected an integer >= 1"),
    ([], {"population": 2, "params": {"loss": {"choices": ["clip", "klpen"]}}},
     "error: search space: loss cannot differ between the members of a population (--population 2)"),
    ([], {"pruner": {"name": "no_such_module.Pruner"}},
     "error: pruner.name='no_such_module.Pruner': cannot import no_such_module"),
    ([], {"pruner": {"name": "json.JSONDecoder"}}, "error: pruner.name='json.JSONDecoder' is not a class of "
                                                   "optuna.pruners (or an importable module.Class deriving from "
                                                   "optuna.pruners.BasePruner)"),
])
def test_bad_population_input_is_one_line(tmp_path, capsys, args, fields, message):
    spec = write_spec(tmp_path, **fields)
    assert sweep_main([str(spec), *args, "--out", str(tmp_path / "outputs" / "sweeps")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_specs_search_only_member_keys(path, tmp_path):
    check_search_space(load_spec(path, out_dir=tmp_path, population=4))  # usable with --population


def test_the_spec_can_ask_for_populations(tmp_path):
    spec = load_spec(write_spec(tmp_path, population=3), out_dir=tmp_path)
    assert spec.population == 3
    assert load_spec(write_spec(tmp_path, population=3), out_dir=tmp_path, population=1).population == 1
    assert "population" not in json.dumps(spec.fingerprint())  # a study may continue with another size
