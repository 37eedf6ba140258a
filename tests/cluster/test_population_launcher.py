"""hydra/launcher=population: a multirun's jobs grouped into populations, one process each, every
member leaving the run directory a basic-launcher job leaves (docs/populations.md).

Real command lines, real CartPole runs on tiny budgets. Which process trained a job is read from
the job's own owner lock (run/rundir/owner.py: its first line is the pid of the process that held it).
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    REPO,
    TINY,
    files_of,
    partial_lines,
    read_metrics,
    read_summary,
    run_cli,
    run_cli_writes,
    without_timing,
)
from helpers.populations import assert_complete, job_dirs, overrides_of, report_rows
from helpers.unstackable import TARGET as UNSTACKABLE
from helpers.unstackable import TESTS_ON_PATH
from helpers.wandb_files import wandb_records

CARTPOLE = ["hydra/launcher=population", "env=cartpole", "logger=none", *TINY]
LAUNCHED = re.compile(r"population (\d+): process (\d+) trains job\(s\) ([\d, ]+)")


def trained_by(job: Path) -> int:
    """The pid of the process that held the job's run directory: the one that trained it."""
    return int((job / ".owner.lock").read_text().splitlines()[0])


def launched(output: str) -> dict[int, tuple[int, list[int]]]:
    """population number -> (pid, job numbers), from the launcher's log."""
    return {int(m[1]): (int(m[2]), [int(j) for j in m[3].split(",")]) for m in LAUNCHED.finditer(output)}


def test_a_seed_by_epsilon_grid_trains_as_one_population_with_its_own_wandb_runs_and_reports(tmp_path):
    proc = run_cli(["-m", "seed=0,1,2", "loss.epsilon=0.1,0.2", *CARTPOLE, "logger=wandb"], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = tmp_path.glob("outputs/multirun/*/*")
    jobs = job_dirs(sweep)
    assert {(o["seed"], o["loss.epsilon"]) for o in map(overrides_of, jobs)} == \
        {(s, e) for s in "012" for e in ("0.1", "0.2")}
    for job in jobs:
        assert_complete(job)
    # one process trained all six: the launcher started one, and it held every run directory
    assert len(launched(proc.stdout + proc.stderr)) == 1
    ((pid, numbers),) = launched(proc.stdout + proc.stderr).values()
    assert numbers == [0, 1, 2, 3, 4, 5] and {trained_by(job) for job in jobs} == {pid}
    assert "python -m ppo_research -m seed=0,1,2" in (jobs[0] / ".owner.lock").read_text()  # who, for a refusal
    # each member its own wandb run, named and grouped as a basic-launcher job's
    names, groups = set(), set()
    for job in jobs:
        (run_file,) = job.glob("wandb/offline-run-*/run-*.wandb")
        run = next(r.run for r in wandb_records(run_file) if r.WhichOneof("record_type") == "run")
        names.add(run.display_name)
        groups.add(run.run_group)
    assert names == {f"clip-gae-cartpole-epsilon{e}-s{s}" for s in "012" for e in ("0.1", "0.2")}
    assert groups == {f"{sweep.parent.name}_{sweep.name}"}
    # the report tables them: two variants of three seeds, from the runs' own summaries
    rows = report_rows(sweep, tmp_path / "report")
    assert set(rows) == {"loss.epsilon=0.1", "loss.epsilon=0.2"}
    for variant, row in rows.items():
        finals = [read_summary(j)["eval_return"] for j in jobs if f"loss.epsilon={overrides_of(j)['loss.epsilon']}" == variant]
        assert row["n_seeds"] == "3" and float(row["final_mean"]) == pytest.approx(sum(finals) / 3)


def test_jobs_that_differ_outside_the_member_keys_train_in_separate_populations(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "seed=0,1", "algo.vf_coef=0.5,1.0", *CARTPOLE, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 4
    for job in jobs:
        assert_complete(job)
    populations = launched(proc.stdout + proc.stderr)
    assert len(populations) == 2 and len({pid for pid, _ in populations.values()}) == 2
    for pid, numbers in populations.values():
        members = [sweep / str(n) for n in numbers]
        assert {trained_by(job) for job in members} == {pid}
        assert len({overrides_of(job)["algo.vf_coef"] for job in members}) == 1  # one setting per population
        assert {overrides_of(job)["seed"] for job in members} == {"0", "1"}


def test_a_network_with_no_stacked_form_trains_each_job_as_a_population_of_one(tmp_path):
    """A network that does not declare ``stackable = True`` (algo/stacking.py) cannot share a
    stacked update: the launcher runs each of its jobs alone, ``processes`` at a time, instead of
    refusing the multirun."""
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "seed=0,1", *CARTPOLE, UNSTACKABLE, "hydra.launcher.processes=2", f"hydra.sweep.dir={sweep}"],
                   cwd=tmp_path, env=TESTS_ON_PATH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "as 2 population(s)" in proc.stdout + proc.stderr
    for job in job_dirs(sweep):
        assert_complete(job)
        population = json.loads((job / "run.json").read_text())["population"]
        assert len(population["members"]) == 1 and population["index"] == 0  # trained alone
        assert json.loads((job / "run.json").read_text())["config"]["network"]["_target_"].endswith("UnstackableMLP")


def test_the_paper_loss_kinds_share_a_population_and_other_losses_do_not(tmp_path):
    """cpi, clip, klpen and klfixed differ only in epsilon and beta (one surrogate family): one
    population; the plain policy gradient is another objective: its own."""
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "seed=0,1", "loss=cpi,clip,klpen,klfixed,pg", *CARTPOLE, f"hydra.sweep.dir={sweep}"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in job_dirs(sweep):
        assert_complete(job)
    groups = [{overrides_of(sweep / str(n))["loss"] for n in numbers}
              for _, numbers in launched(proc.stdout + proc.stderr).values()]
    assert sorted(map(sorted, groups)) == [["clip", "cpi", "klfixed", "klpen"], ["pg"]]


def test_population_size_caps_a_population_and_a_rerun_is_refused(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1,2", *CARTPOLE, "hydra.launcher.population_size=2", "hydra.launcher.processes=2",
            f"hydra.sweep.dir={sweep}"]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_dirs(sweep)
    for job in jobs:
        assert_complete(job)
    populations = launched(proc.stdout + proc.stderr)
    assert sorted(len(numbers) for _, numbers in populations.values()) == [1, 2]  # 3 jobs, at most 2: 2 + 1
    assert len({trained_by(job) for job in jobs}) == 2
    # the same command again: every member refuses to overwrite its finished run, in one line each.
    # Two population processes print at once: each line must be one write of its own (a write of
    # "error: ..." and another of its newline fused with the other process's line in a pipe).
    before = {job: (job / "metrics.jsonl").read_bytes() for job in jobs}
    status, _, writes = run_cli_writes(args, cwd=tmp_path)
    stderr = "".join(writes)
    assert status == 2 and "Traceback" not in stderr
    assert partial_lines(writes) == [], writes
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and all("already holds a run" in line for line in errors), stderr[-3000:]
    assert all((job / "metrics.jsonl").read_bytes() == rows for job, rows in before.items())


@pytest.mark.parametrize("groups,size,processes,expected", [
    ([12, 12, 12], 16, 2, [12, 12, 12]),  # the small Table 1: enough populations, kept whole
    ([24], 16, 1, [12, 12]),  # capped: near-equal, not 16 + 8
    ([10], 16, 2, [5, 5]),  # one group, two processes: cut so that neither waits
    ([10, 2], 16, 3, [5, 5, 2]),  # the group with the largest populations is cut first
    ([9, 9], 16, 3, [5, 4, 9]),  # equals: the first group
    ([3], 16, 4, [1, 1, 1]),  # never below one job per population
    ([3], 2, 2, [2, 1]),
])
def test_groups_are_cut_by_the_cap_and_to_keep_every_process_busy(groups, size, processes, expected):
    from omegaconf import OmegaConf

    from hydra_plugins.ppo_research_population.launcher import Job, make_populations

    jobs, keys = [], []
    for g, count in enumerate(groups):
        jobs += [Job(len(jobs) + i, OmegaConf.create({})) for i in range(count)]
        keys += [f"group {g}"] * count
    populations = make_populations(jobs, keys, size, processes)
    assert [len(p.jobs) for p in populations] == expected
    assert [job.idx for p in populations for job in p.jobs] == list(range(len(jobs)))  # in job order, each once


def test_the_largest_population_starts_first(tmp_path):
    """Largest first (members x steps): a long population does not run on alone at the end."""
    from omegaconf import OmegaConf

    from hydra_plugins.ppo_research_population.launcher import Job, Population, launch_order

    def population(number, *budgets):
        return Population(number, [Job(i, OmegaConf.create({"total_timesteps": b})) for i, b in enumerate(budgets)])

    small, large, equal, bad = population(0, 100), population(1, 100, 100, 100), population(2, 100), population(3)
    assert [p.number for p in launch_order([small, large, equal, bad])] == [1, 0, 2, 3]
    broken = Population(4, [Job(0, OmegaConf.create({"total_timesteps": "${missing}"}))])  # fails where it runs
    assert [p.number for p in launch_order([broken, large])] == [1, 4]

    # work is steps x what a step costs: a MuJoCo env's step costs several times CartPole's
    from ppo_research.run.config.compose import compose

    cheap, dear = (Population(n, [Job(0, compose([f"env={env}", "total_timesteps=1000"]).cfg)])
                   for n, env in ((5, "cartpole"), (6, "hopper")))
    assert [p.number for p in launch_order([cheap, dear])] == [6, 5]

    sweep = tmp_path / "sweep"  # a real multirun, one process: the 512-step population starts before the 256-step one
    tiny = [a for a in CARTPOLE if not a.startswith("total_timesteps=")]
    proc = run_cli(["-m", "total_timesteps=256,512", "seed=0,1", *tiny, "hydra.launcher.processes=1",
                    f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    order = [[int(j) for j in m[3].split(",")] for m in LAUNCHED.finditer(proc.stdout + proc.stderr)]
    assert order == [[2, 3], [0, 1]], order
    for job in job_dirs(sweep):
        assert_complete(job, steps=int(overrides_of(job)["total_timesteps"]))


def close(a, b) -> bool:
    """Equal, up to float round-off for floats (a batched population update may reorder sums)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)
    return a == b and type(a) is type(b)


def untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith("time_")} for row in without_timing(rows)]


def test_a_member_writes_what_the_basic_launcher_writes_for_the_same_job(tmp_path):
    job = ["seed=3", "loss.epsilon=0.15", "env=cartpole", "logger=none", *TINY]
    basic = run_cli(["-m", *job, f"hydra.sweep.dir={tmp_path / 'basic'}"], cwd=tmp_path)
    assert basic.returncode == 0, basic.stderr[-3000:]
    population = run_cli(["-m", *job, "seed=3,4", "hydra/launcher=population", f"hydra.sweep.dir={tmp_path / 'pop'}"],
                         cwd=tmp_path)
    assert population.returncode == 0, population.stderr[-3000:]
    solo, member = tmp_path / "basic" / "0", tmp_path / "pop" / "0"
    assert overrides_of(member)["seed"] == "3"
    for name in ("config.yaml", "overrides.yaml"):
        assert (member / ".hydra" / name).read_text() == (solo / ".hydra" / name).read_text(), name
    names = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*"))  # noqa: E731
    assert names(member) == names(solo)
    ran, alone = json.loads((member / "run.json").read_text()), json.loads((solo / "run.json").read_text())
    own = lambda described: {k: v for k, v in described.items() if k not in ("run_id", "population")}  # noqa: E731
    assert own(ran) == own(alone)
    # ... but each names the population it trained in (python -m ppo_research.rerun trains it again)
    assert ran["population"]["index"] == 0 and alone["population"]["index"] == 0
    assert [m["run_dir"] for m in ran["population"]["members"]] == [str(member), str(tmp_path / "pop" / "1")]
    assert [m["run_dir"] for m in alone["population"]["members"]] == [str(solo)]
    assert [m["config"]["seed"] for m in ran["population"]["members"]] == [3, 4]
    rows, solo_rows = untimed(read_metrics(member)), untimed(read_metrics(solo))
    assert len(rows) == len(solo_rows) >= 2
    for row, solo_row in zip(rows, solo_rows):
        assert row.keys() == solo_row.keys()
        assert all(close(row[k], solo_row[k]) for k in row), (row, solo_row)
    timing = ("wall_time_s", "sps")
    summary, solo_summary = read_summary(member), read_summary(solo)
    assert summary.keys() == solo_summary.keys()
    assert all(close(summary[k], solo_summary[k]) for k in summary if k not in timing), (summary, solo_summary)


def test_a_member_that_fails_fails_alone_in_one_line(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "seed=0,1", "loss.epsilon=0.2,1.5", *CARTPOLE, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: loss.epsilon=1.5 is invalid: expected a value in (0, 1)"] * 2
    # the valid members finished; the rejected ones left no run directory, as basic-launcher jobs
    assert [job.name for job in job_dirs(sweep)] == ["0", "2"]
    for job in job_dirs(sweep):
        assert overrides_of(job)["loss.epsilon"] == "0.2"
        assert_complete(job)


@pytest.mark.parametrize("option, line", [
    ("hydra.launcher.population_size=0", "error: hydra.launcher.population_size=0 is invalid: expected an integer >= 1"),
    ("hydra.launcher.processes=-1", "error: hydra.launcher.processes=-1 is invalid: expected an integer >= 1"),
    ("hydra.launcher.population_size=two", None),
    ("hydra.job.chdir=true", "error: hydra.job.chdir=True is invalid with hydra/launcher=population: expected false"),
])
def test_a_bad_launcher_option_is_one_error_line(tmp_path, option, line):
    proc = run_cli(["-m", "seed=0,1", *CARTPOLE, option], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (printed,) = proc.stderr.strip().splitlines()
    assert printed.startswith(line or "error: ") and (line is not None or "population_size" in printed), printed
    assert not (tmp_path / "outputs").exists()  # rejected before any directory was made


def start_a_long_population(tmp_path: Path, rows: int) -> tuple[subprocess.Popen, Path]:
    """A multirun of two seeds as one population with an endless budget, once each member has
    written ``rows`` metrics rows; and its sweep directory."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = ["-m", "seed=0,1", *CARTPOLE, "total_timesteps=10000000", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen([sys.executable, "-m", "ppo_research", *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not all((sweep / j / "metrics.jsonl").exists() and (sweep / j / "metrics.jsonl").read_text().count("\n") >= rows
                  for j in "01"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the members did not start training")
        time.sleep(0.2)
    return proc, sweep


def test_sigterm_to_the_launcher_and_its_population_at_once_is_one_stop(tmp_path):
    # scancel and systemd signal every process of the job: the population process gets SIGTERM
    # directly and the launcher's copy of it; the two are one stop, with its checkpoints
    proc, sweep = start_a_long_population(tmp_path, rows=1)
    try:
        worker = trained_by(sweep / "0")
        os.kill(worker, signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "exiting at once" not in err
    assert err.strip().splitlines()[-1].startswith("stopped by SIGTERM after iteration")
    for job in job_dirs(sweep):
        last = read_metrics(job)[-1]["iteration"]
        assert (job / "checkpoints" / f"ckpt_{last:08d}.pt").is_file()  # the stop's checkpoint


def test_a_multirun_into_a_running_population_changes_no_file(tmp_path):
    """A second multirun into the sweep directory of a running population is refused before
    Hydra writes anything: multirun.yaml and the members' .hydra/ stay the running ones'."""
    proc, sweep = start_a_long_population(tmp_path, rows=1)
    try:
        hydra_files = {p: p.read_bytes() for p in [sweep / "multirun.yaml", *sweep.glob("*/.hydra/*.yaml")]}
        other = run_cli(["-m", "seed=0,1", "hydra/launcher=population", "env=pendulum", "loss=cpi", "logger=none",
                         *TINY, "total_timesteps=12345", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
        assert {p: p.read_bytes() for p in hydra_files} == hydra_files
    finally:
        proc.kill()
        proc.communicate()
    assert other.returncode == 2 and "Traceback" not in other.stderr
    errors = [line for line in other.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all("is in use by process" in line for line in errors), other.stderr[-3000:]


@pytest.mark.parametrize("launcher", ["basic", "population"])
def test_a_multirun_into_a_finished_sweep_changes_no_file(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    grid = ["-m", "seed=0,1", f"hydra/launcher={launcher}", "env=cartpole", "logger=none", *TINY,
            f"hydra.sweep.dir={sweep}"]
    assert run_cli(grid, cwd=tmp_path).returncode == 0
    before = files_of(sweep)
    again = run_cli([*grid, "env=pendulum", "loss=cpi", "total_timesteps=12345"], cwd=tmp_path)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    errors = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all("already holds a run" in line for line in errors), again.stderr[-3000:]
    assert files_of(sweep) == before


def test_a_refused_population_resume_changes_no_file(tmp_path):
    """hydra.launcher.resume=true with a setting a resume may not change: every member refuses in
    one line, and the sweep directory is as it was (multirun.yaml and .hydra/ included)."""
    sweep = tmp_path / "sweep"
    grid = ["-m", "seed=0,1", *CARTPOLE, f"hydra.sweep.dir={sweep}"]
    assert run_cli(grid, cwd=tmp_path).returncode == 0
    before = files_of(sweep)
    again = run_cli([*grid, "total_timesteps=512", "hydra.launcher.resume=true", "algo.learning_rate=0.002"],
                    cwd=tmp_path)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    errors = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all("algo.learning_rate=0.002 is invalid" in line for line in errors), \
        again.stderr[-3000:]
    assert "resuming" not in again.stderr  # a refused resume does not say it resumes
    assert files_of(sweep) == before


def test_a_finished_population_resumed_to_a_smaller_budget_is_refused_as_a_solo_resume_is(tmp_path):
    sweep = tmp_path / "sweep"
    grid = ["-m", "seed=0,1", *CARTPOLE, f"hydra.sweep.dir={sweep}"]
    assert run_cli([*grid, "total_timesteps=512"], cwd=tmp_path).returncode == 0
    before = files_of(sweep)
    smaller = run_cli([*grid, "total_timesteps=256", "hydra.launcher.resume=true"], cwd=tmp_path)
    assert smaller.returncode == 2 and "Traceback" not in smaller.stderr
    errors = [line for line in smaller.stderr.splitlines() if line.startswith("error:")]
    expected = "total_timesteps=256 is invalid: expected at least 385: the run being resumed has done 4 iteration(s)"
    assert len(errors) == 2 and all(expected in line for line in errors), smaller.stderr[-3000:]
    assert files_of(sweep) == before


def test_two_jobs_of_one_multirun_in_one_directory_are_refused_before_anything_is_written(tmp_path):
    sweep = tmp_path / "sweep"
    for launcher in ("basic", "population"):
        proc = run_cli(["-m", "seed=0,1", "env=cartpole,pendulum", f"hydra/launcher={launcher}", "logger=none", *TINY,
                        f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=s${seed}"], cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 2 and all("make hydra.sweep.subdir differ between jobs" in e for e in errors), \
            proc.stderr[-3000:]
        assert not sweep.exists()


def test_a_damaged_common_checkpoint_sends_every_member_back_to_one_they_can_all_load(tmp_path):
    """Members hold checkpoints 2, 4 and 6; member 2's newest is truncated and member 0's
    iteration 4 has a flipped byte: the population resumes from iteration 2, the newest one every
    member can load, sets the damaged files aside as *.unusable and ends as the uninterrupted
    population (no learning-rate schedule: the longer budget changes nothing before it)."""
    grid = ["seed=0,1,2", *CARTPOLE, "algo.anneal_lr=false", "checkpoint.every=2", "checkpoint.keep=3"]
    full = run_cli(["-m", *grid, "total_timesteps=1280", f"hydra.sweep.dir={tmp_path / 'full'}"], cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    sweep = tmp_path / "cut"
    cut = run_cli(["-m", *grid, "total_timesteps=768", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert cut.returncode == 0, cut.stderr[-3000:]
    for j in "012":
        assert [p.name for p in (sweep / j / "checkpoints").glob("ckpt_*.pt")] and \
            sorted(p.name for p in (sweep / j / "checkpoints").glob("ckpt_*.pt"))[0] == "ckpt_00000002.pt"
    newest = sweep / "2" / "checkpoints" / "ckpt_00000006.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    middle = sweep / "0" / "checkpoints" / "ckpt_00000004.pt"
    data = bytearray(middle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    middle.write_bytes(bytes(data))

    resumed = run_cli(["-m", *grid, "total_timesteps=1280", f"hydra.sweep.dir={sweep}", "hydra.launcher.resume=true"],
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    for j in "012":
        assert untimed(read_metrics(sweep / j)) == untimed(read_metrics(tmp_path / "full" / j))
    assert (sweep / "2" / "checkpoints" / "ckpt_00000006.pt.unusable").is_file()
    assert (sweep / "0" / "checkpoints" / "ckpt_00000004.pt.unusable").is_file()


def test_ctrl_c_stops_every_member_after_a_checkpoint_and_a_member_resumes_alone(tmp_path):
    proc, sweep = start_a_long_population(tmp_path, rows=2)
    try:
        worker = trained_by(sweep / "0")
        proc.send_signal(signal.SIGINT)  # to the launcher only: it passes the stop on to its population
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("stopped by SIGINT after iteration") and "resume=" in err
    state = Path(f"/proc/{worker}/stat")
    assert not state.exists() or state.read_text().split()[2] == "Z"  # the population process ended with it
    for job in job_dirs(sweep):
        assert list((job / "checkpoints").glob("ckpt_*.pt")) and not (job / "summary.json").exists()
    # a member's directory is a run like any other: it resumes on its own, to a new budget
    member = sweep / "1"
    done = len(read_metrics(member))
    steps = (done + 1) * 128  # TINY: 2 envs x 64 steps per iteration
    proc = run_cli([f"resume={member}", f"total_timesteps={steps}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_metrics(member)[-1]["global_step"] == steps and read_summary(member)["global_step"] == steps


def test_a_killed_population_multirun_continues_with_the_command_it_prints(tmp_path):
    """The population process SIGKILLed mid-run (as by the OOM killer): the launcher names the
    command that continues the multirun; run as printed, every member resumes in place and ends
    with the uninterrupted multirun's metrics. Run again, it trains nothing; with one more seed it
    trains only the new job."""
    grid = ["seed=0,1,2", *CARTPOLE, "total_timesteps=2560", "checkpoint.every=2"]
    full = run_cli(["-m", *grid, f"hydra.sweep.dir={tmp_path / 'full'}"], cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]

    sweep = tmp_path / "cut"
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "ppo_research", "-m", *grid, f"hydra.sweep.dir={sweep}"],
                            cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        # rows counted by their newlines: the member may be writing a row as it is read
        while not all((sweep / j / "metrics.jsonl").exists() and (sweep / j / "metrics.jsonl").read_text().count("\n") >= 7
                      for j in "012"):
            assert proc.poll() is None and time.monotonic() < deadline, "the members did not train"
            time.sleep(0.05)
        os.kill(trained_by(sweep / "0"), signal.SIGKILL)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGKILL and "Traceback" not in out  # as a killed run, not "a bug" (1)
    assert all(len(read_metrics(sweep / j)) < 20 for j in "012"), "the run ended before it was killed"
    line = next(line for line in out.splitlines() if "ended with signal SIGKILL" in line)
    command = shlex.split(line.split("continue the multirun with: ", 1)[1])
    assert command[:3] == ["python", "-m", "ppo_research"] and command[-1] == "hydra.launcher.resume=true"

    resumed = run_cli(command[3:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(launched(resumed.stdout + resumed.stderr)) == 1  # the three members resumed together
    for j in "012":
        assert untimed(read_metrics(sweep / j)) == untimed(read_metrics(tmp_path / "full" / j))
        assert read_summary(sweep / j)["eval_return"] == read_summary(tmp_path / "full" / j)["eval_return"]
        assert_complete(sweep / j, steps=2560)

    before = {j: (sweep / j / "metrics.jsonl").read_bytes() for j in "012"}
    again = run_cli(command[3:], cwd=tmp_path)
    assert again.returncode == 0 and not launched(again.stdout + again.stderr), again.stderr[-3000:]
    grown = run_cli([a.replace("seed=0,1,2", "seed=0,1,2,3") for a in command[3:]], cwd=tmp_path)
    assert grown.returncode == 0, grown.stderr[-3000:]
    assert [numbers for _, numbers in launched(grown.stdout + grown.stderr).values()] == [[3]]
    assert all((sweep / j / "metrics.jsonl").read_bytes() == rows for j, rows in before.items())
    assert_complete(sweep / "3", steps=2560)
