"""The PPO paper's Table 1 (Schulman et al. 2017, sec. 6.1) with this framework.

    python -m ppo_research.paper plan experiment=ppo_paper_table1      # the multirun's jobs, nothing runs
    python -m ppo_research.paper baselines --episodes 100 --out FILE   # random-policy scores per env
    python -m ppo_research.paper table outputs/multirun/<date>/<time>  # normalised scores vs the paper
    python -m ppo_research.paper compact outputs/multirun/<date>/<time> benchmarks/table1   # a small copy
    python -m ppo_research.paper table benchmarks/table1               # the same table, from the copy

The runs come from ``python -m ppo_research -m experiment=ppo_paper_table1[_small]``. The score
of a run is ``train_return_last100`` (mean return of its last 100 training episodes); per env it
is shifted and scaled so that a random policy is 0 and "the best" is 1, and each setting's score
is the mean over all its runs (7 envs x 3 seeds in the paper), with a 95% interval from the
bootstrap stratified by env. "The best" has two readings, both in the table (``READINGS``):
the best setting's mean, or the best single run. They weight the envs differently (each env's
scores are divided by best - random) and can order the settings differently. Protocol and
commands: docs/paper_table1.md.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
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
from ..run.console import write_line
from ..run.envs.training import ActionAdapter, make_env
from .cli_common import OneLineParser, OutputError, check_output_dir, error_line, make_output_dir, write_output
from .report import Normalization, Variant, normalized_table, summarize, write_csv, write_report
from .results import (
    METRICS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    ResultsError,
    Run,
    find_run_dirs,
    find_runs,
    finished,
    read_description,
    read_metrics,
    read_summary,
)
from .stats import MIN_SEEDS_FOR_CI, coverage_text, stratified_mean, stratified_mean_ci

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


#: The two readings of the paper's "the best result was set to 1": per env, the best setting's
#: mean over its runs, or the best single run. (key, column suffix, words)
READINGS = (("mean", "", "best setting's mean"), ("run", "_best_run", "best single run"))


def best_scores(rows: list[dict], reading: str) -> dict[str, float]:
    """Per env the score that normalises to 1: the highest setting mean (``mean``) or the highest
    single run (``run``; a seed run twice counts as the mean of its runs) among ``rows``
    (report.summarize's rows)."""
    best: dict[str, float] = {}
    for row in rows:
        value = row["final_mean"] if reading == "mean" else float(np.max(row["_finals"]))
        best[row["env"]] = max(best.get(row["env"], -math.inf), value)
    return best


def setting_scores(rows: list[dict], random: Mapping[str, float], best: Mapping[str, float]
                   ) -> dict[str, list[np.ndarray]]:
    """Per setting, per env it ran on (in env order): its runs' normalised scores
    ``(score - random) / (best - random)``."""
    tasks: dict[str, list[np.ndarray]] = {}
    for row in sorted(rows, key=lambda r: r["env"]):
        scale = best[row["env"]] - random[row["env"]]
        tasks.setdefault(row["variant"], []).append((np.asarray(row["_finals"], float) - random[row["env"]]) / scale)
    return tasks


def score_with_interval(tasks: list[np.ndarray], n_boot: int) -> tuple[float, float, float]:
    """A setting's score, the mean of its runs' normalised scores over all envs
    (``stats.stratified_mean``), and its 95% stratified bootstrap interval: each env's runs
    resampled on their own, the normalisers held fixed; none (nan) unless every env has at least
    ``MIN_SEEDS_FOR_CI`` runs and every score is finite."""
    score = float(stratified_mean(tasks))
    if min(len(t) for t in tasks) < MIN_SEEDS_FOR_CI or not all(np.isfinite(t).all() for t in tasks):
        return score, math.nan, math.nan
    low, high = stratified_mean_ci(tasks, n_boot=n_boot)
    return score, float(low), float(high)


def score_table(runs: list[Run], random: Mapping[str, float], n_boot: int = 2000) -> tuple[list[str], list[dict],
                                                                                            list[dict]]:
    """Per setting, under both readings of "best" (``READINGS``: columns ``score``, ``ci_low``,
    ``ci_high``, ``rank`` for the best setting's mean, the same with ``_best_run`` for the best
    single run): the paper's score (the mean over its runs of the normalised score) and its 95%
    stratified bootstrap interval (``score_with_interval``); the published score and rank, and the
    per-env means (best setting's mean = 1). Returns (envs, setting rows, env rows) where env rows
    are report.summarize's rows (raw final returns per env and setting) with ``random``,
    ``reference`` (the best setting's mean) and ``best_run``."""
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
    bests = {reading: best_scores(rows, reading) for reading, _, _ in READINGS}
    envs, per_env = normalized_table(rows)
    per_env = {row["variant"]: row for row in per_env}
    for row in rows:
        row["reference"], row["best_run"], row["random"] = (bests["mean"][row["env"]], bests["run"][row["env"]],
                                                            random[row["env"]])
    table = {label: {"setting": label} for label in sorted({r["variant"] for r in rows}, key=_row_order)}
    for reading, suffix, _ in READINGS:
        for label, tasks in setting_scores(rows, random, bests[reading]).items():
            score, low, high = score_with_interval(tasks, n_boot)
            table[label].update({f"score{suffix}": score, f"ci_low{suffix}": low, f"ci_high{suffix}": high,
                                 "runs": sum(len(t) for t in tasks), "min_runs_per_env": min(len(t) for t in tasks)})
    rows_out = []
    for label, row in table.items():
        rows_out.append({**row, "published": PUBLISHED.get(label, math.nan),
                         **{env: per_env[label].get(env, math.nan) for env in envs}})
    for _, suffix, _ in READINGS:
        _add_ranks(rows_out, f"score{suffix}", f"rank{suffix}")
    _add_ranks(rows_out, "published", "published_rank")
    return envs, rows_out, rows


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


def _interval_cell(row: dict, suffix: str) -> str:
    low, high = row[f"ci_low{suffix}"], row[f"ci_high{suffix}"]
    return f"[{_f(low)}, {_f(high)}]" if math.isfinite(low) else "–"


def paper_orderings(table: list[dict]) -> list[dict]:
    """Every pair of settings present that the paper ranks apart (``above`` published higher than
    ``below``; ties left out), with, per reading of "best", whether ours has them in the same
    order (``holds{suffix}``) and whether their 95% intervals are apart (``apart{suffix}``; None
    where one has no interval)."""
    present = [r for r in table if math.isfinite(r["published"])]
    pairs = []
    for a in present:
        for b in present:
            if a["published"] <= b["published"]:
                continue
            pair = {"above": a, "below": b}
            for _, suffix, _ in READINGS:
                pair[f"holds{suffix}"] = a[f"score{suffix}"] > b[f"score{suffix}"]
                ends = [r[f"{end}{suffix}"] for r in (a, b) for end in ("ci_low", "ci_high")]
                pair[f"apart{suffix}"] = (a[f"ci_low{suffix}"] > b[f"ci_high{suffix}"]
                                          or b[f"ci_low{suffix}"] > a[f"ci_high{suffix}"]) \
                    if all(math.isfinite(e) for e in ends) else None
            pairs.append(pair)
    return sorted(pairs, key=lambda p: (_row_order(p["above"]["setting"]), _row_order(p["below"]["setting"])))


def _verdict(pair: dict, suffix: str) -> str:
    a, b = pair["above"], pair["below"]
    order = "holds" if pair[f"holds{suffix}"] else "reversed"
    apart = {True: "intervals apart", False: "intervals overlap", None: "no intervals"}[pair[f"apart{suffix}"]]
    return f"{_f(a[f'score{suffix}'])} vs {_f(b[f'score{suffix}'])}: {order} ({apart})"


def markdown_orderings(table: list[dict]) -> list[str]:
    """The paper's orderings that hold here and those that do not, under both readings."""
    pairs = paper_orderings(table)
    if not pairs:
        return []
    with_intervals = all(p[f"apart{suffix}"] is not None for p in pairs for _, suffix, _ in READINGS)
    counts = " and ".join(
        f"for {sum(p[f'holds{suffix}'] for p in pairs)} under the {words}"
        + (f" ({sum(p[f'holds{suffix}'] and bool(p[f'apart{suffix}']) for p in pairs)} with the two intervals "
           f"apart)" if with_intervals else "") for _, suffix, words in READINGS)
    lines = ["", f"The paper's orderings: Table 1 ranks apart {len(pairs)} pair{'s' * (len(pairs) != 1)} of these "
             f"settings (ties left out). Their order holds {counts}. An order holds when our scores put the two "
             f"settings as the paper does; the intervals are apart when the two 95% intervals do not overlap"
             f"{'' if with_intervals else ' (no intervals here: too few runs)'}."]
    failing = [p for p in pairs if not all(p[f"holds{suffix}"] for _, suffix, _ in READINGS)]
    if failing:
        lines += ["", "Orderings of the paper that do not hold under at least one reading:", "",
                  "| the paper's order | published | " + " | ".join(w for _, _, w in READINGS) + " |",
                  "|---|---:|---|---|"]
        lines += [f"| {p['above']['setting']} > {p['below']['setting']} | {_f(p['above']['published'])} vs "
                  f"{_f(p['below']['published'])} | " + " | ".join(_verdict(p, suffix) for _, suffix, _ in READINGS)
                  + " |" for p in failing]
    else:
        lines += ["", "Every ordering of the paper holds under both readings."]
    if with_intervals:
        held = [p for p in pairs if all(p[f"holds{suffix}"] and p[f"apart{suffix}"] for _, suffix, _ in READINGS)]
        lines += ["", "Orderings that hold under both readings with the intervals apart: "
                  + ("; ".join(f"{p['above']['setting']} > {p['below']['setting']}" for p in held) or "none") + "."]
    return lines


def markdown(envs: list[str], table: list[dict], rows: list[dict], baselines_name: str, n_boot: int = 2000) -> str:
    seeds = sorted({s for r in rows for s in r["seeds"].split()}, key=str)
    steps = sorted({int(r["steps"]) for r in rows})
    head = ["setting", "score, best = best mean", "95% interval", "rank", "score, best = best run", "95% interval",
            "rank", "runs", "published", "paper rank", *envs]
    coverage = coverage_text("mean over 7 tasks", "percentile", unit="runs per env").removesuffix(")")
    lines = [f"Normalised score per setting (Schulman et al. 2017, Table 1): each run's {SCORE_KEY}, shifted and "
             f"scaled per env so that a random policy = 0 ({baselines_name}) and the best = 1, averaged over the "
             f"setting's runs (all envs together). Two readings of \"the best result was set to 1\": the best "
             f"setting's mean (best mean) or the best single run (best run) on that env. They divide each env's "
             f"scores by a different best - random, so they weight the envs differently and can order the settings "
             f"differently. Envs: {', '.join(envs)}; seeds: {' '.join(seeds)}; steps per run: "
             f"{', '.join(f'{s:,}' for s in steps)}. Ranks: among the settings of this table; the per-env columns "
             f"are the best-mean reading.", "",
             f"Intervals: nominal 95% stratified percentile bootstrap ({n_boot} resamples): each env's runs "
             f"resampled on their own, the normalisers held fixed; given only with >= {MIN_SEEDS_FOR_CI} runs on "
             f"every env. At few runs they cover less than 95%: {coverage}, a stratified mean over 7 tasks; "
             f"tools/stats.py COVERAGE); their ends are the 2.5% and 97.5% quantiles of the resampled scores "
             f"(scipy.stats.quantile's 'linear' method).", "",
             "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in table:
        cells = [r["setting"]]
        for _, suffix, _ in READINGS:
            cells += [_f(r[f"score{suffix}"]), _interval_cell(r, suffix), str(r[f"rank{suffix}"])]
        cells += [str(r["runs"]), _f(r["published"]), str(r["published_rank"] or "–"), *(_f(r[e]) for e in envs)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += markdown_orderings(table)
    lines += ["", f"Mean {SCORE_KEY} per env (± std over seeds); the random policy, the best setting's mean and the "
                  "best single run (each = 1 under its reading):", "",
              "| setting | " + " | ".join(envs) + " |", "|---|" + "---:|" * len(envs)]
    cell = {(r["env"], r["variant"]): f"{r['final_mean']:.1f} ± {_f(r['final_std'], 1)}" for r in rows}
    first = {r["env"]: r for r in rows}
    lines.append("| random policy | " + " | ".join(f"{first[e]['random']:.1f}" for e in envs) + " |")
    lines.append("| best setting's mean | " + " | ".join(f"{first[e]['reference']:.1f}" for e in envs) + " |")
    lines.append("| best single run | " + " | ".join(f"{first[e]['best_run']:.1f}" for e in envs) + " |")
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


#: the table's learning curves: trailing mean over this many iterations (``report --smooth``)
TABLE_SMOOTH = 5

TABLE_COLUMNS = ["setting", "score", "ci_low", "ci_high", "rank", "score_best_run", "ci_low_best_run",
                 "ci_high_best_run", "rank_best_run", "runs", "published", "published_rank"]


def write_table(dirs: Sequence[str], baselines: Path, out: Optional[Path] = None, n_boot: int = 2000,
                curves: bool = True) -> tuple[str, dict[str, Path]]:
    """Score the runs under ``dirs`` (a sweep, or its ``compact`` copy: the same table); writes
    table1.md/.csv (and the local report's curves and per-env tables with the same normalisation)
    to ``out`` (default ``<first dir>/paper_table1``), checked before anything is computed."""
    normalization = Normalization.from_file(baselines)
    out = Path(out) if out is not None else Path(dirs[0]) / "paper_table1"
    runs = finished(find_runs(dirs), dirs)
    check_output_dir(out, "table")
    envs, table, rows = score_table(runs, normalization.random, n_boot)
    text = markdown(envs, table, rows, f"random policy from {Path(baselines).name}", n_boot)
    make_output_dir(out, "table")
    files = {"table_md": write_output(out / "table1.md", text),
             "table_csv": write_csv(out / "table1.csv", table, [*TABLE_COLUMNS, *envs])}
    if curves:  # learning curves and per-env tables from the shared report, same normalisation; the
        # curves one panel per env and loss family (11 settings in one panel are unreadable), smoothed
        files.update(write_report(dirs, out / "report", SCORE_KEY, smooth=TABLE_SMOOTH, normalization=normalization,
                                  n_boot=n_boot, split="loss"))
    return text, files


# -- compact: a sweep small enough to commit ---------------------------------------------------------

#: at most this many metrics.jsonl rows per run in a compact copy
COMPACT_ROWS = 200
OVERRIDES_FILE = "overrides.yaml"


def downsample(rows: list, at_most: int = COMPACT_ROWS) -> list:
    """At most ``at_most`` of ``rows``, evenly spaced by position, the first and the last kept."""
    if len(rows) <= at_most:
        return list(rows)
    keep = np.unique(np.round(np.linspace(0, len(rows) - 1, at_most)).astype(int))
    return [rows[i] for i in keep]


def compact_rows(lines: list[str], at_most: int = COMPACT_ROWS) -> list[str]:
    """``downsample``'s evenly spaced rows of a metrics.jsonl, and every row with an evaluation
    besides, in order: the copy's mean of evaluations (the report's ``--final eval_mean``) is the
    run's."""
    evaluated = {i for i, line in enumerate(lines) if json.loads(line).get("eval_return") is not None}
    keep = sorted(set(downsample(list(range(len(lines))), at_most)) | evaluated)
    return [lines[i] for i in keep]


#: the metrics.jsonl fields a compact copy keeps by default: what the table's curves and a reader
#: of the protocol need (the table itself reads summary.json, copied whole)
COMPACT_FIELDS = ("iteration", "global_step", "time_s", "episode_return", "eval_return")
#: significant digits of a compact copy's metrics values (summary.json is copied as it is)
COMPACT_DIGITS = 6


def compact_row(line: str, fields: Optional[Sequence[str]], digits: int = COMPACT_DIGITS) -> str:
    """One metrics.jsonl row cut to ``fields``, its floats to ``digits`` significant digits;
    ``fields=None``: the row as it is."""
    if fields is None:
        return line
    row = json.loads(line)
    kept = {k: v for k, v in row.items() if k in fields}
    return json.dumps({k: float(f"{v:.{digits}g}") if isinstance(v, float) and math.isfinite(v) else v
                       for k, v in kept.items()})


def _inside(path: Path, other: Path) -> bool:
    path, other = Path(os.path.realpath(path)), Path(os.path.realpath(other))
    return path == other or other in path.parents


def compact(sweep: Path, out: Path, at_most: int = COMPACT_ROWS,
            fields: Optional[Sequence[str]] = COMPACT_FIELDS) -> list[Path]:
    """A copy of the finished runs under ``sweep`` small enough to commit: per run, at the same
    relative path under ``out``, its ``overrides.yaml`` (the Hydra overrides that launched it),
    ``summary.json``, ``run.json`` (its resolved config, group choices and overrides; made from
    ``.hydra/`` for a run without one) and ``metrics.jsonl`` cut to at most ``at_most`` rows and
    every evaluation's row (``compact_rows``) of ``fields``, rounded (``compact_row``; None: the rows as they are). ``paper table`` and the report read the copy as they read the sweep; the
    table is the same, the curves have fewer points. Unfinished runs are left out with a note.
    Returns the run directories written."""
    sweep, out = Path(sweep), Path(out)
    if not sweep.is_dir():
        raise PaperError(f"no such directory: {sweep}")
    if _inside(out, sweep) or _inside(sweep, out):
        raise PaperError(f"compact: {out} and {sweep} overlap; write the copy outside the sweep")
    run_dirs = find_run_dirs(sweep)
    if not run_dirs:
        raise PaperError(f"no runs under {sweep} (a run directory holds {METRICS_FILE} and {RUN_FILE} or "
                         f".hydra/config.yaml)")
    done = [d for d in run_dirs if (d / SUMMARY_FILE).is_file()]
    if not done:
        raise PaperError(f"no finished runs (with {SUMMARY_FILE}) under {sweep}")
    if len(done) < len(run_dirs):
        write_line(f"note: leaving out {len(run_dirs) - len(done)} unfinished run(s) without {SUMMARY_FILE}")
    check_output_dir(out, "compact copy")
    copies = []
    for run_dir in done:
        try:  # every file read (and parsed) before anything of the run is written
            config, choices, overrides = read_description(run_dir)
            described = ((run_dir / RUN_FILE).read_text() if (run_dir / RUN_FILE).is_file() else
                         json.dumps({"config": config, "choices": choices, "overrides": overrides}, indent=2) + "\n")
            read_metrics(run_dir)
            read_summary(run_dir)
            metrics = [line for line in (run_dir / METRICS_FILE).read_text().splitlines() if line.strip()]
            summary = (run_dir / SUMMARY_FILE).read_text()
        except Exception as err:  # a half-written or foreign file: name it, no traceback
            lines = str(err).strip().splitlines()
            raise PaperError(f"cannot read run {run_dir}: {type(err).__name__}: {lines[0] if lines else ''}")
        target = make_output_dir(out / run_dir.relative_to(sweep), "compact copy")
        write_output(target / OVERRIDES_FILE, OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
        write_output(target / RUN_FILE, described)  # run.json and summary.json as they are
        write_output(target / SUMMARY_FILE, summary)
        write_output(target / METRICS_FILE, "".join(compact_row(line, fields) + "\n" for line in compact_rows(metrics, at_most)))
        copies.append(target)
    return copies


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
    c = sub.add_parser("compact", help="a copy of a sweep's finished runs small enough to commit (overrides, "
                                       "summary.json, run.json, metrics.jsonl cut to a few rows)")
    c.add_argument("sweep", help="the multirun (or run) directory")
    c.add_argument("out", help="where the copy goes (outside the sweep), e.g. benchmarks/table1")
    c.add_argument("--rows", type=int, default=COMPACT_ROWS,
                   help="at most this many metrics.jsonl rows per run, the first and the last kept, and every row "
                        "with an evaluation besides (default: %(default)s)")
    c.add_argument("--fields", default=",".join(COMPACT_FIELDS),
                   help="comma-separated metrics.jsonl fields to keep (each float to 6 significant digits), or "
                        "'all': the rows as they are (default: %(default)s)")
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
        elif args.command == "compact":
            if args.rows < 2:
                raise PaperError("--rows must be at least 2 (the first and the last row)")
            fields = None if args.fields == "all" else [f for f in args.fields.split(",") if f]
            if fields is not None and not {"iteration", "global_step"} <= set(fields):
                raise PaperError(f"--fields {args.fields}: must keep iteration and global_step (or say 'all')")
            copies = compact(Path(args.sweep), Path(args.out), args.rows, fields)
            print(f"{len(copies)} runs -> {args.out}")
        else:
            if args.bootstrap < 1:
                raise PaperError("--bootstrap must be at least 1")
            text, files = write_table(args.dirs, Path(args.baselines), args.out, args.bootstrap, not args.no_curves)
            print(text)
            for path in files.values():
                print(path)
    except (ResultsError, OutputError) as err:  # bad input, or the report's output directory (write_report)
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

