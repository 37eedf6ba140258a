"""Populations: members trained together in one process are the runs they would be alone.

A member's envs, streams and loss state are its own, so its rollout and parameters must be its
solo run's. They agree to float32 round-off, not bit for bit: the stacked update computes the
same maths in another order (batched matmuls, means over padded minibatches, one Adam over the
member-major buffer), ~1e-7 relative per operation, compounded over the iterations' Adam steps.
A population of one takes the solo path itself, so it matches exactly.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_torch_thread, read_metrics, run_cli

from ppo_research.errors import ConfigError, NonFiniteError
from ppo_research.run.config.compose import compose
from ppo_research.run.loop.build import build
from ppo_research.run.loop.train import MemberJob, group_key, population_trainer, train_from_config, train_members
from ppo_research.run.rundir import checkpoint

TWO_ITERATIONS = {"cartpole": ["env=cartpole", "total_timesteps=2048", "algo.num_steps=128"],  # 8 envs x 128
                  "pendulum": ["env=pendulum", "total_timesteps=2048", "algo.num_steps=256",
                               "algo.minibatch_size=64"]}  # 4 envs x 256, 16 minibatches
# a tanh-squashed Gaussian's entropy is a sampled estimate: its draws come from each member's stream
TWO_ITERATIONS["pendulum_tanh"] = [*TWO_ITERATIONS["pendulum"], "network.squash=tanh", "env.action_mode=rescale",
                                   "algo.ent_coef=0.01"]
# advantages re-estimated with each member's current V every epoch: the members' padded batch is refreshed
TWO_ITERATIONS["pendulum_recompute"] = [*TWO_ITERATIONS["pendulum"], "algo.recompute_advantages=true",
                                        "algo.num_epochs=3", "algo.normalize_advantage=batch"]
QUIET = ["logger=none", "progress=false", "eval.episodes=2"]
TIMING = ("time_s", "sps", "time_rollout_s", "time_update_s", "time_eval_s")


_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)  # helpers


def job(overrides, run_dir, **kwargs) -> MemberJob:
    composed = compose([*QUIET, *overrides])
    return MemberJob(composed.cfg, Path(run_dir), composed.choices, **kwargs)


def trainer_of(jobs):
    parts, states = [], []
    for j in jobs:
        j.run_dir.mkdir(parents=True, exist_ok=True)
        parts.append(build(j.cfg, j.choices))
        states.append(torch.get_rng_state())
    return population_trainer(parts, [j.run_dir for j in jobs], states)


def comparable(rows):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def assert_rows_close(rows, expected, rtol):
    assert len(rows) == len(expected)
    for row, ref in zip(rows, expected):
        assert row.keys() == ref.keys()
        for key, value in ref.items():
            if key in TIMING:
                continue
            if isinstance(value, float):
                assert row[key] == pytest.approx(value, rel=rtol, abs=1e-6), (row["iteration"], key)
            else:
                assert row[key] == value, (row["iteration"], key)


def assert_members_are_their_solo_runs(base, variants, tmp_path):
    """Train ``base`` + each variant as one population (run dirs pop<i>), then each alone (solo<i>):
    every member's metrics rows are its solo run's, to round-off."""
    results = train_members([job([*base, *v], tmp_path / f"pop{i}") for i, v in enumerate(variants)])
    assert all(isinstance(r, dict) for r in results), results
    for i, v in enumerate(variants):
        train_members([job([*base, *v], tmp_path / f"solo{i}")])
        assert_rows_close(read_metrics(tmp_path / f"pop{i}"), read_metrics(tmp_path / f"solo{i}"), rtol=2e-3)


@pytest.mark.parametrize("env", ["cartpole", "pendulum", "pendulum_tanh", "pendulum_recompute"])
def test_member_k_is_its_solo_run(env, tmp_path):
    """S = 3, 2 iterations: each member's last rollout (observations, actions) and parameters
    are the solo run's with the same seed, to float32 round-off (module docstring)."""
    seeds = [0, 1, 2]
    population = trainer_of([job([*TWO_ITERATIONS[env], f"seed={s}"], tmp_path / f"pop{s}") for s in seeds])
    try:
        results = population.train_members()
    finally:
        population.close()
    assert all(isinstance(r, dict) and r["iterations"] == 2 for r in results), results
    for k, seed in enumerate(seeds):
        solo = trainer_of([job([*TWO_ITERATIONS[env], f"seed={seed}"], tmp_path / f"solo{seed}")])
        try:
            solo.train()
        finally:
            solo.close()
        member, alone = population.members[k], solo.members[0]
        if env == "cartpole":  # discrete actions: the same samples, so the same states
            np.testing.assert_array_equal(member.collector.rollout.actions, alone.collector.rollout.actions)
            np.testing.assert_allclose(member.collector.rollout.obs, alone.collector.rollout.obs, rtol=1e-5, atol=1e-6)
        else:  # continuous actions differ by round-off (~1e-6), which the pendulum's dynamics amplify over 256 steps
            for got, want in ((member.collector.rollout.obs, alone.collector.rollout.obs),
                              (member.collector.rollout.actions, alone.collector.rollout.actions)):
                np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
                assert np.median(np.abs(got - want)) < 1e-5
        for (name, p), q in zip(member.policy.named_parameters(), alone.policy.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=f"member {k} {name}")
        # and the members are different runs: their first rollouts share no observation
        if k:
            first = population.members[0].collector.rollout.obs.reshape(-1, member.collector.rollout.obs.shape[-1])
            mine = member.collector.rollout.obs.reshape(-1, first.shape[-1])
            assert not (first[:, None, :] == mine[None, :, :]).all(-1).any()


def test_a_population_of_one_is_the_solo_run_exactly(tmp_path):
    overrides = [*TWO_ITERATIONS["pendulum"], "seed=3"]
    (summary,) = train_members([job(overrides, tmp_path / "member")])
    result = run_cli([*QUIET, *overrides, f"hydra.run.dir={tmp_path}/solo"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert comparable(read_metrics(tmp_path / "member")) == comparable(read_metrics(tmp_path / "solo"))
    solo_summary = json.loads((tmp_path / "solo" / "summary.json").read_text())
    assert summary["eval_return"] == solo_summary["eval_return"]


def test_members_with_their_own_hyperparameters_are_their_solo_runs(tmp_path):
    """Members differ in loss.epsilon, algo.learning_rate, algo.ent_coef and advantage.lam: each
    matches the solo run of its own values."""
    base = TWO_ITERATIONS["pendulum"]
    variants = [["loss.epsilon=0.1", "algo.learning_rate=3e-4", "seed=0"],
                ["loss.epsilon=0.3", "algo.learning_rate=1e-3", "algo.ent_coef=0.01", "seed=1"],
                ["loss.epsilon=0.2", "advantage.lam=0.9", "seed=2"]]
    assert_members_are_their_solo_runs(base, variants, tmp_path)


def test_members_with_their_own_adaptive_beta(tmp_path):
    """klpen with beta adapted every minibatch: each member adapts its own beta from its own
    d (different kl_target and starting beta per member), or holds it fixed (loss.adaptive)."""
    base = [*TWO_ITERATIONS["cartpole"], "loss=klpen", "loss.adapt_every=minibatch"]
    # member 0 holds beta fixed (the paper's fixed-KL setting): the others still adapt every minibatch
    variants = [["loss.adaptive=false", "loss.beta=0.3", "seed=2"],
                ["loss.kl_target=0.003", "loss.beta=1.0", "seed=0"], ["loss.kl_target=0.03", "loss.beta=3.0", "seed=1"]]
    assert_members_are_their_solo_runs(base, variants, tmp_path)
    assert read_metrics(tmp_path / "pop1")[-1]["beta"] != read_metrics(tmp_path / "pop2")[-1]["beta"]
    assert {row["beta"] for row in read_metrics(tmp_path / "pop0")} == {0.3}


@pytest.mark.parametrize("env", ["pendulum", "cartpole"])  # the hand-written gradient, autograd
def test_members_of_different_loss_kinds_are_their_solo_runs(env, tmp_path):
    """No clipping or penalty, clipping, adaptive and fixed KL penalty (the paper's Table 1 rows)
    in one population: one stacked surrogate with epsilon = inf and beta = 0 where a member has
    none. Each member's rows are its solo run's, with its own loss's fields (no beta for cpi/clip)."""
    base = TWO_ITERATIONS[env]
    variants = [["loss=cpi", "seed=0"], ["loss=clip", "loss.epsilon=0.1", "seed=1"], ["loss=klpen", "seed=2"],
                ["loss=klfixed", "loss.beta=3.0", "seed=3"]]
    assert_members_are_their_solo_runs(base, variants, tmp_path)
    assert "beta" not in read_metrics(tmp_path / "pop1")[-1] and read_metrics(tmp_path / "pop3")[-1]["beta"] == 3.0


def test_penalty_members_with_and_without_clipping_are_their_solo_runs(tmp_path):
    """loss.epsilon is a member key, and the KL penalty's may be unset: a member without clipping
    beside one with it (either first) keeps its own surrogate."""
    base = [*TWO_ITERATIONS["pendulum"], "loss=klpen"]
    variants = [["loss.epsilon=null", "seed=0"], ["loss.epsilon=0.1", "seed=1"], ["loss.epsilon=null", "seed=2"]]
    assert_members_are_their_solo_runs(base, variants, tmp_path)


def test_a_diverged_member_fails_alone(tmp_path):
    base = [*TWO_ITERATIONS["cartpole"], "total_timesteps=4096", "checkpoint.every=1"]
    results = train_members([job([*base, "seed=0"], tmp_path / "ok"),
                             job([*base, "seed=1", "algo.learning_rate=1e20"], tmp_path / "diverges"),
                             job([*base, "seed=2"], tmp_path / "ok2")])
    assert isinstance(results[1], NonFiniteError) and results[1].iteration is not None
    for name, result in (("ok", results[0]), ("ok2", results[2])):
        assert isinstance(result, dict) and result["iterations"] == 4
        assert len(read_metrics(tmp_path / name)) == 4
    diverged_rows = read_metrics(tmp_path / "diverges") if (tmp_path / "diverges" / "metrics.jsonl").exists() else []
    assert len(diverged_rows) == results[1].iteration - 1  # nothing of the failed iteration was written
    assert not (tmp_path / "diverges" / "summary.json").exists()


def test_members_must_share_everything_else(tmp_path):
    results = train_members([job(["env=cartpole", "seed=0"], tmp_path / "a"),
                             job(["env=cartpole", "seed=1", "algo.num_epochs=3"], tmp_path / "b")])
    assert all(isinstance(r, ConfigError) and "algo.num_epochs" in str(r) for r in results), results
    assert not (tmp_path / "a" / "metrics.jsonl").exists()


def test_run_json_names_the_population_each_member_trained_in(tmp_path):
    """A member's numbers are its population's (module docstring), so its run.json records the
    population: its own index and every member in order, with its directory, run id, resolved
    config, choices and overrides. A run trained alone records a population of one. The keys other
    code reads are as they were."""
    tiny = ["env=cartpole", "total_timesteps=128", "algo.num_envs=2", "algo.num_steps=64"]
    dirs = [tmp_path / "pop4", tmp_path / "pop5"]
    results = train_members([job([*tiny, f"seed={seed}"], d) for seed, d in zip((4, 5), dirs)])
    assert all(isinstance(r, dict) for r in results), results
    described = [json.loads((d / "run.json").read_text()) for d in dirs]
    for k, mine in enumerate(described):
        assert list(mine) == ["run_id", "config", "choices", "overrides", "population"]
        assert mine["population"] == {"index": k, "members": [
            {"run_dir": str(d), "run_id": run["run_id"], "config": run["config"], "choices": run["choices"],
             "overrides": run["overrides"], "stopped_at": None} for d, run in zip(dirs, described)]}
    assert [run["config"]["seed"] for run in described] == [4, 5]

    train_from_config(job([*tiny, "seed=4"], tmp_path / "alone").cfg, tmp_path / "alone", {}, overrides=["seed=4"])
    alone = json.loads((tmp_path / "alone" / "run.json").read_text())
    assert alone["population"] == {"index": 0, "members": [
        {"run_dir": str(tmp_path / "alone"), "run_id": alone["run_id"], "config": alone["config"], "choices": {},
         "overrides": ["seed=4"], "stopped_at": None}]}


def test_loss_kinds_group_when_their_other_settings_agree():
    """cpi, clip and the KL penalties share a group key while the penalties' own settings are the
    defaults (or, among penalties, equal); another estimator or the plain policy gradient does not."""
    def key(*overrides):
        return group_key(compose(["env=cartpole", *overrides]).cfg)

    paper = {key("loss=cpi"), key("loss=clip", "loss.epsilon=0.3"), key("loss=klpen", "loss.kl_target=0.03"),
             key("loss=klfixed", "loss.beta=10")}
    assert len(paper) == 1
    assert key("loss=klpen", "loss.estimator=k3") not in paper | {key("loss=pg")}
    assert key("loss=klpen", "loss.estimator=k3") == key("loss=klfixed", "loss.estimator=k3")
    assert key("loss=pg") not in paper
    # a clip setting the penalty lacks groups only at its default (annealing changes the maths)
    assert key("loss=clip", "loss.anneal_epsilon=false") in paper
    assert key("loss=clip", "loss.anneal_epsilon=true") not in paper


WORKER = textwrap.dedent("""
    import sys, torch
    sys.path[:0] = [{here!r}, {tests!r}]  # this file's folder, and tests/ for its helpers
    torch.set_num_threads(1)
    from test_train import job, TWO_ITERATIONS
    from ppo_research.run.rundir import checkpoint
    from ppo_research.run.loop.train import train_members
    from pathlib import Path
    root, resume = Path(sys.argv[1]), sys.argv[2] == "resume"
    overrides = [*TWO_ITERATIONS["pendulum"], "algo.num_steps=64", "total_timesteps=5120", "checkpoint.every=1",
                 "eval.every=4"]
    losses = ["loss.epsilon=0.1", "loss=klpen", "loss=cpi"]  # an adaptive beta among them: its state resumes too
    jobs = [job([*overrides, f"seed={{s}}", losses[s]], root / f"m{{s}}",
                resume_from=checkpoint.latest(root / f"m{{s}}") if resume else None) for s in range(3)]
    results = train_members(jobs)
    assert all(isinstance(r, dict) for r in results), results
""")


def test_a_sigkilled_population_resumes_to_the_uninterrupted_one(tmp_path):
    """SIGKILL mid-run, resume every member from its latest checkpoint: each member's metrics
    equal the uninterrupted population's (non-timing fields), exactly."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(here=str(Path(__file__).parent), tests=str(Path(__file__).parents[2])))
    env = {**os.environ, "WANDB_MODE": "offline"}
    full = subprocess.run([sys.executable, str(script), str(tmp_path / "full"), "fresh"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]

    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "cut"), "fresh"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        done = [len(read_metrics(tmp_path / "cut" / f"m{s}")) if (tmp_path / "cut" / f"m{s}" / "metrics.jsonl").exists()
                else 0 for s in range(3)]
        if min(done) >= 8:
            break
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert min(done) < 20, "the run ended before it was killed"
    resumed = subprocess.run([sys.executable, str(script), str(tmp_path / "cut"), "resume"], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for s in range(3):
        assert comparable(read_metrics(tmp_path / "cut" / f"m{s}")) == comparable(read_metrics(tmp_path / "full" / f"m{s}"))
        assert checkpoint.latest(tmp_path / "cut" / f"m{s}").name == "ckpt_00000020.pt"


def test_a_kill_between_the_members_checkpoints_leaves_one_they_all_hold_whatever_keep_says(tmp_path, monkeypatch):
    """checkpoint.keep=1: a kill after member 0 wrote iteration 2's checkpoint and before member 1
    did must not leave member 0 without iteration 1's, the last one the others hold; the three
    then resume together from it and end as the uninterrupted population."""
    base = [*TWO_ITERATIONS["cartpole"], "total_timesteps=4096", "checkpoint.every=1", "checkpoint.keep=1"]
    train_members([job([*base, f"seed={s}"], tmp_path / "full" / f"m{s}") for s in range(3)])

    real_save = checkpoint.save

    def save(run_dir, iteration, state, keep):
        if iteration == 2 and Path(run_dir).name == "m1":
            raise KeyboardInterrupt  # stands for a SIGKILL landing between two members' writes
        return real_save(run_dir, iteration, state, keep)

    monkeypatch.setattr(checkpoint, "save", save)
    cut = [tmp_path / "cut" / f"m{s}" for s in range(3)]
    with pytest.raises(KeyboardInterrupt):
        train_members([job([*base, f"seed={s}"], cut[s]) for s in range(3)])
    monkeypatch.setattr(checkpoint, "save", real_save)
    held = [{checkpoint.iteration_of(p) for p in checkpoint.list_checkpoints(d)} for d in cut]
    assert set.intersection(*held) == {1}, held

    results = train_members([job([*base, f"seed={s}"], cut[s], resume_from=checkpoint.latest(cut[s]))
                             for s in range(3)])
    assert all(isinstance(r, dict) for r in results), results
    for s in range(3):
        assert comparable(read_metrics(cut[s])) == comparable(read_metrics(tmp_path / "full" / f"m{s}"))
        assert [p.name for p in checkpoint.list_checkpoints(cut[s])] == ["ckpt_00000004.pt"]  # keep=1 again
