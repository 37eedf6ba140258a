"""Benchmark: training throughput, where the time goes, and the physical limit.

    python -m ppo_research.bench                                  # the standard table
    python -m ppo_research.bench --case halfcheetah --repeats 5   # one preset
    python -m ppo_research.bench --scaling 1 2 4 8 16             # num_envs scaling (halfcheetah)
    python -m ppo_research.bench --case pendulum -- algo.num_epochs=4   # Hydra overrides after --

Each measurement runs in a fresh process (so peak RSS is that run's own) with logger=none and
the preset's settings otherwise; the table gives medians over --repeats. Training SPS is end to
end (rollout, advantages, update, metrics.jsonl) and excludes only evaluation episodes.
The raw env SPS steps the same vector env with random actions: the limit the trainer can reach.

Every repeat of a case also times ``tools/reference_ppo.py`` - a straightforward single-file
PyTorch PPO - at the preset's sizes (envs, horizon, epochs, minibatch, learning rate, gamma,
lambda), right after the framework's run: ``x ref`` is the median of the per-repeat ratios,
the figure to quote, since absolute SPS depends on the machine (``--no-reference`` skips it).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

STANDARD_CASES = ("halfcheetah", "pendulum", "cartpole")
PAPER_BATCH = 2048  # horizon x envs kept at the paper's batch when scaling num_envs


def measure(env: str, num_envs: int | None, steps: int, overrides: list[str]) -> dict:
    """One training run plus raw stepping, in this process."""
    import gymnasium as gym

    from ..run.compose import compose
    from ..run.build import build
    from ..run.envs import make_env
    from ..run.trainer import Trainer

    extra = [f"env={env}", "logger=none", f"total_timesteps={steps}", "eval.every=0", "eval.episodes=1",
             "checkpoint.every=0", "progress=false"]
    if num_envs is not None:
        extra += [f"algo.num_envs={num_envs}", f"algo.num_steps={PAPER_BATCH // num_envs}"]
    composed = compose(extra + overrides)
    parts = build(composed.cfg, composed.choices)
    config = parts.config
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(parts, Path(run_dir))
        try:
            trainer.train()
        finally:
            trainer.close()
        rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]

    global_step = rows[-1]["global_step"]
    train_time = rows[-1]["time_s"] - sum(r.get("time_eval_s", 0.0) for r in rows)
    rollout_time = sum(r["time_rollout_s"] for r in rows)
    update_time = sum(r["time_update_s"] for r in rows)

    n = config.algo.num_envs
    raw = gym.vector.SyncVectorEnv([lambda: make_env(config.env) for _ in range(n)])
    raw.reset(seed=0)
    raw.action_space.seed(0)
    actions = [raw.action_space.sample() for _ in range(256)]
    raw_steps = max(2000 // n, 200)
    start = time.perf_counter()
    for i in range(raw_steps):
        raw.step(actions[i % 256])
    raw_sps = raw_steps * n / (time.perf_counter() - start)
    raw.close()
    return {"env": env, "env_id": config.env.id, "num_envs": n, "num_steps": config.algo.num_steps,
            "minibatch_size": config.algo.minibatch_size, "num_epochs": config.algo.num_epochs,
            "global_step": global_step, "train_sps": global_step / train_time,
            "rollout_us_per_step": 1e6 * rollout_time / global_step,
            "update_us_per_step": 1e6 * update_time / global_step, "raw_env_sps": raw_sps,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure_reference(env: str, num_envs: int | None, steps: int, overrides: list[str]) -> dict:
    """The reference PPO at the sizes the framework's run of ``env`` uses, in this process."""
    from ..run.compose import compose
    from ..run.config import validate
    from . import reference_ppo

    extra = [f"env={env}", "logger=none"]
    if num_envs is not None:
        extra += [f"algo.num_envs={num_envs}", f"algo.num_steps={PAPER_BATCH // num_envs}"]
    cfg = compose(extra + overrides).cfg
    algo = validate(cfg).algo
    result = reference_ppo.train(cfg.env.id, steps, num_envs=algo.num_envs, num_steps=algo.num_steps,
                                 num_epochs=algo.num_epochs, minibatch_size=algo.minibatch_size,
                                 learning_rate=algo.learning_rate, gamma=cfg.advantage.gamma,
                                 gae_lambda=cfg.advantage.get("lam", 0.95))
    return {"reference_sps": result["sps"], "reference_peak_rss_mb":
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_worker(env: str, num_envs: int | None, steps: int, overrides: list[str], reference: bool = False) -> dict:
    cmd = [sys.executable, "-m", "ppo_research.bench", "--worker", env, "--steps", str(steps),
           "--num-envs", str(num_envs or 0), *(["--reference-worker"] if reference else []), "--", *overrides]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: benchmark of {env} failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def median_row(samples: list[dict]) -> dict:
    row = dict(samples[0])
    for key in ("train_sps", "rollout_us_per_step", "update_us_per_step", "raw_env_sps", "peak_rss_mb"):
        row[key] = statistics.median(s[key] for s in samples)
        row[key + "_all"] = [round(s[key], 1) for s in samples]
    row["ratio"] = row["train_sps"] / row["raw_env_sps"]
    row["repeats"] = len(samples)
    if all("reference_sps" in s for s in samples):
        row["reference_sps"] = statistics.median(s["reference_sps"] for s in samples)
        row["reference_sps_all"] = [round(s["reference_sps"], 1) for s in samples]
        ratios = [s["train_sps"] / s["reference_sps"] for s in samples]
        row["vs_reference"] = statistics.median(ratios)
        row["vs_reference_all"] = [round(r, 2) for r in ratios]
    return row


def table(rows: list[dict]) -> str:
    head = ("| case | num_envs | train SPS | reference SPS | x ref | rollout us/step | update us/step | raw env SPS "
            "| train/raw | peak RSS MB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ref = lambda r, key, fmt: format(r[key], fmt) if key in r else "-"  # noqa: E731
    lines = [f"| {r['env']} | {r['num_envs']} | {r['train_sps']:,.0f} | {ref(r, 'reference_sps', ',.0f')} | "
             f"{ref(r, 'vs_reference', '.2f')} | {r['rollout_us_per_step']:.0f} | "
             f"{r['update_us_per_step']:.0f} | {r['raw_env_sps']:,.0f} | {r['ratio']:.2f} | {r['peak_rss_mb']:.0f} |"
             for r in rows]
    return "\n".join([head, *lines])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    overrides: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m ppo_research.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", nargs="+", default=list(STANDARD_CASES), help="env presets to time at their own settings")
    parser.add_argument("--scaling", nargs="*", type=int, default=[],
                        help="num_envs values for a halfcheetah scaling run (batch kept at 2048)")
    parser.add_argument("--steps", type=int, default=20480, help="env steps per measured run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; the table gives medians")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results (default outputs/bench/<time>.json)")
    parser.add_argument("--no-reference", action="store_true", help="skip timing the reference PPO beside each run")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reference-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--num-envs", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        run = measure_reference if args.reference_worker else measure
        print(json.dumps(run(args.worker, args.num_envs or None, args.steps, overrides)))
        return
    if args.steps < 1 or args.repeats < 1:
        raise SystemExit("error: --steps and --repeats must be positive")

    plan = [(env, None) for env in args.case] + [("halfcheetah", n) for n in args.scaling]
    rows = []
    for env, num_envs in plan:
        samples = []
        for rep in range(args.repeats):
            samples.append(run_worker(env, num_envs, args.steps, overrides))
            line = f"{env} num_envs={samples[-1]['num_envs']} run {rep + 1}/{args.repeats}: {samples[-1]['train_sps']:,.0f} SPS"
            if not args.no_reference:  # timed right after, so both see the same machine
                samples[-1].update(run_worker(env, num_envs, args.steps, overrides, reference=True))
                line += (f"; reference {samples[-1]['reference_sps']:,.0f} SPS "
                         f"(x{samples[-1]['train_sps'] / samples[-1]['reference_sps']:.2f})")
            print(line, file=sys.stderr, flush=True)
        rows.append(median_row(samples))
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "processor": _cpu_model(), "date": datetime.now().isoformat(timespec="seconds")}
    print(f"machine: {machine['processor']}, {machine['cpu_count']} cores; medians of {args.repeats} runs "
          f"of {args.steps} steps")
    print(table(rows))
    out = args.json or Path("outputs") / "bench" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "steps": args.steps, "overrides": overrides, "rows": rows}, indent=2))
    print(f"written {out}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

