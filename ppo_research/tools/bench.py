"""Benchmark: training throughput, where the time goes, and the physical limit.

    python -m ppo_research.bench                                  # the standard table
    python -m ppo_research.bench --case halfcheetah --repeats 5   # one preset
    python -m ppo_research.bench --scaling 1 2 4 8 16             # num_envs scaling (halfcheetah)
    python -m ppo_research.bench --case pendulum -- algo.num_epochs=4   # Hydra overrides after --
    python -m ppo_research.bench --case halfcheetah pendulum --population 1 8   # + populations of 1 and 8

Each measurement runs in a fresh process (so peak RSS is that run's own) with logger=none,
device=cpu (the references' device; ``-- device=cuda`` times the framework on a GPU against
them) and the preset's settings otherwise; the table gives medians over --repeats. Training SPS is end to
end (rollout, advantages, update, metrics.jsonl) and excludes only evaluation episodes.
The raw env SPS steps the same vector env with random actions: the limit the trainer can reach.

Every repeat of a case also times ``tools/reference_ppo.py`` - a straightforward single-file
PyTorch PPO - at the preset's sizes (envs, horizon, epochs, minibatch, learning rate, gamma,
lambda), right after the framework's run: ``x ref`` is the median of the per-repeat ratios,
the figure to quote, since absolute SPS depends on the machine (``--no-reference`` skips it).

Atari cases (presets with ``env.preprocess=atari``: ``--case breakout``, ``pong``, ``beamrider``)
run at the paper's Table 5 settings (the preset plus ``experiment=ppo_paper_atari``, unless the
overrides name an experiment) and are timed against ``tools/reference_ppo_cnn.py``, the same kind
of single-file PPO with the Nature CNN, always on gymnasium + ale-py with gymnasium's standard
wrappers: with ``-- env.backend=envpool`` the ratio is EnvPool's framework run over the gymnasium
reference. The raw env SPS steps the backend the run used.

``--population S ...`` also times, in the same repeat, a population of S members of each case
(run/loop/train.py: S runs of the preset, seeds seed..seed+S-1, one process, one stacked
update), each member training --steps steps: its aggregate SPS (all members' steps over the
population's training time), its ratio to the reference's single run and to the solo run (the
population of 1 when it is measured, else the case's own run), and the process's peak RSS,
total and per member. Beside them, the floor of a member's step (tools/floor.py: its env step
plus the update's matmul FLOPs at this core's peak, measured in the same process) and the gain
over the solo run no population can exceed (``x solo at most``: the solo step over the floor).
``x raw env`` is the aggregate SPS over the raw env rate of the case's single run in that repeat
(its backend's envs stepped with random actions). ``--population-backend envpool`` trains the
populations on EnvPool while the single run, the reference and the raw rate stay on the case's
backend (gymnasium unless the overrides say otherwise), so ``x solo`` and ``x raw env`` compare a
population on EnvPool with the plain gymnasium run (leave ``1`` out of ``--population`` for that:
a population of 1, when timed, is the ``x solo`` baseline).
The Atari presets' CNN stacks too (``algo/cnn.py``: one member's layers after another). A network
of your own with no stacked form (no ``stackable = True``) trains populations of one per process
only (docs/populations.md), so ``--population`` above 1 with it is refused in one line rather than
timed as something it is not.

The ``--json`` path is checked before anything is measured (a directory, a parent that is a
file, a read-only or pseudo file system: one ``error:`` line, exit status 2). If writing it still
fails at the end (disk full), the results are printed to stdout as JSON, then one ``error:``
line, exit status 4: nothing measured is lost.
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

import gymnasium as gym
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from ..algo.stacking import stackable
from ..errors import EXIT_BAD_INPUT, ConfigError
from ..run.config.compose import check_group_choices, compose
from ..run.config.schema import validate
from ..run.console import write_line
from ..run.envs import bookkeeping
from ..run.envs.training import make_env, probe_spaces
from ..run.loop.build import build
from ..run.loop.train import MemberJob, train_members
from ..run.loop.trainer import Trainer
from . import reference_ppo, reference_ppo_cnn
from .cli_common import OneLineParser, OutputError, check_output_file, error_line, make_output_dir, write_output
from .floor import member_step_floor

STANDARD_CASES = ("halfcheetah", "pendulum", "cartpole")
PAPER_BATCH = 2048  # horizon x envs kept at the paper's batch when scaling num_envs
ATARI_EXPERIMENT = "experiment=ppo_paper_atari"  # Table 5 in full: the presets' settings plus the clip 0.1 x alpha


#: every timed run's settings (the overrides after ``--`` come later and win). device=cpu: the
#: references run on the CPU, so a GPU machine's ratios compare like with like unless told otherwise
RUN_SETTINGS = ("logger=none", "eval.every=0", "eval.episodes=1", "checkpoint.every=0", "progress=false", "device=cpu")


def as_long_runs() -> None:
    """The bench's short runs stand for long ones, so they take a long run's path: the compiled
    bookkeeping, which a run this short would skip on its own (bookkeeping.worth_compiling)."""
    bookkeeping.COMPILE_FROM_STEPS = 0


def measure(env: str, num_envs: int | None, steps: int, overrides: list[str]) -> dict:
    """One training run plus raw stepping, in this process."""
    as_long_runs()
    extra = [f"env={env}", *RUN_SETTINGS, f"total_timesteps={steps}"]
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
    return {"env": env, "env_id": config.env.id, "backend": config.env.backend, "device": str(parts.network.device),
            "num_envs": n, "num_steps": config.algo.num_steps,
            "minibatch_size": config.algo.minibatch_size, "num_epochs": config.algo.num_epochs,
            "global_step": global_step, "train_sps": global_step / train_time,
            "rollout_us_per_step": 1e6 * rollout_time / global_step,
            "update_us_per_step": 1e6 * update_time / global_step, "raw_env_sps": raw_env_sps(config.env, n),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def raw_env_sps(env_cfg, n: int) -> float:
    """Steps per second of ``n`` envs of the run's backend stepped with random actions."""
    if env_cfg.backend == "envpool":
        from ..run.envs.envpool_backend import EnvPoolVectorEnv
        raw = EnvPoolVectorEnv(env_cfg, n, probe_spaces(env_cfg))
        raw.reset(seed=list(range(n)))
    else:
        raw = gym.vector.SyncVectorEnv([lambda: make_env(env_cfg) for _ in range(n)])
        raw.reset(seed=0)
    raw.action_space.seed(0)
    actions = [raw.action_space.sample() for _ in range(256)]
    raw_steps = max(2000 // n, 200)
    start = time.perf_counter()
    for i in range(raw_steps):
        raw.step(actions[i % 256])
    sps = raw_steps * n / (time.perf_counter() - start)
    raw.close()
    return sps


def measure_reference(env: str, num_envs: int | None, steps: int, overrides: list[str]) -> dict:
    """The reference PPO at the sizes the framework's run of ``env`` uses, in this process."""

    extra = [f"env={env}", "logger=none"]
    if num_envs is not None:
        extra += [f"algo.num_envs={num_envs}", f"algo.num_steps={PAPER_BATCH // num_envs}"]
    cfg = compose(extra + overrides).cfg
    config = validate(cfg)
    algo = config.algo
    if config.env.preprocess == "atari":  # the CNN reference, on gymnasium + ale-py whatever the run's backend
        result = reference_ppo_cnn.train(
            config.env.id, steps, num_envs=algo.num_envs, num_steps=algo.num_steps, num_epochs=algo.num_epochs,
            minibatch_size=algo.minibatch_size, learning_rate=algo.learning_rate, anneal_lr=algo.anneal_lr,
            gamma=cfg.advantage.gamma, gae_lambda=cfg.advantage.get("lam", 0.95),
            clip_coef=cfg.loss.get("epsilon", 0.2), anneal_clip=bool(cfg.loss.get("anneal_epsilon", False)),
            vf_coef=algo.vf_coef, ent_coef=algo.ent_coef,
            max_grad_norm=float("inf") if algo.max_grad_norm is None else algo.max_grad_norm,
            torch_threads=config.torch_threads)
        return {"reference": "reference_ppo_cnn", "reference_sps": result["sps"], "reference_peak_rss_mb":
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    result = reference_ppo.train(cfg.env.id, steps, num_envs=algo.num_envs, num_steps=algo.num_steps,
                                 num_epochs=algo.num_epochs, minibatch_size=algo.minibatch_size,
                                 learning_rate=algo.learning_rate, gamma=cfg.advantage.gamma,
                                 gae_lambda=cfg.advantage.get("lam", 0.95))
    return {"reference": "reference_ppo", "reference_sps": result["sps"], "reference_peak_rss_mb":
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure_population(env: str, size: int, steps: int, overrides: list[str]) -> dict:
    """A population of ``size`` members of the preset, each training ``steps`` steps, in this process."""
    as_long_runs()
    extra = [f"env={env}", *RUN_SETTINGS, f"total_timesteps={steps}"]
    base_seed = int(compose(extra + overrides).cfg.seed)
    with tempfile.TemporaryDirectory() as scratch:
        jobs = []
        for k in range(size):
            composed = compose(extra + overrides + [f"seed={base_seed + k}"])
            jobs.append(MemberJob(composed.cfg, Path(scratch) / f"member_{k}", composed.choices))
        results = train_members(jobs)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        members = [[json.loads(line) for line in (job.run_dir / "metrics.jsonl").read_text().splitlines()]
                   for job in jobs]

    algo = jobs[0].cfg.algo
    steps_each = [rows[-1]["global_step"] for rows in members]
    total_steps = sum(steps_each)
    # time_s is the population's elapsed time (the same in every member's rows); each member's
    # evaluation time is in its own rows, and all of it is excluded, as for a single run
    train_time = members[0][-1]["time_s"] - sum(r.get("time_eval_s", 0.0) for rows in members for r in rows)
    rollout_time = sum(r["time_rollout_s"] for r in members[0])  # population-wide, per iteration
    update_time = sum(r["time_update_s"] for r in members[0])
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the floor's probes
    return {"env": env, "env_id": jobs[0].cfg.env.id, "backend": jobs[0].cfg.env.backend, "population": size,
            "num_envs": algo.num_envs,
            "num_steps": algo.num_steps, "member_global_step": steps_each, "global_step": total_steps,
            "aggregate_sps": total_steps / train_time,
            "rollout_us_per_step": 1e6 * rollout_time / total_steps,
            "update_us_per_step": 1e6 * update_time / total_steps,
            "peak_rss_mb": peak_rss_mb, **_member_floor(jobs[0])}


def _member_floor(job) -> dict:
    """tools/floor.py's bound for one member of ``job``'s config, measured in this process."""

    parts = build(job.cfg, job.choices)
    env_cfg = parts.config.env
    obs_shape = probe_spaces(env_cfg)[0].shape
    return member_step_floor(lambda: make_env(env_cfg), parts.network, obs_shape, parts.config.algo.num_epochs)


def run_worker(env: str, num_envs: int | None, steps: int, overrides: list[str], reference: bool = False,
               population: int = 0) -> dict:
    """One measurement in a fresh process (so its peak RSS is its own)."""
    cmd = [sys.executable, "-m", "ppo_research.bench", "--worker", env, "--steps", str(steps),
           "--num-envs", str(num_envs or 0), *(["--reference-worker"] if reference else []),
           *(["--population-worker", str(population)] if population else []), "--", *overrides]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        what = "the reference" if reference else f"a population of {population}" if population else "the framework"
        last = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        _fail(f"benchmark of {env} ({what}) failed: {last}", status=1)
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_cases(cases: list[str], overrides: list[str]) -> None:
    """Unknown presets and bad overrides fail here, in one line, before any worker starts."""

    check_group_choices([f"env={env}" for env in cases] + overrides)  # exits 2 naming the options
    for env in cases:
        try:
            validate(compose([f"env={env}", "logger=none", *overrides]).cfg)
        except ConfigError as err:
            _fail(str(err))
        except (HydraException, OmegaConfBaseException) as err:
            _fail(f"--case {env} with overrides {' '.join(overrides) or '(none)'}: {str(err).splitlines()[0]}")


def case_overrides(env: str, overrides: list[str]) -> list[str]:
    """An Atari case runs at Table 5 in full (``experiment=ppo_paper_atari``) unless an experiment is named."""
    if any(o.lstrip("+~").startswith("experiment=") for o in overrides):
        return overrides
    if compose([f"env={env}", "logger=none", *overrides]).cfg.env.preprocess != "atari":
        return overrides
    return [ATARI_EXPERIMENT, *overrides]


def check_populations(cases: list[str], sizes: list[int], overrides: dict[str, list[str]]) -> None:
    """A population of more than one of a network with no stacked form is refused here, in one line."""
    size = max(sizes, default=1)
    if size < 2:
        return
    for env in cases:
        target = str(compose([f"env={env}", "logger=none", *overrides[env]]).cfg.network._target_)
        if not stackable(target):
            _fail(f"--population {size}: the {env} case's network ({target.rpartition('.')[2]}) has no stacked "
                  f"form, so its populations train as populations of one, one process each (docs/populations.md): "
                  f"a population of {size} cannot be timed as one; use --population 1 or leave --population out")


def _fail(message: str, status: int = EXIT_BAD_INPUT):
    """One ``error:`` line on stderr and the exit status (2: bad input)."""
    error_line(message)
    raise SystemExit(status)


def median_row(samples: list[dict]) -> dict:
    row = dict(samples[0])
    for key in ("train_sps", "rollout_us_per_step", "update_us_per_step", "raw_env_sps", "peak_rss_mb"):
        row[key] = statistics.median(s[key] for s in samples)
        row[key + "_all"] = [round(s[key], 1) for s in samples]
    row["ratio"] = row["train_sps"] / row["raw_env_sps"]
    row["repeats"] = len(samples)
    if all("reference_sps" in s for s in samples):
        row["reference"] = samples[0].get("reference", "reference_ppo")
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
    lines = [f"| {_case(r)} | {r['num_envs']} | {r['train_sps']:,.0f} | {ref(r, 'reference_sps', ',.0f')} | "
             f"{ref(r, 'vs_reference', '.2f')} | {r['rollout_us_per_step']:.0f} | "
             f"{r['update_us_per_step']:.0f} | {r['raw_env_sps']:,.0f} | {r['ratio']:.2f} | {r['peak_rss_mb']:.0f} |"
             for r in rows]
    notes = sorted({f"{r['env']}: the reference is tools/{r['reference']}.py"
                    + (" on gymnasium + ale-py" if r["reference"] == "reference_ppo_cnn" else "")
                    for r in rows if r.get("reference", "reference_ppo") != "reference_ppo"})
    return "\n".join([head, *lines, *([""] + notes if notes else [])])


def _case(row: dict) -> str:
    """The case's name, with its env backend when it is not gymnasium."""
    backend = row.get("backend", "gymnasium")
    return row["env"] if backend == "gymnasium" else f"{row['env']} ({backend})"


def population_row(samples: list[dict], solo: list[float], reference: list[float] | None, solo_from: str,
                   raw_env: list[float]) -> dict:
    """Medians over the repeats of a population's samples; ``solo[i]``/``reference[i]``: the
    single-run SPS timed in the same repeat as ``samples[i]``; ``raw_env[i]``: the raw env SPS
    of the case's single run (its backend) in that repeat."""
    row = {key: samples[0][key] for key in ("env", "env_id", "population", "num_envs", "num_steps",
                                             "member_global_step", "global_step")}
    row["backend"] = samples[0].get("backend", "gymnasium")
    size = row["population"]
    for key in ("aggregate_sps", "rollout_us_per_step", "update_us_per_step", "peak_rss_mb"):
        row[key] = statistics.median(s[key] for s in samples)
        row[key + "_all"] = [round(s[key], 1) for s in samples]
    row["member_sps"] = row["aggregate_sps"] / size
    row["peak_rss_mb_per_member"] = row["peak_rss_mb"] / size
    row["solo_from"] = solo_from
    row["solo_sps"] = statistics.median(solo)
    ratios = [s["aggregate_sps"] / v for s, v in zip(samples, solo)]
    row["vs_solo"], row["vs_solo_all"] = statistics.median(ratios), [round(r, 2) for r in ratios]
    ratios = [s["aggregate_sps"] / v for s, v in zip(samples, raw_env)]
    row["vs_raw_env"], row["vs_raw_env_all"] = statistics.median(ratios), [round(r, 2) for r in ratios]
    # the most any population could gain over this solo run: its step over a member's floor
    for key in ("floor_env_us", "floor_arithmetic_us", "floor_us_per_member_step", "floor_peak_gflops"):
        row[key] = statistics.median(s[key] for s in samples)
    row["floor_flops_per_step"] = samples[0]["floor_flops_per_step"]
    bounds = [1e6 / v / s["floor_us_per_member_step"] for s, v in zip(samples, solo)]
    row["vs_solo_bound"], row["vs_solo_bound_all"] = statistics.median(bounds), [round(b, 2) for b in bounds]
    if reference is not None:
        row["reference_sps"] = statistics.median(reference)
        ratios = [s["aggregate_sps"] / v for s, v in zip(samples, reference)]
        row["vs_reference"], row["vs_reference_all"] = statistics.median(ratios), [round(r, 2) for r in ratios]
    row["repeats"] = len(samples)
    return row


def population_table(rows: list[dict]) -> str:
    head = ("| case | members | aggregate SPS | SPS per member | x ref | x solo | x raw env | rollout us/step "
            "| update us/step | floor us/step | x solo at most | peak RSS MB | RSS MB per member |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [f"| {_case(r)} | {r['population']} | {r['aggregate_sps']:,.0f} | {r['member_sps']:,.0f} | "
             f"{format(r['vs_reference'], '.2f') if 'vs_reference' in r else '-'} | {r['vs_solo']:.2f} | "
             f"{r['vs_raw_env']:.2f} | "
             f"{r['rollout_us_per_step']:.0f} | {r['update_us_per_step']:.0f} | "
             f"{r['floor_us_per_member_step']:.1f} | {r['vs_solo_bound']:.2f} | {r['peak_rss_mb']:.0f} | "
             f"{r['peak_rss_mb_per_member']:.0f} |" for r in rows]
    return "\n".join([head, *lines])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    overrides: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1:]
    parser = OneLineParser(prog="python -m ppo_research.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", nargs="+", default=list(STANDARD_CASES), help="env presets to time at their own settings")
    parser.add_argument("--scaling", nargs="*", type=int, default=[],
                        help="num_envs values for a halfcheetah scaling run (batch kept at 2048)")
    parser.add_argument("--population", nargs="+", type=int, default=[], metavar="S",
                        help="also time populations of S members of each case (--steps steps per member)")
    parser.add_argument("--population-backend", choices=("gymnasium", "envpool"), default=None,
                        help="the populations' env.backend (default: the case's); the single run, the "
                             "reference and the raw env rate keep theirs, so x solo and x raw env compare backends")
    parser.add_argument("--steps", type=int, default=20480, help="env steps per measured run (per member)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; the table gives medians")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results (default outputs/bench/<time>.json)")
    parser.add_argument("--no-reference", action="store_true", help="skip timing the reference PPO beside each run")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reference-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--population-worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--num-envs", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        if args.population_worker:
            print(json.dumps(measure_population(args.worker, args.population_worker, args.steps, overrides)))
            return 0
        run = measure_reference if args.reference_worker else measure
        print(json.dumps(run(args.worker, args.num_envs or None, args.steps, overrides)))
        return 0
    if args.steps < 1 or args.repeats < 1:
        _fail(f"--steps and --repeats must be positive (got --steps {args.steps}, --repeats {args.repeats})")
    for flag, values in (("--population", args.population), ("--scaling", args.scaling)):
        bad = [v for v in values if v < 1]
        if bad:
            _fail(f"{flag} {bad[0]} is invalid: expected a positive integer")
    sizes = list(dict.fromkeys(args.population))  # each size once, in the order given
    cases = list(dict.fromkeys(args.case + (["halfcheetah"] if args.scaling else [])))
    check_cases(cases, overrides)
    per_case = {env: case_overrides(env, overrides) for env in cases}
    backend = [f"env.backend={args.population_backend}"] if args.population_backend else []
    per_population = {env: per_case[env] + backend for env in cases}
    if backend and sizes:
        check_cases(list(dict.fromkeys(args.case)), overrides + backend)
    check_populations(list(dict.fromkeys(args.case)), sizes, per_population)
    out = args.json or Path("outputs") / "bench" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}.json"
    try:  # before anything is measured: a result that cannot be saved is refused now, not after the runs
        check_output_file(out, make_parents=True)
    except OutputError as err:
        _fail(str(err))

    plan = [(env, None) for env in args.case] + [("halfcheetah", n) for n in args.scaling]
    load_before = _load_average()  # other work on the machine skews every figure; the record says how much
    rows, population_rows = [], []
    for env, num_envs in plan:
        samples = []
        pop_samples = {size: [] for size in sizes} if num_envs is None else {}  # not for scaling entries
        for rep in range(args.repeats):
            samples.append(run_worker(env, num_envs, args.steps, per_case[env]))
            line = f"{env} num_envs={samples[-1]['num_envs']} run {rep + 1}/{args.repeats}: {samples[-1]['train_sps']:,.0f} SPS"
            if not args.no_reference:  # timed right after, so both see the same machine
                samples[-1].update(run_worker(env, num_envs, args.steps, per_case[env], reference=True))
                line += (f"; reference {samples[-1]['reference_sps']:,.0f} SPS "
                         f"(x{samples[-1]['train_sps'] / samples[-1]['reference_sps']:.2f})")
            for size in pop_samples:  # the same repeat, so every ratio is side by side
                pop_samples[size].append(run_worker(env, None, args.steps, per_population[env], population=size))
                line += f"; population {size}: {pop_samples[size][-1]['aggregate_sps']:,.0f} SPS"
            write_line(line)
        rows.append(median_row(samples))
        if pop_samples:
            solo_from = "population 1" if 1 in pop_samples else "single run"
            solo = ([s["aggregate_sps"] for s in pop_samples[1]] if 1 in pop_samples
                    else [s["train_sps"] for s in samples])
            reference = None if args.no_reference else [s["reference_sps"] for s in samples]
            raw_env = [s["raw_env_sps"] for s in samples]
            population_rows += [population_row(pop_samples[size], solo, reference, solo_from, raw_env)
                                for size in sizes]
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "processor": _cpu_model(), "date": datetime.now().isoformat(timespec="seconds"),
               "load_average_before": load_before, "load_average_after": _load_average()}
    print(f"machine: {machine['processor']}, {machine['cpu_count']} cores; medians of {args.repeats} runs "
          f"of {args.steps} steps{' (per member)' if population_rows else ''}; load average "
          f"{_fmt_load(load_before)} before, {_fmt_load(machine['load_average_after'])} after")
    print(table(rows))
    if population_rows:
        print()
        print(population_table(population_rows))
    result = {"machine": machine, "steps": args.steps, "overrides": overrides, "rows": rows}
    if args.population_backend:
        result["population_backend"] = args.population_backend
    if any(per_case[env] != overrides for env in args.case):
        result["case_overrides"] = {env: per_case[env] for env in args.case}
    if population_rows:
        result["population_rows"] = population_rows
    text = json.dumps(result, indent=2)
    try:
        make_output_dir(out.parent)
        write_output(out, text)
    except OutputError as err:  # the runs are done: their results go to stdout rather than nowhere
        print(text, flush=True)
        error_line(f"{err}; the results are printed on stdout as JSON instead")
        return err.status
    print(f"written {out}")
    return 0


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _fmt_load(load: list[float] | None) -> str:
    return "/".join(f"{x:.2f}" for x in load) if load else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

