"""play and export on real (tiny) runs: play reproduces the run's own evaluation, videos are real
files with moving frames, and the exported ONNX / torch.export policies act exactly like play's
deterministic policy without ppo_research."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, TINY, read_summary, run_cli
from helpers.namespaces import run_on_tmpfs

from ppo_research.tools import export as export_tool
from ppo_research.tools.play import PlayError, load_run, play

BASE = [a for a in TINY if not a.startswith(("eval.", "total_timesteps"))] + ["total_timesteps=512", "logger=none",
                                                                             "eval.episodes=3"]
RUNS = {
    # a multirun job directory (outputs/multirun/<...>/0), discrete actions, the shared-trunk network
    "cartpole": ["-m", "env=cartpole", "network=mlp_shared", "seed=3", "checkpoint.every=2"],
    # normalised observations (frozen statistics), Box actions clipped to the bounds
    "pendulum": ["env=pendulum", "env.max_episode_steps=60"],
    # normalised observations, actions rescaled from [-1, 1], a state-dependent std
    "pendulum_rescale": ["env=pendulum", "env.max_episode_steps=60", "env.action_mode=rescale",
                         "network.state_dependent_std=true"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, args in RUNS.items():
        if args[0] == "-m":
            result = run_cli([*args, *BASE, f"hydra.sweep.dir={root / name}"], root)
            out[name] = root / name / "0"
        else:
            result = run_cli([*args, *BASE, f"hydra.run.dir={root / name}"], root)
            out[name] = root / name
        assert result.returncode == 0, result.stderr
    return out


def _table_return(stdout: str) -> tuple[float, float]:
    match = re.search(r"^return (\S+) ± (\S+) \(mean ± std over (\d+) episodes\)$", stdout, re.M)
    assert match, stdout
    return float(match.group(1)), float(match.group(2))


# -- play ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(RUNS))
def test_play_reproduces_the_runs_final_evaluation(runs, name):
    """The final checkpoint on the run's own evaluation episodes gives the run's eval_return:
    weights, frozen normalisation statistics and action handling are the run's."""
    loaded = load_run(runs[name])
    result = play(loaded, episodes=3)
    summary = read_summary(runs[name])
    assert result.returns.mean() == pytest.approx(summary["eval_return"], rel=1e-9, abs=1e-9)
    assert result.returns.std() == pytest.approx(summary["eval_return_std"], rel=1e-9, abs=1e-9)


def test_play_command_line_table(runs, tmp_path):
    result = run_cli([str(runs["pendulum"]), "--episodes", "3"], tmp_path, module="ppo_research.play")
    assert result.returncode == 0, result.stderr
    mean, std = _table_return(result.stdout)
    summary = read_summary(runs["pendulum"])
    assert mean == pytest.approx(summary["eval_return"], abs=0.006) and std == pytest.approx(
        summary["eval_return_std"], abs=0.006)
    rows = re.findall(r"^\s+(\d+)\s+(-?\d+\.\d+)\s+(\d+)$", result.stdout, re.M)
    assert [int(r[0]) for r in rows] == [0, 1, 2] and all(int(r[2]) == 60 for r in rows)
    assert "config from run.json" in result.stdout


def test_play_stochastic_differs_and_its_seed_repeats(runs):
    loaded = load_run(runs["pendulum"])
    deterministic = play(loaded, episodes=2).returns
    first = play(loaded, episodes=2, deterministic=False, seed=11).returns
    again = play(loaded, episodes=2, deterministic=False, seed=11).returns
    assert np.array_equal(first, again)
    assert not np.array_equal(first, deterministic)
    # --seed picks other start states: another seed's deterministic episodes differ too
    assert not np.array_equal(play(loaded, episodes=2, seed=11).returns, deterministic)


def test_play_falls_back_to_the_checkpoints_config(runs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs["cartpole"], copy)
    (copy / "run.json").unlink()
    result = run_cli([str(copy), "--episodes", "3"], tmp_path, module="ppo_research.play")
    assert result.returncode == 0, result.stderr
    assert "config from checkpoint ckpt_" in result.stdout
    assert _table_return(result.stdout)[0] == pytest.approx(read_summary(runs["cartpole"])["eval_return"], abs=0.006)


def test_play_an_older_checkpoint(runs, tmp_path):
    checkpoints = sorted((runs["cartpole"] / "checkpoints").glob("ckpt_*.pt"))
    assert len(checkpoints) >= 2
    result = run_cli([str(runs["cartpole"]), "--checkpoint", checkpoints[0].name, "--episodes", "2"], tmp_path,
                     module="ppo_research.play")
    assert result.returncode == 0, result.stderr
    assert f"checkpoint {checkpoints[0].name} (iteration {int(checkpoints[0].stem[5:])}," in result.stdout


@pytest.mark.parametrize("args, message", [
    (["{tmp}/missing"], "error: run directory {tmp}/missing does not exist"),
    (["{tmp}"], "error: {tmp} is not a run directory (no run.json, no checkpoints/)"),
    (["{run}", "--checkpoint", "nope.pt"], "error: checkpoint nope.pt does not exist"),
    (["{run}", "--checkpoint", "{tmp}/garbage.pt"], "error: cannot load checkpoint {tmp}/garbage.pt"),
    (["{run}", "--episodes", "0"], "error: --episodes must be at least 1, got 0"),
    (["{run}", "--video", "{tmp}/out.avi"], "error: cannot write video {tmp}/out.avi: the extension must be"),
    (["{run}", "--video", "{tmp}/no/out.mp4"], "error: cannot write video {tmp}/no/out.mp4: directory"),
    (["{run}", "--episodes", "many"], "error: argument --episodes: invalid int value: 'many'"),
])
def test_play_bad_input_is_one_line(runs, tmp_path, args, message):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    fill = {"tmp": str(tmp_path), "run": str(runs["cartpole"])}
    result = run_cli([a.format(**fill) for a in args], tmp_path, module="ppo_research.play")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message.format(**fill)), result.stderr
    assert result.stdout == ""


def test_play_without_checkpoints_is_one_line(runs, tmp_path):
    run_dir = tmp_path / "empty_run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "run.json").write_text((runs["cartpole"] / "run.json").read_text())
    result = run_cli([str(run_dir)], tmp_path, module="ppo_research.play")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {run_dir} has no checkpoints ({run_dir}/checkpoints/ckpt_*.pt): nothing to play "
        "(was it stopped before its first checkpoint?)"]


# -- video ---------------------------------------------------------------------------------------

def _read_frames(path: Path) -> np.ndarray:
    import imageio.v2 as imageio

    return np.stack([np.asarray(frame) for frame in imageio.get_reader(str(path))])


def _assert_moving(frames: np.ndarray) -> None:
    assert frames.ndim == 4 and frames.shape[-1] == 3 and frames.std() > 1
    changes = [np.abs(frames[i].astype(int) - frames[i + 1].astype(int)).max() for i in range(len(frames) - 1)]
    assert sum(c > 0 for c in changes) >= len(changes) // 2, changes  # most frames differ from the next


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_video_of_a_classic_control_episode(runs, tmp_path, suffix):
    pytest.importorskip("pygame")
    pytest.importorskip("imageio_ffmpeg")
    path = tmp_path / f"cartpole{suffix}"
    result = run_cli([str(runs["cartpole"]), "--episodes", "1", "--video", str(path)], tmp_path,
                     module="ppo_research.play")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no SDL / pygame chatter on a headless machine
    length = int(re.search(r"^\s+0\s+\S+\s+(\d+)$", result.stdout, re.M).group(1))
    frames = _read_frames(path)
    if suffix == ".mp4":
        assert len(frames) == length + 1  # the reset frame and one per step
    else:
        assert 2 <= len(frames) <= length + 1  # GIF writers merge identical consecutive frames
    _assert_moving(frames)
    assert f"video of episode 0 ({length + 1} frames): {path}" in result.stdout


@pytest.mark.parametrize("blocked, video, message", [
    ("pygame", "v.mp4", "error: cannot render CartPole-v1 (DependencyNotInstalled: pygame is not installed"),
    ("imageio_ffmpeg", "v.mp4", "error: writing an MP4 needs the imageio-ffmpeg package, which is not installed"),
])
def test_a_missing_video_package_is_one_line(runs, tmp_path, blocked, video, message):
    """The package made unimportable (as if not installed): one line naming the extra, exit 2,
    no file written, nothing on stdout."""
    code = (f"import sys; sys.modules[{blocked!r}] = None; from ppo_research.tools.play import main; "
            f"raise SystemExit(main([{str(runs['cartpole'])!r}, '--episodes', '1', '--video', {video!r}]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message) and 'pip install -e ".[video]"' in lines[0], result.stderr
    assert result.stdout == "" and not (tmp_path / video).exists()


def test_video_of_a_mujoco_episode(tmp_path):
    """Off-screen MuJoCo rendering (MUJOCO_GL=egl by default when there is no display)."""
    pytest.importorskip("imageio_ffmpeg")
    run_dir = tmp_path / "hopper"
    trained = run_cli(["env=hopper", *BASE, "total_timesteps=256", "env.max_episode_steps=25",
                       f"hydra.run.dir={run_dir}"], tmp_path)
    assert trained.returncode == 0, trained.stderr
    path = tmp_path / "hopper.mp4"
    result = run_cli([str(run_dir), "--episodes", "1", "--video", str(path)], tmp_path, module="ppo_research.play")
    assert result.returncode == 0, result.stderr
    frames = _read_frames(path)
    length = int(re.search(r"^\s+0\s+\S+\s+(\d+)$", result.stdout, re.M).group(1))
    assert len(frames) == length + 1 and frames.shape[1:] == (480, 480, 3)
    _assert_moving(frames)


def test_broken_mujoco_rendering_is_one_line(tmp_path):
    """A GL backend that cannot start is reported in one line naming the fix, exit 2."""
    run_dir = tmp_path / "hopper"
    trained = run_cli(["env=hopper", *BASE, "total_timesteps=128", "env.max_episode_steps=5",
                       f"hydra.run.dir={run_dir}"], tmp_path)
    assert trained.returncode == 0, trained.stderr
    result = run_cli([str(run_dir), "--episodes", "1", "--video", str(tmp_path / "h.mp4")], tmp_path,
                     module="ppo_research.play", env={"MUJOCO_GL": "glfw", "DISPLAY": ""})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot render Hopper-v5 off-screen with MUJOCO_GL=glfw"), \
        result.stderr
    assert "libegl1" in lines[0] and not (tmp_path / "h.mp4").exists()


# -- export --------------------------------------------------------------------------------------

#: run in a fresh interpreter where ppo_research cannot be imported: the file alone must do
STANDALONE = """
import sys, json
import numpy as np
sys.modules["ppo_research"] = None  # any import of the package now fails
path, fmt, obs_file, out_file = sys.argv[1:]
obs = np.load(obs_file)
if fmt == "onnx":
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "obs" and out.name == "action", (inp.name, out.name)
    actions = session.run(None, {"obs": obs})[0]
    meta = json.loads(session.get_modelmeta().custom_metadata_map["ppo_research"])
else:
    import torch
    extra = {"ppo_research.json": ""}
    program = torch.export.load(path, extra_files=extra)
    actions = program.module()(torch.from_numpy(obs)).numpy()
    meta = json.loads(extra["ppo_research.json"])
np.save(out_file, actions)
print(json.dumps(meta))
"""


@pytest.mark.parametrize("name", list(RUNS))
def test_exported_policies_act_like_play(runs, tmp_path, name):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    loaded = load_run(runs[name])
    obs = export_tool.sample_observations(loaded, 1000)
    assert obs.shape == (1000, loaded.network.obs_dim) and obs.dtype == np.float32
    expected = export_tool.play_actions(loaded, obs)
    np.save(tmp_path / "obs.npy", obs)
    for fmt in ("onnx", "torch"):
        path, meta = export_tool.write(loaded, fmt, tmp_path / ("policy.onnx" if fmt == "onnx" else "policy.pt2"))
        script = subprocess.run([sys.executable, "-c", STANDALONE, str(path), fmt, str(tmp_path / "obs.npy"),
                                 str(tmp_path / "actions.npy")], capture_output=True, text=True, timeout=300,
                                cwd=tmp_path)
        assert script.returncode == 0, script.stderr
        actions = np.load(tmp_path / "actions.npy")
        assert actions.shape == expected.shape, fmt
        if meta["action_space"]["type"] == "Discrete":
            assert actions.dtype == np.int64 and np.array_equal(actions, expected), fmt
        else:
            assert actions.dtype == np.float32
            np.testing.assert_allclose(actions, expected, rtol=0, atol=1e-5, err_msg=fmt)
            low, high = np.array(meta["action_space"]["low"]), np.array(meta["action_space"]["high"])
            assert (actions >= low - 1e-6).all() and (actions <= high + 1e-6).all()
        described = json.loads(script.stdout)
        assert described["env_id"] == loaded.env_config.id and described["checkpoint"] == loaded.checkpoint.name
    # the obs batches include perturbed, far-out-of-distribution inputs: the normalisation clip matters there
    if loaded.env_config.normalize_obs:
        assert (np.abs(loaded.normalize(obs)) >= loaded.env_config.clip_obs).any()


def test_export_command_line(runs, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "pendulum.onnx"
    result = run_cli([str(runs["pendulum"]), "--format", "onnx", "--out", str(out), "--verify", "200"], tmp_path,
                     module="ppo_research.export")
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 1000
    assert f"wrote {out} (onnx," in result.stdout and "obs float32 [batch, 3] -> action float32 [batch, 1]" in result.stdout
    diff = float(re.search(r"on 200 observations: max \|diff\| = (\S+)$", result.stdout, re.M).group(1))
    assert diff <= 1e-5


@pytest.mark.parametrize("args, message", [
    (["{run}", "--format", "tflite", "--out", "{tmp}/x"], "error: argument --format: invalid choice: 'tflite'"),
    (["{run}", "--format", "onnx"], "error: the following arguments are required: --out"),
    (["{run}", "--format", "torch", "--out", "{tmp}/no/x.pt2"], "error: cannot write {tmp}/no/x.pt2: directory"),
    (["{tmp}/missing", "--format", "torch", "--out", "{tmp}/x.pt2"], "error: run directory {tmp}/missing does not exist"),
    (["{run}", "--format", "torch", "--out", "{tmp}/x.pt"], "error: cannot write {tmp}/x.pt: torch.export programs are files ending in .pt2"),
])
def test_export_bad_input_is_one_line(runs, tmp_path, args, message):
    fill = {"tmp": str(tmp_path), "run": str(runs["cartpole"])}
    result = run_cli([a.format(**fill) for a in args], tmp_path, module="ppo_research.export")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message.format(**fill)), result.stderr


def test_play_rejects_a_checkpoint_of_another_network(runs, tmp_path):
    """The pendulum checkpoint in the cartpole run: a clear refusal, not a traceback."""
    bad = next((runs["pendulum"] / "checkpoints").glob("ckpt_*.pt"))
    with pytest.raises(PlayError, match="does not fit the network"):
        load_run(runs["cartpole"], bad)


# -- bad paths of the outputs, damaged checkpoints (issue 29) -------------------------------------


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("out, message", [
    ("/proc/policy.onnx", "error: cannot write /proc/policy.onnx: cannot create files in /proc (No such file or "
                          "directory)"),
    ("{tmp}/a_directory", "error: cannot write {tmp}/a_directory: it is a directory"),
    ("{tmp}/a_file/policy.onnx", "error: cannot write {tmp}/a_file/policy.onnx: {tmp}/a_file is not a directory"),
], ids=["proc", "directory", "under-a-file"])
def test_export_refuses_an_unwritable_out_before_loading_the_run(runs, tmp_path, out, message):
    """--out is checked first: one line, exit status 2, even for a run directory that does not
    exist (the run is not even looked at yet)."""
    (tmp_path / "a_directory").mkdir()
    (tmp_path / "a_file").write_text("not a directory")
    fill = {"tmp": str(tmp_path)}
    for run_dir in (runs["cartpole"], tmp_path / "missing_run"):
        result = run_cli([str(run_dir), "--format", "onnx", "--out", out.format(**fill)], tmp_path,
                         module="ppo_research.export")
        assert result.returncode == 2, result.stderr
        assert _one_error_line(result.stderr) == message.format(**fill)
        assert result.stdout == ""
    assert (tmp_path / "a_file").read_text() == "not a directory" and not any((tmp_path / "a_directory").iterdir())


def test_export_to_a_full_device_is_an_io_error_in_one_line(runs, tmp_path):
    result = run_cli([str(runs["cartpole"]), "--format", "onnx", "--out", "/dev/full"], tmp_path,
                     module="ppo_research.export")
    assert result.returncode == 4, result.stderr
    assert _one_error_line(result.stderr) == "error: cannot write /dev/full: No space left on device"
    assert result.stdout == ""


def test_export_on_a_full_disk_keeps_the_earlier_file(runs, tmp_path):
    """A 64 KiB file system with an earlier policy.onnx (8 KiB) and 44 KiB of other files: the
    new export does not fit. One line, exit status 4, the earlier file intact, no temp file left."""
    out = tmp_path / "mnt" / "policy.onnx"
    got = run_on_tmpfs(tmp_path, "size=64k", "ppo_research.export",
                       [str(runs["cartpole"]), "--format", "onnx", "--out", str(out), "--verify", "0"],
                       files={"policy.onnx": 8192, "filler": 44 * 1024})
    assert got["returncode"] == 4, got["stderr"]
    assert _one_error_line(got["stderr"]) == f"error: cannot write {out}: No space left on device; {out} is as it was"
    assert got["unchanged"] == {"policy.onnx": True, "filler": True}
    assert got["listing"] == ["filler", "policy.onnx"] and got["stdout"] == ""


def test_export_and_play_on_a_read_only_file_system_are_one_line(runs, tmp_path):
    mount = tmp_path / "mnt"
    got = run_on_tmpfs(tmp_path, "ro", "ppo_research.export",
                       [str(runs["cartpole"]), "--format", "torch", "--out", str(mount / "policy.pt2")])
    assert got["returncode"] == 2, got["stderr"]
    assert _one_error_line(got["stderr"]) == (f"error: cannot write {mount / 'policy.pt2'}: cannot create files in "
                                              f"{mount} (Read-only file system)")
    got = run_on_tmpfs(tmp_path, "ro", "ppo_research.play",
                       [str(runs["cartpole"]), "--episodes", "1", "--video", str(mount / "episode.gif")])
    assert got["returncode"] == 2, got["stderr"]
    assert _one_error_line(got["stderr"]) == (f"error: cannot write video {mount / 'episode.gif'}: cannot create "
                                              f"files in {mount} (Read-only file system)")
    assert got["stdout"] == ""  # refused before any episode ran


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "error: --seed must be a non-negative integer, got -1"),
    (["--video", "/proc/episode.gif"],
     "error: cannot write video /proc/episode.gif: cannot create files in /proc (No such file or directory)"),
    (["--video", "{tmp}/a_file/episode.gif"], "error: cannot write video {tmp}/a_file/episode.gif: {tmp}/a_file is "
                                              "not a directory"),
    (["--video", "{tmp}/folder.gif"], "error: cannot write video {tmp}/folder.gif: it is a directory"),
], ids=["negative-seed", "proc", "under-a-file", "directory"])
def test_play_refuses_a_bad_seed_or_video_path_before_playing(runs, tmp_path, args, message):
    pytest.importorskip("imageio")
    (tmp_path / "a_file").write_text("not a directory")
    (tmp_path / "folder.gif").mkdir()
    fill = {"tmp": str(tmp_path)}
    result = run_cli([str(runs["cartpole"]), "--episodes", "1", *[a.format(**fill) for a in args]], tmp_path,
                     module="ppo_research.play")
    assert result.returncode == 2, result.stderr
    assert _one_error_line(result.stderr) == message.format(**fill)
    assert result.stdout == ""


def test_play_keeps_its_table_when_the_video_cannot_be_written(runs, tmp_path):
    """episode.gif is a link to /dev/full: it passes the check (a device open for writing) and
    the write fails at the end. The table of returns still comes out; one line, exit status 4."""
    pytest.importorskip("imageio")
    pytest.importorskip("pygame")
    video = tmp_path / "episode.gif"
    video.symlink_to("/dev/full")
    result = run_cli([str(runs["cartpole"]), "--episodes", "2", "--video", str(video)], tmp_path,
                     module="ppo_research.play")
    assert result.returncode == 4, result.stderr
    assert _one_error_line(result.stderr) == (f"error: cannot write video {video}: No space left on device "
                                              "(the episodes' table is on stdout)")
    assert _table_return(result.stdout) and "video of episode 0" not in result.stdout


def test_export_verify_has_an_upper_bound(runs, tmp_path):
    out = tmp_path / "policy.pt2"
    for count in ("100001", "100000000000", "-1"):
        result = run_cli([str(runs["cartpole"]), "--format", "torch", "--out", str(out), "--verify", count], tmp_path,
                         module="ppo_research.export")
        assert result.returncode == 2, result.stderr
        assert _one_error_line(result.stderr) == \
            f"error: --verify must be between 0 and 100,000 observations, got {count}"
        assert not out.exists()  # refused before anything was built


def test_onnx_batch_axis_is_named_batch(runs, tmp_path):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    path, _ = export_tool.write(load_run(runs["pendulum"]), "onnx", tmp_path / "policy.onnx")
    model = onnx.load(str(path))
    (obs,), (action,) = model.graph.input, model.graph.output
    dims = lambda value: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(obs) == ["batch", 3] and dims(action) == ["batch", 1]
    symbols = {d.dim_param for v in model.graph.value_info for d in v.type.tensor_type.shape.dim if d.dim_param}
    assert symbols <= {"batch"}  # torch.export's symbol (s79, s35, ...) is gone everywhere
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3] and session.get_outputs()[0].shape == ["batch", 1]
    assert session.run(None, {"obs": np.zeros((5, 3), np.float32)})[0].shape == (5, 1)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_play_and_export_fall_back_past_a_truncated_newest_checkpoint(runs, tmp_path):
    """The newest checkpoint cut in half (a crash mid-copy): play and export use the newest one
    that loads, say in one warning line which file they skipped and why, and leave it in place."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(runs["cartpole"], run_dir)
    checkpoints = sorted((run_dir / "checkpoints").glob("ckpt_*.pt"))
    newest, previous = checkpoints[-1], checkpoints[-2]
    _truncate(newest)
    damaged = newest.read_bytes()
    result = run_cli([str(run_dir), "--episodes", "1"], tmp_path, module="ppo_research.play")
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"warning: skipped 1 newer checkpoint(s) of {run_dir} that cannot be used, left in place: "
                           f"{newest.name} (") and line.endswith(f"); using {previous.name}"), line
    assert f"checkpoint {previous.name} (iteration {int(previous.stem[5:])}," in result.stdout
    out = tmp_path / "policy.pt2"
    result = run_cli([str(run_dir), "--format", "torch", "--out", str(out), "--verify", "50"], tmp_path,
                     module="ppo_research.export")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [line]
    assert f"policy from {previous.name}" in result.stdout and out.is_file()
    # read-only tools: the damaged file is where it was, as it was; nothing set aside
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [p.name for p in checkpoints]
    assert newest.read_bytes() == damaged
    # the damaged checkpoint asked for by name: refused in one line
    result = run_cli([str(run_dir), "--checkpoint", newest.name, "--episodes", "1"], tmp_path,
                     module="ppo_research.play")
    assert result.returncode == 2
    assert _one_error_line(result.stderr).startswith(f"error: cannot load checkpoint {newest}: ")
    # none usable: one line naming every file
    for path in checkpoints:
        _truncate(path)
    result = run_cli([str(run_dir), "--episodes", "1"], tmp_path, module="ppo_research.play")
    assert result.returncode == 2
    error = _one_error_line(result.stderr)
    assert error.startswith(f"error: {run_dir}: no usable checkpoint in {run_dir / 'checkpoints'} (")
    assert all(p.name in error for p in checkpoints) and result.stdout == ""
