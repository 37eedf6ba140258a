"""Bad input costs seconds: every case exits non-zero with one ``error: ...`` line naming the key,
the value and what is allowed, before any training env starts, and never with a traceback."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from helpers import TINY, CliWorker, run_cli

from ppo_research.run.rundir import checkpoint

BASE = ["logger=none", *TINY]  # pendulum, batch = 2 envs x 64 steps = 128


class Payload:
    """A pickle that runs a shell command when unpickled: what a malicious 'checkpoint' carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_payload(path: Path, marker: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "torch":  # torch's zip format around the pickle
        torch.save({"format": checkpoint.FORMAT, "policy": Payload(marker)}, path)
    else:  # a bare pickle stream
        path.write_bytes(pickle.dumps(Payload(marker)))


def made_dirs(root: Path) -> dict[str, Path]:
    """Run directories for the resume cases."""
    dirs = {"missing": root / "no_such_run", "file": root / "a_file"}
    dirs["file"].write_text("not a directory")
    foreign = dirs["foreign"] = root / "foreign"
    (foreign / "checkpoints").mkdir(parents=True)
    (foreign / "notes.txt").write_text("some other program's output")
    corrupt = dirs["corrupt"] = root / "corrupt"
    (corrupt / "checkpoints").mkdir(parents=True)
    (corrupt / "checkpoints" / "ckpt_00000002.pt").write_bytes(b"PK\x03\x04 truncated zip")
    other = dirs["other_format"] = root / "other_format"
    (other / "checkpoints").mkdir(parents=True)
    torch.save({"model": torch.zeros(2)}, other / "checkpoints" / "ckpt_00000001.pt")
    for kind in ("torch", "pickle"):
        write_payload(root / f"payload_{kind}" / "checkpoints" / "ckpt_00000001.pt", root / f"pwned_{kind}", kind)
        dirs[f"payload_{kind}"] = root / f"payload_{kind}"
    dirs["dangling"] = root / "dangling_link"
    dirs["dangling"].symlink_to(root / "nowhere" / "run")
    return dirs


# (case id, arguments (with {dir} placeholders), text the one error line must contain)
CASES = [
    ("epsilon_zero", ["loss.epsilon=0"], "loss.epsilon=0.0 is invalid: expected a value in (0, 1)"),
    ("epsilon_one", ["loss.epsilon=1"], "loss.epsilon=1.0 is invalid: expected a value in (0, 1)"),
    ("lambda_negative", ["advantage.lam=-0.1"], "advantage.lam=-0.1 is invalid: expected a value in [0, 1]"),
    ("lambda_above_one", ["advantage.lam=1.5"], "advantage.lam=1.5 is invalid: expected a value in [0, 1]"),
    ("gamma_zero", ["advantage.gamma=0"], "advantage.gamma=0.0 is invalid: expected a value in (0, 1]"),
    ("gamma_above_one", ["advantage=td", "advantage.gamma=1.01"],
     "advantage.gamma=1.01 is invalid: expected a value in (0, 1]"),
    ("beta_negative", ["loss=klpen", "loss.beta=-1"], "loss.beta=-1.0 is invalid: expected a value >= 0"),
    ("kl_target_zero", ["loss=klpen", "loss.kl_target=0"], "loss.kl_target=0.0 is invalid: expected a value > 0"),
    ("multirun_with_cfg", ["-m", "--cfg=job", "seed=0,1"], "Only one of --run, --multirun, --cfg"),
    ("total_timesteps_zero", ["total_timesteps=0"], "total_timesteps=0 is invalid: expected a value in [1, inf)"),
    ("total_timesteps_negative", ["total_timesteps=-5"], "total_timesteps=-5 is invalid"),
    ("num_envs_zero", ["algo.num_envs=0"], "algo.num_envs=0 is invalid: expected a value in [1, inf)"),
    ("minibatch_larger_than_batch", ["algo.minibatch_size=256"],
     "algo.minibatch_size=256 is invalid: expected at most the batch size num_envs*num_steps=128"),
    ("minibatch_not_dividing_batch", ["algo.minibatch_size=48"],
     "algo.minibatch_size=48 is invalid: expected a divisor of the batch size num_envs*num_steps=128"),
    ("unknown_group_option", ["loss=klpn"], "loss='klpn' is not an option of group 'loss': expected one of "
                                            "clip, cpi, klfixed, klpen"),
    ("unknown_env_id", ["env.id=NoSuchEnv-v0"], "env.id='NoSuchEnv-v0' is invalid: expected a registered gymnasium id"),
    ("string_for_int", ["seed=abc"], "seed='abc' is invalid: expected an integer"),
    ("string_for_float", ["loss.epsilon=abc"], "loss.epsilon='abc' is invalid: expected a number"),
    ("gaussian_std_on_discrete", ["env=cartpole", "network.state_dependent_std=true"],
     "network.state_dependent_std=True is invalid: expected false for CartPole-v1, whose action space is Discrete"),
    ("rescale_on_discrete", ["env=cartpole", "env.action_mode=rescale"],
     "env.action_mode='rescale' is invalid: expected clip or none for CartPole-v1, whose action space is Discrete"),
    ("typo_in_key", ["algo.nmu_envs=3"], "algo.nmu_envs='3' is invalid: expected a key of algo: adam_beta1, adam_beta2, adam_eps,"),
    ("unparsable_override", ["seed=[1"], "cannot parse the override 'seed=[1'"),
    ("unknown_hydra_option", ["hydra/launcher=nope"], "Could not find 'hydra/launcher/nope': expected one of basic"),
    ("bad_interpolation", ["seed=${nope}"], "seed='${nope}' is invalid: expected a resolvable value"),
    ("unwritable_output_dir", ["hydra.run.dir={file}/run"], "Not a directory"),
    ("resume_missing_dir", ["resume={missing}"], "resume='{missing}' is invalid: expected an existing run directory"),
    ("resume_a_file", ["resume={file}"], "is invalid: expected a run directory (this is a file)"),
    ("resume_foreign_dir", ["resume={foreign}"], "resume='{foreign}' is invalid: expected a ppo_research run "
                                                 "directory holding checkpoints/ckpt_*.pt (none found)"),
    ("resume_corrupt_checkpoint", ["resume={corrupt}"], "cannot resume {corrupt}: no usable checkpoint in "
                                                         "{corrupt}/checkpoints (ckpt_00000002.pt: PytorchStreamReader"),
    ("resume_other_format", ["resume={other_format}"], "ckpt_00000001.pt: not a ppo_research checkpoint of format"),
    ("resume_pickle_payload_torch", ["resume={payload_torch}"], "refused to unpickle Python objects"),
    ("resume_pickle_payload_raw", ["resume={payload_pickle}"], "refused to unpickle Python objects"),
    ("resume_with_multirun", ["-m", "resume={foreign}"], "not combined with --multirun"),
    # issue 16: each of these ended in a traceback (status 1) before
    ("tuple_observation_space", ["env.id=Blackjack-v1"],
     "env.id='Blackjack-v1' is invalid: expected an env with a flat Box observation space (shape (n,)) or uint8 "
     "images ([C, H, W], env.preprocess=atari), and a Box or Discrete action space; Blackjack-v1 has observation "
     "space Tuple(Discrete(32), Discrete(11), Discrete(2))"),
    ("seed_negative", ["seed=-1"], "seed=-1 is invalid: expected a value in [0, inf)"),
    ("env_needs_a_missing_module", ["env.id=tabular/Blackjack-v0"], "env.id='tabular/Blackjack-v0' is invalid: "
                                                                    "expected an env"),
    ("env_needs_shimmy", ["env.id=GymV26Environment-v0"],
     "env.id='GymV26Environment-v0' is invalid: expected an env id that can be made (ImportError: "),
    ("env_module_not_importable", ["env.id=nosuchmodule:Foo-v0"],
     "env.id='nosuchmodule:Foo-v0' is invalid: expected an env id that can be made (ModuleNotFoundError: "
     "No module named 'nosuchmodule'"),
    ("env_kwarg_unknown", ["+env.kwargs.foo=1"],
     "env.kwargs={'foo': 1} is invalid: expected keyword arguments that Pendulum-v1 accepts (TypeError: "),
    ("env_kwarg_render_mode", ["+env.kwargs.render_mode=human"],
     "env.kwargs={'render_mode': 'human'} is invalid: expected keyword arguments that Pendulum-v1 accepts"),
    ("env_kwarg_fails_on_the_first_step", ["env=pendulum", "+env.kwargs.g=abc"],
     "env.kwargs={'g': 'abc'} is invalid: expected keyword arguments with which Pendulum-v1 resets and steps "
     "(TypeError: "),
    ("loss_null", ["loss=null"], "loss=null is invalid: expected one of clip, cpi, klfixed, klpen"),
    ("target_not_a_loss", ["loss._target_=builtins.dict"],
     "loss._target_='builtins.dict' is invalid: expected a concrete PolicyLoss class"),
    ("target_is_the_interface", ["loss._target_=ppo_research.algo.losses.PolicyLoss"],
     "loss._target_='ppo_research.algo.losses.PolicyLoss' is invalid: expected a concrete PolicyLoss class"),
    ("target_not_importable", ["loss._target_=ppo_research.losses.PolicyLoss"],
     "loss._target_='ppo_research.losses.PolicyLoss' is invalid: expected an importable class"),
    ("output_dir_under_proc", ["hydra.run.dir=/proc/ppo_research_nowhere/run"],
     "cannot write the output directory: No such file or directory: /proc/ppo_research_nowhere"),
    ("output_dir_dangling_symlink", ["hydra.run.dir={dangling}"], "cannot write the output directory: File exists: "
                                                                  "{dangling}; it exists and is not a directory"),
    ("network_too_big_for_memory", ["network.hidden_sizes=[1000000,1000000]"],
     "network.hidden_sizes=[1000000, 1000000] is invalid: expected a network that fits in memory"),
    ("rollout_too_big_for_memory", ["algo.num_steps=1000000000000"],
     "algo.num_steps=1000000000000 is invalid: expected num_envs*num_steps small enough for the rollout to fit"),
    ("torch_threads_overflow", ["torch_threads=100000"], "torch_threads=100000 is invalid: expected at most 1024"),
    ("log_std_bounds_inverted", ["network.log_std_min=5", "network.log_std_max=-5"],
     "network.log_std_min=5.0 is invalid: expected at most network.log_std_max=-5.0"),
    # issue 14: a typo in a group's key names the valid keys, as a typo in algo.* does
    ("typo_in_group_key", ["loss.epsilonn=0.3"], "loss.epsilonn='0.3' is invalid: expected a key of loss: anneal_epsilon, epsilon"),
    ("typo_in_klpen_key", ["loss=klpen", "loss.bta=3"], "loss.bta='3' is invalid: expected a key of loss: "
                                                        "adapt_every, adaptive, beta,"),
    ("unknown_top_level_key", ["+foo=1"], "foo=1 is invalid: expected a key of the top level: advantage, algo,"),
    # issue 29: argparse's usage (6-8 lines), Hydra's "Error in call to target" without its reason, a
    # value that never reached iteration 1
    ("unknown_flag", ["--bogus"], "unrecognized arguments: --bogus (see python -m ppo_research --help)"),
    ("bad_flag_value", ["--cfg=nope"], "argument --cfg/-c: invalid choice: 'nope'"),
    ("launcher_typo", ["-m", "hydra/launcher=population", "+hydra.launcher.bogus=1"],
     "hydra.launcher.bogus='1' is invalid: expected a key of hydra.launcher: population_size, processes, resume"),
    ("basic_launcher_typo", ["-m", "+hydra.launcher.bogus=1"],
     "hydra.launcher.bogus='1' is invalid: expected no such key (BasicLauncher takes no options)"),
    ("eval_episodes_beyond_any_use", ["eval.episodes=1000000000000"],
     "eval.episodes=1000000000000 is invalid: expected a value in [1, 100000]"),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Run every case once, two at a time. Each case is a command line in a process of its own,
    forked from a worker that did the imports once (``tests/helpers/cli_worker.py``): it starts as a
    fresh ``python -m ppo_research`` would after its imports, without paying for them again."""
    root = tmp_path_factory.mktemp("bad_input")
    dirs = made_dirs(root)
    workers = {}

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        worker = workers.setdefault(threading.get_ident(), CliWorker(root))
        reply = worker.run(argv, root, timeout=120, cap=False, fork=True)
        assert reply["escaped"] is None and not reply["timed_out"], reply
        return subprocess.CompletedProcess(argv, reply["status"], reply["stdout"], reply["stderr"])

    def one(case):
        name, args, expected = case
        def fill(text: str) -> str:
            for key, path in dirs.items():
                text = text.replace("{" + key + "}", str(path))
            return text

        args = [fill(a) for a in args]
        run_dir = root / "runs" / name
        head = [a for a in args if a.startswith("-")]
        rest = [a for a in args if not a.startswith("-")]
        extra = [] if any(a.startswith("hydra.run.dir=") for a in rest) else [f"hydra.run.dir={run_dir}"]
        return name, (run([*head, *BASE, *rest, *extra]), fill(expected), run_dir)

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = dict(pool.map(one, CASES))
    finally:
        for worker in workers.values():
            worker.close()
    return results, dirs


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_bad_input_gives_one_line_and_no_traceback(outcomes, name):
    results, dirs = outcomes
    result, expected, run_dir = results[name]
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], (lines[0], expected)
    assert "Traceback" not in result.stdout + result.stderr
    # Rejected before training: no run directory is left behind (Hydra's is removed again).
    assert not run_dir.exists(), sorted(p.name for p in run_dir.rglob("*"))


def test_pickle_payloads_never_run(outcomes, tmp_path):
    _, dirs = outcomes
    for kind in ("torch", "pickle"):
        path = dirs[f"payload_{kind}"] / "checkpoints" / "ckpt_00000001.pt"
        with pytest.raises(checkpoint.CheckpointError, match="refused to unpickle Python objects") as info:
            checkpoint.load(path)
        assert len(str(info.value).splitlines()) == 1
        assert not (path.parents[2] / f"pwned_{kind}").exists()  # neither the CLI nor load() ran it
    # The payload is real: unpickling it without weights_only runs the command.
    marker = tmp_path / "proof"
    write_payload(tmp_path / "p.pt", marker, "torch")
    torch.load(tmp_path / "p.pt", weights_only=False)
    assert marker.exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    result = run_cli([*BASE, "env=cartpole", f"hydra.run.dir={root / 'run'}"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


@pytest.mark.parametrize("args,expected", [
    (["algo.num_envs=3"], "algo.num_envs=3 is invalid: expected 2 as in the run being resumed (a resume may "
                          "change only total_timesteps, progress, logger)"),
    (["env=pendulum"], "env='pendulum' is invalid: expected 'cartpole' as in the run being resumed"),
    (["total_timesteps=100"], "total_timesteps=100 is invalid: expected at least 129: the run being resumed has done 2 "
                              "iteration(s) of 128 steps (256 steps)"),
])
def test_resume_refuses_changes_that_would_make_it_another_run(finished_run, tmp_path, args, expected):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    before = {p.name: p.read_bytes() for p in (copy / "checkpoints").iterdir()}
    result = run_cli([f"resume={copy}", *args], tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert {p.name: p.read_bytes() for p in (copy / "checkpoints").iterdir()} == before


def test_resume_accepts_overrides_that_agree_with_the_run(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    rows = (copy / "metrics.jsonl").read_text()
    # The original command line again (plus resume=) is fine; the run is complete, nothing to add.
    result = run_cli([f"resume={copy}", *BASE, "env=cartpole"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (copy / "metrics.jsonl").read_text() == rows
    assert not (tmp_path / "outputs").exists()  # continued in place: no new Hydra run directory


def test_free_space_is_checked_before_training(tmp_path, monkeypatch):
    from collections import namedtuple

    from helpers import compose_config

    from ppo_research.errors import RunDirError
    from ppo_research.run.loop import train
    from ppo_research.run.rundir import checkpoint as checkpoints

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 50_000, 50_000))
    cfg = compose_config(["logger=none", *TINY, "env=cartpole"])
    with pytest.raises(RunDirError, match=r"has 0\.0 MB free; this run needs about") as info:
        train.train_from_config(cfg, tmp_path / "run", {"env": "cartpole"})
    assert len(str(info.value).splitlines()) == 1
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_bug_ends_in_one_line_pointing_to_its_traceback(tmp_path):
    """An unforeseen exception is not shortened into an invented message: one line names it and
    the log file that holds its full traceback (the run directory's app.log), status 1."""
    script = ("import sys, ppo_research.run.loop.train as train, ppo_research.run.app as app\n"
              "def boom(*a, **k): raise ZeroDivisionError('a bug')\n"
              "train.train_from_config = boom\n"
              "sys.exit(app.cli(sys.argv[1:]))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("HYDRA_FULL_ERROR", None)
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", script, *BASE, f"hydra.run.dir={run_dir}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line == (f"error: unexpected ZeroDivisionError: a bug (a bug in ppo_research; the traceback is in "
                    f"{run_dir / 'app.log'})")
    log = (run_dir / "app.log").read_text()
    assert "Traceback (most recent call last)" in log and "ZeroDivisionError: a bug" in log
    assert "in boom" in log  # the frame that raised

    # HYDRA_FULL_ERROR=1 asks for the traceback itself
    result = subprocess.run([sys.executable, "-c", script, *BASE, f"hydra.run.dir={tmp_path / 'run2'}"],
                            cwd=tmp_path, env={**env, "HYDRA_FULL_ERROR": "1"}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "ZeroDivisionError: a bug" in result.stderr and "Traceback" in result.stderr


def test_app_log_is_only_made_when_something_is_logged(finished_run):
    """Hydra's job log file is opened lazily: a run that logs nothing leaves no empty app.log."""
    assert not (finished_run / "app.log").exists()


def test_any_non_negative_seed_runs(tmp_path):
    """Seeds go through numpy's SeedSequence, which takes any non-negative integer (issue 16:
    seed=99999999999999999999 ended in a traceback)."""
    result = run_cli([*BASE, "seed=99999999999999999999", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["seed"] == 99999999999999999999


def test_resume_takes_its_path_literally(finished_run, tmp_path):
    """``${...}`` in a resume path is part of the name, not an interpolation (it resumed another
    folder before)."""
    copy = tmp_path / "run_${oc.env:HOME}"
    shutil.copytree(finished_run, copy)
    result = run_cli([f"resume={copy}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming {copy} from iteration 2" in result.stderr


# ---------------------------------------------------------------------------------------------
# the sweep command's spec fields and flags (issue 16: each ended in a traceback or, for
# heartbeat_s: 0, a worker spinning a core)

SWEEP_SPEC = {"study": "s", "overrides": ["logger=none", "env=cartpole", *TINY],
              "params": {"loss.epsilon": {"low": 0.1, "high": 0.3}}, "trials": 1,
              "sampler": {"name": "RandomSampler", "seed": 0}}


@pytest.mark.parametrize("fields,flags,expected", [
    ({"heartbeat_s": "abc"}, [], "heartbeat_s='abc', expected a number of seconds >= 1"),
    ({"heartbeat_s": 0}, [], "heartbeat_s=0, expected a number of seconds >= 1"),
    ({}, ["--storage", "bogus://x"], "cannot open the study storage bogus://x: "),
    ({}, ["--storage", "sqlite:////proc/ppo_research_nowhere/study.db"],
     "cannot open the study storage sqlite:////proc/ppo_research_nowhere/study.db: "),
    ({}, ["--out", "{file}/sweeps"], "cannot make the study folder {file}/sweeps/s (--out): Not a directory"),
], ids=["heartbeat_not_a_number", "heartbeat_zero", "storage_bad_url", "storage_impossible_path", "out_under_a_file"])
def test_sweep_spec_and_flag_errors_give_one_line(tmp_path, capsys, monkeypatch, fields, flags, expected):
    import yaml

    from ppo_research.tools.sweep.cli import main as sweep_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("not a directory")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**SWEEP_SPEC, **fields}))
    flags = [f.replace("{file}", str(tmp_path / "a_file")) for f in flags]
    assert sweep_main([str(spec), *flags]) == 2
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ") and expected.replace("{file}", str(tmp_path / "a_file")) in line, line
    assert not (tmp_path / "outputs" / "sweeps" / "s" / "s").exists()


@pytest.mark.parametrize("arg", ["loss.epsilon=1.5", "total_timesteps=abc", "+foo=1"])
def test_a_rejected_command_leaves_no_run_directory(tmp_path, arg):
    """Issue 14: each of these left outputs/<date>/<time>/ holding only .hydra/ (and an empty
    app.log). The default output layout is used: the date folder and outputs/ go too when the
    command made them, and stay when they were there before."""
    result = run_cli(["logger=none", arg], tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr[-3000:]
    assert not (tmp_path / "outputs").exists(), sorted(str(p) for p in (tmp_path / "outputs").rglob("*"))
    (tmp_path / "outputs" / "earlier").mkdir(parents=True)
    result = run_cli(["logger=none", arg], tmp_path)
    assert result.returncode == 2
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["earlier"]
