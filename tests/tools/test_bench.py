"""``python -m ppo_research.bench``: a real (tiny) measurement, with the reference timed beside it."""
from __future__ import annotations

import json

import pytest
from helpers import REPO, run_cli
from helpers.unstackable import TARGET as UNSTACKABLE
from helpers.unstackable import TESTS_ON_PATH


def test_bench_times_the_framework_and_the_reference_side_by_side(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli(["--case", "cartpole", "--repeats", "1", "--steps", "512", "--json", str(out)], cwd=REPO,
                     module="ppo_research.bench", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["env"] == "cartpole" and row["global_step"] >= 512
    assert row["device"] == "cpu"  # as the reference, whatever the machine has
    assert row["train_sps"] > 0 and row["reference_sps"] > 0
    assert row["vs_reference"] == row["train_sps"] / row["reference_sps"]  # one repeat: its own ratio
    assert "| x ref |" in result.stdout and "cartpole" in result.stdout


# pendulum at a tiny size: 2 envs x 64 steps, so 256 steps per member are two iterations
TINY_PENDULUM = ["algo.num_envs=2", "algo.num_steps=64", "algo.minibatch_size=64", "algo.num_epochs=2"]

# matmul FLOPs per sample of the default network on Pendulum (obs 3, two 64-64 tanh towers, 1 output each),
# counted by hand: a multiply-add is 2 FLOPs
_TOWER_MACS = 3 * 64 + 64 * 64 + 64 * 1
PENDULUM_FLOPS_FWD = 2 * 2 * _TOWER_MACS
# backward: every weight's gradient (as many multiply-adds as the forward) and every layer's input
# gradient except the first's (the observation needs none)
PENDULUM_FLOPS_FWD_BWD = PENDULUM_FLOPS_FWD + 2 * 2 * (_TOWER_MACS + _TOWER_MACS - 3 * 64)


def test_update_flops_match_a_count_by_hand():
    from ppo_research.run.config.compose import compose
    from ppo_research.run.loop.build import build
    from ppo_research.tools.floor import update_flops_per_sample

    composed = compose(["env=pendulum", "logger=none"])
    network = build(composed.cfg, composed.choices).network
    assert update_flops_per_sample(network, (3,), num_epochs=10) == 10 * PENDULUM_FLOPS_FWD_BWD + PENDULUM_FLOPS_FWD
    assert (PENDULUM_FLOPS_FWD_BWD, PENDULUM_FLOPS_FWD) == (51_456, 17_408)


def test_bench_times_populations_beside_the_solo_run_and_the_reference(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli(["--case", "pendulum", "--population", "1", "2", "--repeats", "1", "--steps", "256",
                      "--json", str(out), "--", *TINY_PENDULUM], cwd=REPO, module="ppo_research.bench", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    (case,) = data["rows"]
    solo, pair = data["population_rows"]
    assert [solo["population"], pair["population"]] == [1, 2]
    for row in (solo, pair):
        size = row["population"]
        assert row["env"] == "pendulum" and row["num_envs"] == 2 and row["repeats"] == 1
        assert row["member_global_step"] == [256] * size and row["global_step"] == 256 * size
        assert row["aggregate_sps"] > 0 and row["member_sps"] == row["aggregate_sps"] / size
        # one process steps every member's envs in turn: never faster than its raw env stepping
        assert row["aggregate_sps"] < 2 * case["raw_env_sps"]
        assert row["rollout_us_per_step"] > 0 and row["update_us_per_step"] > 0
        assert row["peak_rss_mb"] > 0 and row["peak_rss_mb_per_member"] == row["peak_rss_mb"] / size
        # the ratios are to runs timed in the same repeat: the reference's single run and the population of 1
        assert row["reference_sps"] == case["reference_sps"]
        assert row["vs_reference"] == row["aggregate_sps"] / case["reference_sps"]
        assert row["solo_from"] == "population 1" and row["solo_sps"] == solo["aggregate_sps"]
        assert row["vs_solo"] == row["aggregate_sps"] / solo["aggregate_sps"]
        assert row["backend"] == "gymnasium" and row["vs_raw_env"] == row["aggregate_sps"] / case["raw_env_sps"]
        # the floor: env step + matmul FLOPs (2 epochs + the rollout's forward) at the core's peak
        assert row["floor_flops_per_step"] == 2 * PENDULUM_FLOPS_FWD_BWD + PENDULUM_FLOPS_FWD
        assert row["floor_env_us"] > 0 and row["floor_peak_gflops"] > 0
        assert row["floor_us_per_member_step"] == row["floor_env_us"] + row["floor_arithmetic_us"]
        assert row["vs_solo_bound"] == 1e6 / solo["aggregate_sps"] / row["floor_us_per_member_step"]
        # nothing beats its own floor
        assert row["aggregate_sps"] / size < 1e6 / row["floor_us_per_member_step"]
    assert solo["vs_solo"] == 1.0
    assert pair["peak_rss_mb"] >= 0.9 * solo["peak_rss_mb"]  # two members' envs and networks in one process
    assert "| members | aggregate SPS |" in result.stdout
    assert "| pendulum | 2 |" in result.stdout


def test_bench_times_populations_on_envpool_beside_the_gymnasium_run(tmp_path):
    """--population-backend envpool: the population steps EnvPool's envs, the single run, the
    reference and the raw env rate stay on gymnasium; x solo and x raw env compare the two."""
    pytest.importorskip("envpool")
    out = tmp_path / "bench.json"
    result = run_cli(["--case", "pendulum", "--population", "2", "--population-backend", "envpool", "--repeats", "1",
                      "--steps", "256", "--no-reference", "--json", str(out), "--", *TINY_PENDULUM], cwd=REPO,
                     module="ppo_research.bench", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    (case,), (pair,) = data["rows"], data["population_rows"]
    assert case["backend"] == "gymnasium" and pair["backend"] == "envpool" and data["population_backend"] == "envpool"
    assert pair["solo_from"] == "single run" and pair["vs_solo"] == pair["aggregate_sps"] / case["train_sps"]
    assert pair["vs_raw_env"] == pair["aggregate_sps"] / case["raw_env_sps"]
    assert "| pendulum (envpool) | 2 |" in result.stdout


def test_bench_rejects_a_population_of_zero_in_one_line(tmp_path):
    result = run_cli(["--case", "pendulum", "--population", "1", "0"], cwd=tmp_path, module="ppo_research.bench",
                     timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --population 0 is invalid: expected a positive integer"]
    assert not (tmp_path / "outputs").exists()


# -- the --json path (issue 29) ---------------------------------------------------------------------

def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def test_bench_refuses_an_unwritable_json_path_before_measuring(tmp_path):
    """Checked before any worker starts: one line, exit status 2, no progress line, no table."""
    (tmp_path / "a_file").write_text("kept")
    (tmp_path / "a_directory.json").mkdir()
    for path, message in [
        ("/proc/x/bench.json", "error: cannot write /proc/x/bench.json: cannot create files in /proc (No such file or "
                               "directory)"),
        (f"{tmp_path}/a_file/bench.json", f"error: cannot write {tmp_path}/a_file/bench.json: {tmp_path}/a_file is not "
                                          "a directory"),
        (f"{tmp_path}/a_directory.json", f"error: cannot write {tmp_path}/a_directory.json: it is a directory"),
    ]:
        result = run_cli(["--case", "cartpole", "--repeats", "1", "--steps", "256", "--no-reference", "--json", path],
                         cwd=tmp_path, module="ppo_research.bench", timeout=300)
        assert result.returncode == 2, result.stderr[-2000:]
        assert _one_error_line(result.stderr) == message
        assert result.stdout == ""
    assert (tmp_path / "a_file").read_text() == "kept" and not (tmp_path / "outputs").exists()


def test_bench_prints_its_results_when_the_json_cannot_be_written(tmp_path):
    """/dev/full passes the check (a device open for writing) and fails at the end: the results
    come out on stdout as JSON, then one line, exit status 4."""
    result = run_cli(["--case", "cartpole", "--repeats", "1", "--steps", "256", "--no-reference", "--json",
                      "/dev/full"], cwd=tmp_path, module="ppo_research.bench", timeout=600)
    assert result.returncode == 4, result.stderr[-2000:]
    progress, error = result.stderr.strip().splitlines()
    assert progress.startswith("cartpole num_envs=") and "run 1/1" in progress
    assert error == "error: cannot write /dev/full: No space left on device; the results are printed on stdout as JSON instead"
    printed = json.loads(result.stdout[result.stdout.index("\n{") + 1:])
    (row,) = printed["rows"]
    assert row["env"] == "cartpole" and row["global_step"] >= 256 and row["train_sps"] > 0
    assert "| cartpole |" in result.stdout  # the table too


# -- Atari: the CNN reference (issue 32, item 4) -----------------------------------------------------

# breakout at a tiny size: 2 envs x 64 steps, one epoch of two minibatches; 256 steps are two iterations
TINY_BREAKOUT = ["algo.num_envs=2", "algo.num_steps=64", "algo.minibatch_size=64", "algo.num_epochs=1"]


def test_bench_times_breakout_against_the_cnn_reference(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli(["--case", "breakout", "--repeats", "1", "--steps", "256", "--population", "2", "--json", str(out),
                      "--", *TINY_BREAKOUT], cwd=REPO, module="ppo_research.bench", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["env"] == "breakout" and row["env_id"] == "ALE/Breakout-v5" and row["backend"] == "gymnasium"
    assert row["num_envs"] == 2 and row["global_step"] >= 256
    assert row["reference"] == "reference_ppo_cnn" and row["reference_sps"] > 0 and row["raw_env_sps"] > 0
    assert row["vs_reference"] == row["train_sps"] / row["reference_sps"]
    # the paper's Table 5 in full: the preset plus the experiment's annealed clip 0.1
    assert data["case_overrides"] == {"breakout": ["experiment=ppo_paper_atari", *TINY_BREAKOUT]}
    assert "| x ref |" in result.stdout and "| breakout | 2 |" in result.stdout
    assert "breakout: the reference is tools/reference_ppo_cnn.py on gymnasium + ale-py" in result.stdout
    # a population of two CNNs (algo/cnn.py's stacked forward), timed beside the single run
    (pair,) = data["population_rows"]
    assert pair["population"] == 2 and pair["member_global_step"] == [256, 256]
    assert pair["aggregate_sps"] > 0 and pair["vs_reference"] == pair["aggregate_sps"] / row["reference_sps"]
    assert pair["solo_sps"] == row["train_sps"] and pair["floor_flops_per_step"] > 0


def test_bench_refuses_a_population_of_a_network_with_no_stacked_form_in_one_line(tmp_path):
    """A network that does not declare ``stackable = True`` trains populations of one only: a
    population of 4 would be four processes, not one population."""
    result = run_cli(["--case", "cartpole", "--population", "1", "4", "--", UNSTACKABLE], cwd=tmp_path,
                     module="ppo_research.bench", timeout=120, env=TESTS_ON_PATH)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: --population 4: the cartpole case's network (UnstackableMLP) has no stacked form")
    assert "docs/populations.md" in line and result.stdout == ""
    assert not (tmp_path / "outputs").exists()
