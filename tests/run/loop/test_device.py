"""``device=auto|cpu|cuda``: where the networks and the update run.

Without a GPU, the cuda path is checked on a device simulated on the CPU (tests/helpers/
simulated_device.py): a run whose tensors would meet on two devices, or that would read a device
tensor into numpy, fails there as it would on CUDA. The run keeps the CPU's numbers, so each run
under the simulation is also compared with the same run without it, bit for bit. The tests that
need a real GPU are marked ``gpu`` and skip without one.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from helpers import build_trainer, compose_config, read_metrics, without_timing
from helpers.simulated_device import simulated_device

from ppo_research.errors import ConfigError
from ppo_research.run.loop.build import build, resolve_device
from ppo_research.run.loop.train import MemberJob, train_from_config, train_members

HAVE_ALE = importlib.util.find_spec("ale_py") is not None and importlib.util.find_spec("cv2") is not None
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU: torch.cuda.is_available() is False")

SHORT = ["logger=none", "progress=false", "eval.episodes=2", "total_timesteps=512", "algo.num_envs=2",
         "algo.num_steps=64", "algo.minibatch_size=32", "algo.num_epochs=2", "device=cpu"]
CASES = {
    "pendulum": ["env=pendulum"],
    "pendulum-plain-paths": ["env=pendulum", "algo.fast_paths=false"],
    "cartpole-klpen-recompute": ["env=cartpole", "loss=klpen", "algo.recompute_advantages=true"],
    "pendulum-shared-trunk-sde": ["env=pendulum", "network=mlp_shared", "network.state_dependent_std=true"],
}


def train(overrides: list[str], run_dir, simulate: bool) -> list[dict]:
    cfg = compose_config([*SHORT, *overrides])
    if simulate:
        with simulated_device():
            train_from_config(cfg, run_dir, {})
    else:
        train_from_config(cfg, run_dir, {})
    return without_timing(read_metrics(run_dir))


@pytest.mark.parametrize("case", CASES)
def test_a_run_keeps_its_tensors_on_its_device(case, tmp_path):
    on_device = train(CASES[case], tmp_path / "device", simulate=True)
    assert on_device == train(CASES[case], tmp_path / "cpu", simulate=False)
    assert len(on_device) == 4


def test_a_population_keeps_its_tensors_on_its_device(tmp_path):
    """Two stacked members (the flat Adam, the member masks, the entropy noise of each member)."""
    def run(name: str, simulate: bool) -> list[list[dict]]:
        jobs = [MemberJob(compose_config([*SHORT, "env=pendulum", "loss=klpen", f"seed={s}",
                                          f"loss.beta={b}"]), tmp_path / name / str(s), {})
                for s, b in ((0, 1.0), (1, 3.0))]
        if simulate:
            with simulated_device():
                results = train_members(jobs)
        else:
            results = train_members(jobs)
        assert all(isinstance(r, dict) for r in results), results
        return [without_timing(read_metrics(j.run_dir)) for j in jobs]

    assert run("device", True) == run("cpu", False)


def test_a_checkpoint_holds_host_tensors_and_resumes_onto_the_device(tmp_path):
    """A checkpoint's tensors are copied to the host (play, export and a CPU-only machine load
    them), and a resume puts them back on the device: the run ends as the uninterrupted one."""
    cfg = compose_config([*SHORT, "env=pendulum", "checkpoint.every=1"])
    with simulated_device() as device:
        trainer = build_trainer([*SHORT, "env=pendulum"], tmp_path / "built")
        state = trainer.member_state(0)
        tensors = [*state["policy"].values(), state["optimizer"]["exp_avg"], state["optimizer"]["exp_avg_sq"]]
        assert all(device.is_device(p) for p in trainer.member.policy.parameters())
        assert not any(device.is_device(t) for t in tensors)
        trainer.close()
        train_from_config(cfg, tmp_path / "run", {})
        first = sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))[0]
        train_from_config(cfg, tmp_path / "run", {}, resume_from=first)
    uninterrupted = tmp_path / "cpu"
    train_from_config(cfg, uninterrupted, {})
    assert without_timing(read_metrics(tmp_path / "run")) == without_timing(read_metrics(uninterrupted))


@pytest.mark.skipif(not HAVE_ALE, reason="the atari extra is not installed")
def test_a_cnn_run_acts_and_learns_on_its_device(tmp_path):
    """Pixels: the rollout's inference runs on the device too (the CNN acts with torch)."""
    case = ["env=breakout", "network=nature_cnn", "algo.num_envs=2", "algo.num_steps=16", "algo.minibatch_size=16",
            "total_timesteps=64", "eval.episodes=1", "env.max_episode_steps=200"]
    assert train(case, tmp_path / "device", simulate=True) == train(case, tmp_path / "cpu", simulate=False)


def test_device_settings():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError) as err:
            build(compose_config(["logger=none", "device=cuda"]))
        text = str(err.value)
        assert text.startswith("device='cuda' is invalid") and "sees no GPU" in text and "\n" not in text
    with pytest.raises(ConfigError, match="device='tpu' is invalid: expected one of auto, cpu, cuda"):
        build(compose_config(["logger=none", "device=tpu"]))


@needs_gpu
@pytest.mark.gpu
def test_a_run_on_the_gpu_learns_what_the_cpu_run_learns(tmp_path):
    """On a GPU the numbers differ from the CPU's by round-off (other kernels), so the first
    iteration's losses agree to a tolerance, and the run ends with finite metrics."""
    runs = {}
    for device in ("cpu", "cuda"):
        cfg = compose_config([*SHORT, "env=pendulum", f"device={device}"])
        train_from_config(cfg, tmp_path / device, {})
        runs[device] = read_metrics(tmp_path / device)
    for key in ("policy_loss", "value_loss", "entropy"):
        np.testing.assert_allclose(runs["cuda"][0][key], runs["cpu"][0][key], rtol=1e-3, atol=1e-4)
    assert all(np.isfinite(row["value_loss"]) for row in runs["cuda"])
