"""logger=tensorboard and logger=wandb_tensorboard, checked by reading back the event files that
real runs write with TensorBoard's own EventAccumulator."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
from helpers import TINY, read_metrics, read_summary, run_cli  # noqa: E402
from helpers.wandb_files import wandb_records  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams.api_pb2 import Status  # noqa: E402
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData  # noqa: E402

# CartPole with an evaluation every iteration: every row has eval_return too.
RUN = ["env=cartpole", *[a for a in TINY if not a.startswith(("eval.", "total_timesteps"))], "total_timesteps=512",
       "eval.every=1", "eval.episodes=2", "checkpoint.every=2"]


def accumulate(directory: Path) -> EventAccumulator:
    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def hparams_data(acc: EventAccumulator) -> dict[str, HParamsPluginData]:
    out = {}
    for tag, content in acc.PluginTagToContent("hparams").items():
        data = HParamsPluginData()
        data.ParseFromString(content)
        out[tag] = data
    return out


def test_tensorboard_event_files_hold_the_metrics_against_global_step(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(["logger=tensorboard", *RUN, "loss.epsilon=0.25", f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (run_dir / "wandb").exists()  # tensorboard alone never starts wandb
    rows = read_metrics(run_dir)
    assert len(rows) == 4
    acc = accumulate(run_dir / "tensorboard")
    scalars = set(acc.Tags()["scalars"])
    assert {"episode_return", "policy_loss", "kl", "eval_return", "value_loss", "entropy"} <= scalars
    assert "global_step" not in scalars  # it is the x-axis, not a curve
    for key in ("episode_return", "policy_loss", "kl", "eval_return"):
        events = acc.Scalars(key)
        expected = [(r["global_step"], r[key]) for r in rows if r.get(key) is not None]
        assert [e.step for e in events] == [s for s, _ in expected], key
        for event, (_, value) in zip(events, expected):
            assert math.isclose(event.value, value, rel_tol=1e-6, abs_tol=1e-7), (key, event.value, value)
    # summary.json values, at the final step
    summary = read_summary(run_dir)
    final = acc.Scalars("summary/eval_return")
    assert [e.step for e in final] == [summary["global_step"]]
    assert math.isclose(final[0].value, summary["eval_return"], rel_tol=1e-6)

    # HParams plugin: the experiment (hparam and metric columns), this run's values, its end status
    data = hparams_data(acc)
    experiment = data["_hparams_/experiment"].experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"eval_return", "episode_return"}
    assert {"loss.epsilon", "env.id", "algo.num_epochs", "choices.loss"} <= {h.name for h in experiment.hparam_infos}
    start = data["_hparams_/session_start_info"].session_start_info.hparams
    assert start["loss.epsilon"].number_value == pytest.approx(0.25)
    assert start["env.id"].string_value == "CartPole-v1"
    assert start["choices.env"].string_value == "cartpole"
    assert start["env.normalize_obs"].bool_value is False
    end = data["_hparams_/session_end_info"].session_end_info
    assert end.status == Status.Value("STATUS_SUCCESS")

    # the end line names the run and carries no upload command (nothing offline to sync)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("done: run | 512 steps in ") and "wandb sync" not in last  # relative to the cwd


def test_wandb_and_tensorboard_at_once(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(["logger=wandb_tensorboard", "logger.loggers.tensorboard.log_dir=tb", *RUN,
                      f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = read_metrics(run_dir)
    acc = accumulate(run_dir / "tb")
    assert [e.step for e in acc.Scalars("kl")] == [r["global_step"] for r in rows]
    (offline,) = sorted((run_dir / "wandb").glob("offline-run-*"))
    history = [r for r in wandb_records(next(offline.glob("*.wandb"))) if r.WhichOneof("record_type") == "history"]
    assert len(history) == len(rows)
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith(f"| upload: wandb sync {offline.relative_to(tmp_path)}")


def test_resumed_run_appends_to_the_same_curves(tmp_path):
    run_dir = tmp_path / "run"
    first = run_cli(["logger=tensorboard", *RUN, f"hydra.run.dir={run_dir}"], tmp_path)
    assert first.returncode == 0, first.stderr
    second = run_cli([f"resume={run_dir}", "total_timesteps=1024", "logger=tensorboard"], tmp_path)
    assert second.returncode == 0, second.stderr
    rows = read_metrics(run_dir)
    assert len(rows) == 8
    acc = accumulate(run_dir / "tensorboard")
    assert [e.step for e in acc.Scalars("kl")] == [r["global_step"] for r in rows]
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2


def test_unwritable_event_folder_warns_and_the_run_goes_on(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "tensorboard").write_text("a file where the event folder should go\n")
    result = run_cli(["logger=tensorboard", *RUN, f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).count("tensorboard log failed") == 1  # Hydra logs warnings to stdout
    assert len(read_metrics(run_dir)) == 4 and read_summary(run_dir)["global_step"] == 512


@pytest.mark.parametrize("override, expected", [
    ("logger.log_dir=/abs/tb", "logger.log_dir='/abs/tb' is invalid: expected a relative folder name"),
    ("logger.flush_secs=0", "logger.flush_secs=0.0 is invalid: expected a number of seconds > 0"),
])
def test_bad_tensorboard_settings_are_one_line(tmp_path, override, expected):
    result = run_cli(["logger=tensorboard", *RUN, override, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr


def test_resume_from_an_earlier_checkpoint_purges_the_rewound_events(tmp_path):
    """A run resumed from iteration 2 of 4 (its last checkpoint lost): the first segment's events
    at iterations 3-4 are purged (SummaryWriter's purge_step), the curves hold each step once,
    with the resumed values."""
    run_dir = tmp_path / "run"
    first = run_cli(["logger=tensorboard", *RUN, f"hydra.run.dir={run_dir}"], tmp_path)
    assert first.returncode == 0, first.stderr
    (run_dir / "checkpoints" / "ckpt_00000004.pt").unlink()
    second = run_cli([f"resume={run_dir}"], tmp_path)
    assert second.returncode == 0, second.stderr
    assert "from iteration 2 (global step 256)" in second.stderr
    rows = read_metrics(run_dir)
    acc = accumulate(run_dir / "tensorboard")
    for key in ("kl", "policy_loss", "episode_return"):
        events = acc.Scalars(key)
        assert [e.step for e in events] == [r["global_step"] for r in rows if key in r], key
        assert [e.value for e in events] == pytest.approx([r[key] for r in rows if key in r], rel=1e-6), key
