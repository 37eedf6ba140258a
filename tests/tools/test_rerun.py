"""python -m ppo_research.rerun: a run's population trained again, with the same numbers.

A member's numbers are its population's, not its solo run's: the stacked update rounds
differently, and the dynamics amplify it (docs/populations.md). run.json names the population,
and the re-run trains it again member for member: every metrics.jsonl equal to the original's
bit for bit, timing fields aside. Real CartPole runs on tiny budgets.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import TINY, one_torch_thread, read_metrics, run_cli, without_timing
from omegaconf import OmegaConf

from ppo_research.run.config.compose import compose
from ppo_research.run.loop.train import MemberJob, train_members
from ppo_research.tools.rerun import main as rerun_main

# 10 iterations of 2 envs x 64 steps: a member drifts from its solo run from the first one
CARTPOLE = ["env=cartpole", "logger=none", *TINY, "total_timesteps=1280"]

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)  # helpers


def population_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())["population"]


def first_difference(rows: list[dict], others: list[dict]) -> int | None:
    """The iteration of the first row that differs (None: all equal)."""
    for row, other in zip(without_timing(rows), without_timing(others)):
        if row != other:
            return row["iteration"]
    return None if len(rows) == len(others) else min(len(rows), len(others)) + 1


@pytest.fixture(scope="module")
def multirun(tmp_path_factory) -> Path:
    """Seeds 0, 1, 2 trained as one population by the population launcher."""
    home = tmp_path_factory.mktemp("multirun")
    proc = run_cli(["-m", "seed=0,1,2", "hydra/launcher=population", *CARTPOLE, f"hydra.sweep.dir={home / 'pop'}"],
                   cwd=home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return home / "pop"


def test_a_population_multirun_is_rerun_bit_for_bit_into_new_directories(multirun, tmp_path):
    members = [multirun / str(k) for k in range(3)]
    before = {d: (d / "metrics.jsonl").read_bytes() for d in members}
    record = population_of(members[1])
    assert record["index"] == 1
    assert [m["run_dir"] for m in record["members"]] == [str(d.absolute()) for d in members]
    assert [m["config"]["seed"] for m in record["members"]] == [0, 1, 2]
    assert [m["stopped_at"] for m in record["members"]] == [None, None, None]

    proc = run_cli([str(members[1]), "--out", str(tmp_path / "again")], cwd=tmp_path, module="ppo_research.rerun")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for k, original in enumerate(members):
        again = tmp_path / "again" / str(k)
        assert f"member {k}: {again} re-runs {original.absolute()}" in proc.stdout
        rows = read_metrics(again)
        assert len(rows) == 10 and without_timing(rows) == without_timing(read_metrics(original)), k
        assert population_of(again)["index"] == k  # the re-run names its own population: it can be re-run too
    assert {d: (d / "metrics.jsonl").read_bytes() for d in members} == before  # the originals are only read


def test_a_member_is_not_its_solo_run_and_a_solo_run_is_rerun_alone(multirun, tmp_path):
    """Why the record matters: seed 1 trained alone has other numbers than member 1."""
    proc = run_cli(["seed=1", *CARTPOLE, f"hydra.run.dir={tmp_path / 'solo'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    solo, member = read_metrics(tmp_path / "solo"), read_metrics(multirun / "1")
    assert first_difference(member, solo) is not None
    assert [m["run_dir"] for m in population_of(tmp_path / "solo")["members"]] == [str(tmp_path / "solo")]

    proc = run_cli([str(tmp_path / "solo"), "--out", str(tmp_path / "again")], cwd=tmp_path,
                   module="ppo_research.rerun")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert without_timing(read_metrics(tmp_path / "again" / "solo")) == without_timing(solo)


class Pruned(Exception):
    pass


def stop_at(iteration: int):
    def on_evaluation(at: int, global_step: int, eval_return: float) -> None:
        if at >= iteration:
            raise Pruned(f"pruned at iteration {at}")

    return on_evaluation


def test_a_member_its_hook_stopped_is_stopped_again_where_it_stopped(tmp_path):
    """A pruned member's stop changes the others' numbers; the re-run stops it at the same
    iteration, so every member's numbers come back."""
    overrides = [*CARTPOLE, "total_timesteps=1536", "eval.every=1", "progress=false"]  # 12 iterations

    def population(folder: str, hooks) -> list[Path]:
        jobs = []
        for seed, hook in zip(range(3), hooks):
            composed = compose([*overrides, f"seed={seed}"])
            jobs.append(MemberJob(composed.cfg, tmp_path / folder / str(seed), composed.choices, on_evaluation=hook))
        train_members(jobs)
        return [job.run_dir for job in jobs]

    originals = population("pop", [None, stop_at(3), None])
    assert [m["stopped_at"] for m in population_of(originals[0])["members"]] == [None, 3, None]
    assert len(read_metrics(originals[1])) == 3

    assert rerun_main([str(originals[0]), "--out", str(tmp_path / "again")]) == 0
    for original in originals:
        assert without_timing(read_metrics(tmp_path / "again" / original.name)) == \
            without_timing(read_metrics(original)), original.name

    unstopped = population("unstopped", [None, None, None])  # member 1 trained on: member 0's numbers change
    assert first_difference(read_metrics(unstopped[0]), read_metrics(originals[0])) is not None


def rerun(argv: list[str]) -> int:
    try:
        return rerun_main(argv)
    except SystemExit as stop:  # a usage error
        return stop.code


def described(run_dir: Path, population: bool = True, configs: tuple[dict, ...] = ({"seed": 0},)) -> Path:
    """A run.json as a run writes it (with or without the population record of members with
    ``configs``); no training."""
    run_dir.mkdir(parents=True)
    data = {"run_id": "0123456789abcdef", "config": configs[0], "choices": {}, "overrides": []}
    if population:
        data["population"] = {"index": 0, "members": [
            {**data, "config": config, "run_dir": str((run_dir if k == 0 else run_dir.parent / f"m{k}").absolute()),
             "stopped_at": None}
            for k, config in enumerate(configs)]}
    (run_dir / "run.json").write_text(json.dumps(data))
    return run_dir


def recorded_config(*overrides: str) -> dict:
    """A resolved config as run.json records it."""
    return OmegaConf.to_container(compose([*CARTPOLE, *overrides]).cfg, resolve=True)


@pytest.mark.parametrize("case, line", [
    ("no directory", "error: {tmp}/nowhere: no such directory"),
    ("no run.json", "error: {tmp}/empty: holds no run.json (not a run directory)"),
    ("no record", "error: {tmp}/old/run.json: records no population (written before run.json named the population "
                  "a run trains in), so its numbers cannot be reproduced exactly"),
    ("a file", "error: {tmp}/file: not a directory"),
    ("garbled run.json", "error: {tmp}/garbled/run.json: cannot be read (Expecting value: line 1 column 1 (char 0))"),
    ("a member refused", "error: {tmp}/refused/run.json: member 1 of its population record has a config this "
                         "version refuses (algo.learning_rate=-1.0 is invalid: expected a value in (0, inf))"),
    ("members apart", "error: {tmp}/apart/run.json: its population record's members cannot train together "
                      "(population='member 1' is invalid: expected a config equal to member 0's outside "
                      "seed, loss.epsilon, loss.beta, loss.kl_target, loss.adaptive, advantage.lam, advantage.gamma, "
                      "algo.learning_rate, algo.ent_coef and the loss kind among cpi, clip, klpen, klfixed (it "
                      "differs in algo.num_epochs))"),
    ("out holds files", "error: --out {tmp}/taken: already holds files; re-run into a new directory"),
    ("out is a file", "error: cannot write --out {tmp}/file: it is a file, not a directory"),
    ("out unwritable", "error: cannot write --out /proc/ppo_research_nowhere/out: cannot create files in /proc "
                       "(No such file or directory)"),
    ("no out", "error: the following arguments are required: --out (see python -m ppo_research.rerun --help)"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(case, line, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    described(tmp_path / "old", population=False)
    run = described(tmp_path / "run")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "metrics.jsonl").write_text("")
    (tmp_path / "file").write_text("")
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "run.json").write_text("")
    # a member refused alone would leave the others training in a smaller population, with other numbers
    if case == "a member refused":
        described(tmp_path / "refused", configs=(recorded_config(), recorded_config("algo.learning_rate=-1.0")))
    if case == "members apart":
        described(tmp_path / "apart", configs=(recorded_config(), recorded_config("algo.num_epochs=3")))
    target = {"no directory": tmp_path / "nowhere", "no run.json": tmp_path / "empty", "no record": tmp_path / "old",
              "a file": tmp_path / "file", "garbled run.json": tmp_path / "garbled",
              "a member refused": tmp_path / "refused", "members apart": tmp_path / "apart"}.get(case, run)
    out = {"out holds files": tmp_path / "taken", "out is a file": tmp_path / "file",
           "out unwritable": Path("/proc/ppo_research_nowhere/out")}.get(case, tmp_path / "new")
    argv = [str(target)] + ([] if case == "no out" else ["--out", str(out)])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    assert rerun(argv) == 2
    assert capsys.readouterr().err == line.format(tmp=tmp_path) + "\n"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
