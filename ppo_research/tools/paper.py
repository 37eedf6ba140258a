"""The PPO paper's Table 1 (Schulman et al. 2017, sec. 6.1) with this framework.

    python -m ppo_research.paper plan experiment=ppo_paper_table1      # the multirun's jobs, nothing runs
    python -m ppo_research.paper baselines --episodes 100 --out FILE   # random-policy scores per env
    python -m ppo_research.paper table outputs/multirun/<date>/<time>  # normalised scores vs the paper

The runs come from ``python -m ppo_research -m experiment=ppo_paper_table1[_small]``. The score
of a run is ``train_return_last100`` (mean return of its last 100 training episodes); per env it
is shifted and scaled so that a random policy is 0 and the best setting's mean is 1, and each
setting's score is the mean over all its runs (7 envs x 3 seeds in the paper). Protocol and
commands: docs/paper_table1.md.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
from omegaconf import OmegaConf

from ..errors import ConfigError
from ..run.app import hydra_error_line
from ..run.config import compose as composing
from ..run.config.compose import CONF_DIR, compose
from ..run.config.schema import resolve_target, validate
from ..run.envs.training import ActionAdapter, make_env
from .cli_common import OneLineParser, OutputError, error_line
from .report import Normalization, Variant, normalized_table, summarize, write_csv, write_report
from .results import ResultsError, Run, find_runs, finished
from .stats import bootstrap_ci

SCORE_KEY = "train_return_last100"  # the paper's per-run score
EXPERIMENT = "ppo_paper_table1"
PAPER_ENVS = ("halfcheetah", "hopper", "inverted_double_pendulum", "inverted_pendulum", "reacher", "swimmer",
              "walker2d")  # env presets (conf/env/)
BASELINES_FILE = CONF_DIR / "experiment" / "ppo_paper_table1_random.json"

#: Table 1 of the paper, in its row order: setting label -> published normalised score.
PUBLISHED = {
    "No clipping or penalty": -0.39,
    "Clipping, ε = 0.1": 0.76,
    "Clipping, ε = 0.2": 0.82,
    "Clipping, ε = 0.3": 0.70,
    "Adaptive KL, d_targ = 0.003": 0.68,
    "Adaptive KL, d_targ = 0.01": 0.74,
    "Adaptive KL, d_targ = 0.03": 0.71,
    "Fixed KL, β = 0.3": 0.62,
    "Fixed KL, β = 1": 0.71,
    "Fixed KL, β = 3": 0.72,
    "Fixed KL, β = 10": 0.69,
}


class PaperError(ResultsError):
    """Bad input; ``str()`` is the one line the CLI prints."""


# -- settings: a run's loss config -> the paper's row name ---------------------------------------

#: KLPenaltyLoss arguments that only the adaptive beta rule reads.
_ADAPTIVE_ONLY = {"kl_target", "adapt_every", "low_threshold", "high_threshold", "factor", "beta_min", "beta_max"}


def setting_of(loss: Mapping) -> str:
    """The Table 1 row a loss config is, from its values (not from how it was selected), so runs
    started as ``loss=clip loss.epsilon=0.1`` land in the same row as ``paper_setting=clip_0.1``.
    Arguments off their constructor default that the row name does not cover are appended, so a
    variant the paper did not run never passes for one it did."""

    target = str(loss.get("_target_", "?"))
    params = {k: v for k, v in loss.items() if k != "_target_"}
    kind = target.rsplit(".", 1)[-1]
    if kind == "CPILoss":
        name, covered = "No clipping or penalty", set()
    elif kind == "ClipLoss":
        name, covered = f"Clipping, ε = {params.get('epsilon', 0.2):g}", {"epsilon"}
    elif kind == "KLPenaltyLoss" and params.get("adaptive", True):
        name, covered = f"Adaptive KL, d_targ = {params.get('kl_target', 0.01):g}", {"kl_target", "adaptive"}
    elif kind == "KLPenaltyLoss":
        name, covered = f"Fixed KL, β = {params.get('beta', 1.0):g}", {"beta", "adaptive"} | _ADAPTIVE_ONLY
    else:
        name, covered = kind, set()
    try:
        defaults = {n: p.default for n, p in inspect.signature(resolve_target(target, "loss")).parameters.items()}
    except ValueError:  # an unimportable target: name every argument
        defaults = {}
    extra = [f"{k}={v}" for k, v in sorted(params.items()) if k not in covered and defaults.get(k, object()) != v]
    return f"{name} ({', '.join(extra)})" if extra else name


def _row_order(label: str) -> tuple:
    order = list(PUBLISHED)
    return (order.index(label), "") if label in order else (len(order), label)


# -- plan: the jobs `python -m ppo_research -m <overrides>` would launch ------------------------

@dataclass(frozen=True)
class Job:
    number: int
    overrides: tuple[str, ...]  # the job's overrides, exactly as the sweeper hands them to the launcher
    env_id: str = ""
    setting: str = ""
    seed: Optional[int] = None
    total_timesteps: Optional[int] = None


def plan(overrides: Sequence[str], compose: bool = True) -> list[Job]:
    """The jobs ``python -m ppo_research -m <overrides>`` would launch, in its order
    (``run.compose.expand_multirun``), without launching anything. With ``compose``, every job's
    config is composed and validated, as the sweeper composes each before launch."""


    try:
        batch = composing.expand_multirun(overrides)
    except ValueError as err:  # another sweeper than the basic one
        raise PaperError(f"plan: {err}") from None
    jobs = []
    for number, job in enumerate(batch):
        if not compose:
            jobs.append(Job(number, tuple(job)))
            continue
        cfg = composing.compose(job).cfg
        config = validate(cfg)
        loss = OmegaConf.to_container(cfg.loss, resolve=True)
        jobs.append(Job(number, tuple(job), config.env.id, setting_of(loss), config.seed, config.total_timesteps))
    return jobs


def describe_plan(jobs: list[Job]) -> str:
    if not jobs or not jobs[0].env_id:
        lines = [f"{j.number}\t{' '.join(j.overrides)}" for j in jobs]
        return "\n".join(lines + [f"{len(jobs)} jobs"]) + "\n"
    lines = ["job\tenv\tseed\tsteps\tsetting\toverrides"]
    lines += [f"{j.number}\t{j.env_id}\t{j.seed}\t{j.total_timesteps}\t{j.setting}\t{' '.join(j.overrides)}"
              for j in jobs]
    settings, envs = {j.setting for j in jobs}, {j.env_id for j in jobs}
    seeds = {j.seed for j in jobs}
    product = len({(j.setting, j.env_id, j.seed) for j in jobs}) == len(settings) * len(envs) * len(seeds) \
        == len(jobs)
    steps = sum(j.total_timesteps for j in jobs)
    shape = f" = {len(settings)} settings x {len(envs)} envs x {len(seeds)} seeds" if product else ""
    lines.append(f"{len(jobs)} jobs{shape}, {steps:,} env steps in total")
    return "\n".join(lines) + "\n"


# -- random-policy baselines ---------------------------------------------------------------------

def random_returns(env: str, episodes: int, seed: int = 0) -> tuple[str, np.ndarray]:
    """Undiscounted returns of a uniform random policy on the env preset ``env`` (a conf/env name),
    built as training builds it (make_env + ActionAdapter with the preset's settings). Returns the
    gymnasium id and the returns."""

    env_cfg = validate(compose([f"env={env}"]).cfg).env
    gym_env = make_env(env_cfg)
    space = gym_env.action_space
    adapter = ActionAdapter(space, env_cfg.action_mode)
    rng = np.random.default_rng(seed)
    space.seed(seed)
    returns = np.zeros(episodes)
    try:
        for j in range(episodes):
            gym_env.reset(seed=seed + j)
            done = False
            while not done:
                # Uniform over the env's actions: in "rescale" mode the policy acts in [-1, 1].
                raw = rng.uniform(-1.0, 1.0, space.shape) if adapter.mode == "rescale" else space.sample()
                _, reward, terminated, truncated, _ = gym_env.step(adapter(np.asarray(raw, space.dtype)))
                returns[j] += float(reward)
                done = terminated or truncated
    finally:
        gym_env.close()
    return env_cfg.id, returns


def measure_baselines(envs: Sequence[str], episodes: int, seed: int = 0) -> dict:
    """The baselines file: report.Normalization's format (``random``, ``reference: best``,
    ``name``) plus how it was measured, so ``report --normalize FILE`` reads it too."""
    random, spread = {}, {}
    for env in envs:
        env_id, returns = random_returns(env, episodes, seed)
        random[env_id], spread[env_id] = float(returns.mean()), float(returns.std(ddof=1)) if episodes > 1 else 0.0
    return {"name": "best setting", "reference": "best", "random": random, "random_std": spread,
            "episodes": episodes, "seed": seed, "envs": list(envs),
            "measured_with": f"python -m ppo_research.paper baselines --envs {','.join(envs)} "
                             f"--episodes {episodes} --seed {seed}"}


# -- the table -----------------------------------------------------------------------------------

#: Keys that may differ between the runs of one table besides the setting (loss.*) and the seed.
_MAY_DIFFER = ("seed", "progress", "resume", "torch_threads", "logger.", "checkpoint.", "eval.", "choices.")


def check_protocol(runs: list[Run]) -> None:
    """Runs of one env must share everything but the setting and the seed: a table over runs of
    different budgets or estimators would compare protocols, not objectives."""
    by_env: dict[str, list[Run]] = {}
    for run in runs:
        by_env.setdefault(run.env, []).append(run)
    for env, env_runs in sorted(by_env.items()):
        keys = set().union(*(r.config for r in env_runs))
        for key in sorted(keys):
            if key.startswith(("loss.", *_MAY_DIFFER)):
                continue
            values = {repr(r.config.get(key)) for r in env_runs}
            if len(values) > 1:
                raise PaperError(f"runs of {env} differ in {key} ({', '.join(sorted(values))}); "
                                 f"a table compares settings under one protocol: give one multirun")


def score_table(runs: list[Run], random: Mapping[str, float], n_boot: int = 2000) -> tuple[list[str], list[dict],
                                                                                            list[dict]]:
    """Per setting: the paper's score (mean over its runs of the normalised score), its bootstrap
    CI over runs, the published score and the per-env means. Returns (envs, setting rows, env rows)
    where env rows are report.summarize's rows (raw final returns per env and setting)."""
    missing = sorted({r.env for r in runs} - set(random))
    if missing:
        raise PaperError(f"no random baseline for {', '.join(missing)}: measure it with "
                         f"python -m ppo_research.paper baselines --envs <preset> --out FILE")
    for run in runs:
        if run.summary.get(SCORE_KEY) is None:
            raise PaperError(f"{run.path}/summary.json has no {SCORE_KEY} (no training episode finished)")
    check_protocol(runs)
    variants: dict[tuple[str, str], Variant] = {}
    for run in runs:
        label = setting_of(run.values("loss"))
        variants.setdefault((run.env, label), Variant(run.env, label)).runs.append(run)
    normalization = Normalization(random=dict(random), reference="best", name="best setting")
    rows = summarize([variants[k] for k in sorted(variants)], SCORE_KEY, normalization, n_boot)
    references = normalization.references(rows)
    envs, per_env = normalized_table(rows)
    per_env = {row["variant"]: row for row in per_env}
    scores: dict[str, list[float]] = {}
    for row in rows:  # every run's own normalised score: the paper averages over runs
        scores.setdefault(row["variant"], []).extend(
            normalization(row["env"], x, references[row["env"]]) for x in row["_finals"])
        row["reference"], row["random"] = references[row["env"]], random[row["env"]]
    table = []
    for label in sorted(scores, key=_row_order):
        x = np.array(scores[label])
        low, high = bootstrap_ci(x, n_boot=n_boot) if np.isfinite(x).all() else (math.nan, math.nan)
        table.append({"setting": label, "score": float(x.mean()), "ci_low": low, "ci_high": high, "runs": len(x),
                      "published": PUBLISHED.get(label, math.nan),
                      **{env: per_env[label].get(env, math.nan) for env in envs}})
    _add_ranks(table, "score", "rank")
    _add_ranks(table, "published", "published_rank")
    return envs, table, rows


def _add_ranks(table: list[dict], key: str, rank_key: str) -> None:
    """1 = best, among the rows that have a value (published ranks among the settings present)."""
    ranked = sorted((r for r in table if math.isfinite(r[key])), key=lambda r: -r[key])
    for i, row in enumerate(ranked, 1):
        row[rank_key] = i
    for row in table:
        row.setdefault(rank_key, "")


def _f(value, digits: int = 2) -> str:
    return "–" if isinstance(value, float) and not math.isfinite(value) else (
        f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def markdown(envs: list[str], table: list[dict], rows: list[dict], baselines_name: str) -> str:
    seeds = sorted({s for r in rows for s in r["seeds"].split()}, key=str)
    steps = sorted({int(r["steps"]) for r in rows})
    head = ["setting", "score (ours)", "95% CI", "runs", "published", "rank ours / paper", *envs]
    lines = [f"Normalised score per setting (Schulman et al. 2017, Table 1): each run's {SCORE_KEY}, shifted and "
             f"scaled per env so that a random policy = 0 ({baselines_name}) and the best setting's mean = 1, "
             f"averaged over the setting's runs. Envs: {', '.join(envs)}; seeds: {' '.join(seeds)}; "
             f"steps per run: {', '.join(f'{s:,}' for s in steps)}. Ranks: among the settings of this table.", "",
             "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in table:
        cells = [r["setting"], _f(r["score"]), f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]", str(r["runs"]),
                 _f(r["published"]), f"{r['rank']} / {r['published_rank'] or '–'}", *(_f(r[e]) for e in envs)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Mean {SCORE_KEY} per env (± std over seeds); random policy and the best setting's mean "
                  "(= 1 after normalising):", "",
              "| setting | " + " | ".join(envs) + " |", "|---|" + "---:|" * len(envs)]
    cell = {(r["env"], r["variant"]): f"{r['final_mean']:.1f} ± {_f(r['final_std'], 1)}" for r in rows}
    first = {r["env"]: r for r in rows}
    lines.append("| random policy | " + " | ".join(f"{first[e]['random']:.1f}" for e in envs) + " |")
    lines.append("| best setting | " + " | ".join(f"{first[e]['reference']:.1f}" for e in envs) + " |")
    for r in table:
        lines.append(f"| {r['setting']} | " + " | ".join(cell.get((e, r["setting"]), "–") for e in envs) + " |")
    unbeaten = [e for e in envs if first[e]["reference"] <= first[e]["random"]]
    if unbeaten:
        lines += ["", f"Note: on {', '.join(unbeaten)} no setting beats the random policy, so its normalised "
                      "scores mean nothing (the scale is inverted or undefined)."]
    gaps = [f"{r['setting']} on {e}" for r in table for e in envs if (e, r["setting"]) not in cell]
    uneven = sorted({r["n_seeds"] for r in rows})
    if gaps or len(uneven) > 1:
        lines += ["", f"Note: the grid is incomplete ({'; '.join(gaps) or 'unequal seeds per env'}): a setting's "
                      "score averages over the runs it has, so scores are not strictly comparable."]
    return "\n".join(lines) + "\n"


def write_table(dirs: Sequence[str], baselines: Path, out: Optional[Path] = None, n_boot: int = 2000,
                curves: bool = True) -> tuple[str, dict[str, Path]]:
    """Score the runs under ``dirs``; writes table1.md/.csv (and the local report's curves and per-env
    tables with the same normalisation) to ``out`` (default ``<first dir>/paper_table1``)."""
    normalization = Normalization.from_file(baselines)
    runs = finished(find_runs(dirs), dirs)
    envs, table, rows = score_table(runs, normalization.random, n_boot)
    text = markdown(envs, table, rows, f"random policy from {Path(baselines).name}")
    out = Path(out) if out is not None else Path(dirs[0]) / "paper_table1"
    out.mkdir(parents=True, exist_ok=True)
    (out / "table1.md").write_text(text)
    columns = ["setting", "score", "ci_low", "ci_high", "runs", "published", "rank", "published_rank", *envs]
    files = {"table_md": out / "table1.md", "table_csv": write_csv(out / "table1.csv", table, columns)}
    if curves:  # learning curves and per-env tables from the shared report, same normalisation
        files.update(write_report(dirs, out / "report", SCORE_KEY, normalization=normalization, n_boot=n_boot))
    return text, files


# -- command line --------------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m ppo_research.paper", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="list the jobs of a multirun without running them")
    p.add_argument("overrides", nargs="*", help=f"Hydra overrides as for -m (default: experiment={EXPERIMENT})")
    p.add_argument("--no-compose", action="store_true", help="only expand the grid (fast); skip composing each job")
    b = sub.add_parser("baselines", help="measure random-policy returns per env; writes JSON")
    b.add_argument("--envs", default=",".join(PAPER_ENVS), help="comma-separated env presets (default: the 7 "
                                                                "of the paper)")
    b.add_argument("--episodes", type=int, default=100)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", help="JSON file to write (default: print only)")
    t = sub.add_parser("table", help="the normalised score table of finished runs next to the paper's")
    t.add_argument("dirs", nargs="+", help="multirun (or run) directories")
    t.add_argument("--baselines", default=str(BASELINES_FILE),
                   help="random-policy scores, JSON/YAML {random: {env_id: score}} (default: %(default)s)")
    t.add_argument("--out", help="output directory (default: <first dir>/paper_table1)")
    t.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the CIs")
    t.add_argument("--no-curves", action="store_true", help="skip the local report's curves and per-env tables")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "plan":
            overrides = args.overrides
            if not any(o.lstrip("+~").startswith("experiment=") for o in overrides):
                overrides = [f"experiment={EXPERIMENT}", *overrides]
            print(describe_plan(plan(overrides, compose=not args.no_compose)), end="")
        elif args.command == "baselines":
            if args.episodes < 1:
                raise PaperError("--episodes must be at least 1")
            result = measure_baselines([e for e in args.envs.split(",") if e], args.episodes, args.seed)
            text = json.dumps(result, indent=2) + "\n"
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(text)
            print(text, end="")
        else:
            text, files = write_table(args.dirs, Path(args.baselines), args.out, args.bootstrap, not args.no_curves)
            print(text)
            for path in files.values():
                print(path)
    except ResultsError as err:
        error_line(str(err))
        return 2
    except OutputError as err:  # the report's output directory (write_report)
        error_line(str(err))
        return err.status
    except Exception as err:  # Hydra / config errors about the overrides: one line

        overrides = list(getattr(args, "overrides", []))
        line = str(err) if isinstance(err, ConfigError) else hydra_error_line(err, overrides)
        if line is None:
            raise
        error_line(line)
        return 2
    return 0

