"""Optuna studies on a real PostgreSQL server, with workers that share nothing but the storage URL.

A throwaway server (tests/helpers/pg_server.py) runs from the machine's PostgreSQL binaries for this
module. Every worker is its own ``python -m ppo_research.sweep`` process, in its own folder with
its own copy of the spec and its own ``--out``, as on separate machines. As root (CI), each
worker also runs in its own UTS namespace under its own host name, so a dead worker is noticed
the way another machine's would be - by its stale heartbeat - rather than by its process id.

Without the binaries the module is skipped; with PPO_RESEARCH_REQUIRE_CLUSTER=1 (set by .ci/run)
it fails instead, so CI cannot pass by skipping.
"""
from __future__ import annotations

import signal

import pytest
from helpers import pg_server
from helpers.postgres import (
    SEPARATE_HOSTS,
    STUDY,
    create_study,
    load,
    start,
    write_spec,
)
from optuna.trial import TrialState

pytestmark = pytest.mark.postgres


# ---------------------------------------------------------------------------------------------

def test_three_workers_sharing_only_the_storage_url_use_exactly_the_budget(pg, tmp_path, workers):
    url = pg.create_database("three_workers")
    spec = write_spec(tmp_path, trials=6, total_timesteps=1024)
    create_study(tmp_path, spec, url, workers)
    team = [start(workers, tmp_path, f"pg-worker-{i}", spec, url) for i in range(3)]  # all at once
    for w in team:
        assert w.wait() == 0, w.output()

    trials = load(url).get_trials()
    counted = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(counted) == 6
    # anything else is a claim that lost the race for the last places, never trained
    assert all(t.state == TrialState.COMPLETE or "skipped" in t.user_attrs for t in trials)
    assert len({t.params["loss.epsilon"] for t in counted}) == 6
    by_pid = {w.pid: w for w in team}
    # every trial was trained by one of the three (which one takes which is the scheduler's choice:
    # a worker that starts late may find the budget taken, so "each trained some" is not asserted)
    assert {t.user_attrs["pid"] for t in counted} <= set(by_pid)
    if SEPARATE_HOSTS:
        assert {t.user_attrs["host"] for t in counted} <= {w.name for w in team}
    for t in counted:  # each trial trained once, on the disk of the worker that ran it, and only there
        owner = by_pid[t.user_attrs["pid"]]
        assert (owner.run_dir(t.number) / "summary.json").is_file()
        assert not any(w.run_dir(t.number).exists() for w in team if w is not owner)
    # the last worker to finish wrote a report of the whole study
    last = max(team, key=lambda w: (w.out / STUDY / "trials.csv").stat().st_mtime)
    assert (last.out / STUDY / "trials.csv").read_text().count("COMPLETE") == 6


def test_worker_killed_mid_trial_is_recorded_and_the_budget_stays_exact(pg, tmp_path, workers):
    url = pg.create_database("killed_worker")
    spec = write_spec(tmp_path, trials=4, total_timesteps=4096)  # 32 iterations, a few seconds per trial
    victim = start(workers, tmp_path, "pg-worker-a", spec, url)  # creates the study, then trains
    assert pg_server.wait_until(lambda: f"study {STUDY}:" in victim.log.read_text() or victim.proc.poll() is not None,
                                180), victim.output()
    other = start(workers, tmp_path, "pg-worker-b", spec, url)
    study = load(url)

    def victim_training():  # a trial of the victim's is RUNNING and has written an iteration
        running = [t for t in study.get_trials(deepcopy=False)
                   if t.state == TrialState.RUNNING and t.user_attrs.get("pid") == victim.pid]
        return running[0].number if running and (victim.run_dir(running[0].number) / "metrics.jsonl").exists() \
            else None

    assert pg_server.wait_until(lambda: victim_training() is not None or victim.proc.poll() is not None, 180), \
        victim.output()
    killed = victim_training()
    assert killed is not None, f"the victim never trained mid-trial:\n{victim.output()}"
    victim.proc.send_signal(signal.SIGKILL)
    assert victim.proc.wait() == -signal.SIGKILL
    replacement = start(workers, tmp_path, "pg-worker-c", spec, url)
    for w in (other, replacement):
        assert w.wait() == 0, w.output()

    trials = load(url).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4  # exactly the budget, after the kill
    dead = trials[killed]
    assert dead.state == TrialState.FAIL and "interrupted" in dead.user_attrs and "error" not in dead.user_attrs
    assert not (victim.run_dir(killed) / "summary.json").exists()  # it really died mid-training
    others = [t for t in trials if t.number != killed]
    assert all(t.state == TrialState.COMPLETE or "skipped" in t.user_attrs for t in others)
    marked = [w.name for w in (other, replacement) if f"trial {killed}: worker gone" in w.log.read_text()]
    assert len(marked) == 1  # one surviving worker noticed the death and recorded it
    for w in (other, replacement):  # both wrote their report after that
        assert (w.out / STUDY / "trials.csv").read_text().count("INTERRUPTED") == 1


def test_crashing_trial_is_fail_and_the_study_goes_on(pg, tmp_path, workers):
    url = pg.create_database("crash")
    lr = "algo.learning_rate"  # 1e20 blows the losses up to NaN/inf in the first update
    spec = write_spec(tmp_path, trials=2, total_timesteps=256, params={lr: {"choices": [1.0e-3, 1.0e20]}},
                      enqueue=[{lr: 1.0e20}, {lr: 1.0e-3}])
    w = start(workers, tmp_path, "pg-worker-0", spec, url)
    assert w.wait() == 0, w.output()
    trials = load(url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].params[lr] == 1e20
    assert trials[0].user_attrs["error"].startswith("NonFiniteError: non-finite")
    assert "FAIL" in (w.out / STUDY / "trials.md").read_text()


def test_workers_started_at_once_on_an_empty_database(pg, tmp_path, workers):
    url = pg.create_database("simultaneous")
    spec = write_spec(tmp_path, trials=0, total_timesteps=256, enqueue=[{"loss.epsilon": 0.2}])
    team = [start(workers, tmp_path, f"pg-worker-{i}", spec, url) for i in range(3)]
    codes = [w.wait() for w in team]
    assert codes == [0, 0, 0], "\n".join(w.output() for w in team if w.proc.returncode)
    trials = load(url).get_trials()
    assert [(t.state, t.params) for t in trials] == [(TrialState.WAITING, {})]  # enqueued once, not 3 times
