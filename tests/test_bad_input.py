"""Bad input costs seconds: every case exits non-zero with one ``error: ...`` line naming the key,
the value and what is allowed, before any training env starts, and never with a traceback."""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from conftest import TINY, run_cli
from ppo_research.run import checkpoint

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
    ("resume_corrupt_checkpoint", ["resume={corrupt}"], "cannot load checkpoint {corrupt}/checkpoints/ckpt_00000002.pt"),
    ("resume_other_format", ["resume={other_format}"], "is not a ppo_research checkpoint of format"),
    ("resume_pickle_payload_torch", ["resume={payload_torch}"], "refused to unpickle Python objects"),
    ("resume_pickle_payload_raw", ["resume={payload_pickle}"], "refused to unpickle Python objects"),
    ("resume_with_multirun", ["-m", "resume={foreign}"], "not combined with --multirun"),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Run every case once, two at a time (each is a Python start-up plus a Hydra compose)."""
    root = tmp_path_factory.mktemp("bad_input")
    dirs = made_dirs(root)

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
        result = run_cli([*head, *BASE, *rest, *extra], root, timeout=120)
        return name, (result, fill(expected), run_dir)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(pool.map(one, CASES))
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
    # Rejected before training: nothing was logged or checkpointed.
    assert not (run_dir / "metrics.jsonl").exists()
    assert not checkpoint.list_checkpoints(run_dir)


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
    (["total_timesteps=100"], "total_timesteps=100 is invalid: expected at least 256"),
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

    from conftest import compose_config
    from ppo_research.errors import RunDirError
    from ppo_research.run import train

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(train.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 50_000, 50_000))
    cfg = compose_config(["logger=none", *TINY, "env=cartpole"])
    with pytest.raises(RunDirError, match=r"has 0\.0 MB free; this run needs about") as info:
        train.train_from_config(cfg, tmp_path / "run", {"env": "cartpole"})
    assert len(str(info.value).splitlines()) == 1
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_genuine_bug_keeps_its_traceback(tmp_path):
    """Only expected failures are shortened: an exception from a bug still shows where it came from."""
    script = ("import sys, ppo_research.run.app as app\n"
              "def boom(*a, **k): raise ZeroDivisionError('a bug')\n"
              "app.train_from_config = boom\n"
              "sys.exit(app.cli(sys.argv[1:]))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", script, *BASE, f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ZeroDivisionError: a bug" in result.stderr
