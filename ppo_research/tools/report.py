"""Review finished runs without wandb: learning curves and a table per variant.

    python -m ppo_research.report outputs/multirun/2026-11-24/12-00-00 [more dirs] [--out DIR]
    python -m ppo_research.report outputs/sweeps/<study>            # an Optuna study's trial runs

Runs are found under the given directories (``tools.results``: a run directory holds
``metrics.jsonl`` and ``run.json`` or ``.hydra/config.yaml``), grouped per env by the config
values that vary between them (seed is the replicate axis; tracking-only settings never name a
variant), and summarised over distinct seeds with nominal 95% intervals from 3 seeds on
(``tools.stats.confidence_interval``: the t-interval for the mean, the percentile bootstrap for
the IQM, each with its measured coverage at few seeds; 2 seeds show their min–max, 1 seed no
interval). ``--final`` picks a run's score: a summary.json key, or ``eval_mean``, the mean of
the run's evaluations in metrics.jsonl (What Matters' score; every run of an env must have
evaluated at the same steps). ``--smooth N`` smooths the curves (trailing mean over N iterations); ``--split
loss`` (a group, a key such as ``loss.epsilon``, or ``variant``) draws small multiples.
Writes ``curves.png``, ``summary.md``/``summary.csv``, the aggregate statistics of Agarwal et al.
2021 (``aggregate.md``, ``profiles.png``: IQM, performance profiles, probability of improvement)
and, with a normalisation, ``normalized.md``/``normalized.csv`` (random policy = 0, a named
reference = 1).

A variant's curve spans the steps all its seeds have a value at; where one seed has none in its
last iterations (no episode finished), the curve ends before the runs do, and the report says
so: a ``note:`` line on stderr, a marker at the curve's end in ``curves.png`` and a line in
``summary.md`` name the variant, the step and the seed (``curve_end``).

The output directory is checked before anything is computed (a file, a parent that is a file, a
read-only or pseudo file system: one ``error:`` line, exit status 2); each file is written whole
(``cli_common.write_output``), so a failure while writing (disk full: exit status 4) leaves the
files of an earlier report as they were.
"""
from __future__ import annotations

import argparse
import csv
import functools
import io
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from ..run.config.compose import CONF_DIR, GROUPS
from ..run.console import write_line
from .cli_common import OneLineParser, OutputError, check_output_dir, error_line, make_output_dir, write_output
from .results import FACET, ResultsError, Run, find_runs, finished, load_yaml
from .stats import (
    INTERVAL_METHOD,
    METHOD_NAMES,
    MIN_SEEDS_FOR_CI,
    aggregate,
    confidence_interval,
    coverage_text,
    interval_label,
    normalize_score,
    performance_profile,
    performance_profile_ci,
    pooled_iqm,
    pooled_iqm_ci,
    probability_of_improvement,
    probability_of_improvement_ci,
)

# matplotlib is imported where a figure is drawn: it is slow to import, and the tables need none.

#: Settings that change what is recorded or how a run is kept, never what it learns: they never
#: name a variant (seed is the replicate axis).
TRACKING_KEYS = frozenset({"seed", "progress", "resume", "torch_threads", "eval.every", "choices.logger"})
TRACKING_PREFIXES = ("logger.", "checkpoint.")
MISSING = "<unset>"
#: legend entries longer than this are cut (the full label is in summary.md's key table)
LEGEND_CHARS = 38
#: the marker at the end of a curve that stops before its runs do, and what the title says of it
END_MARKER = "x"
END_MARKER_TEXT = ("x: the curve ends before its runs do (a seed has no {metric} after that step; "
                   "summary.md says which)")


def is_tracking_only(key: str) -> bool:
    """``logger.*`` (``logger.loggers.*`` too) and the logger choice, ``checkpoint.*``,
    ``progress``, ``resume``, ``eval.every``, ``torch_threads`` (and ``seed``)."""
    return key in TRACKING_KEYS or key.startswith(TRACKING_PREFIXES)


# -- grouping into variants ----------------------------------------------------------------------

@dataclass
class Variant:
    env: str
    label: str
    runs: list[Run] = field(default_factory=list)

    def by_seed(self) -> dict:
        """seed -> its runs, in seed order (a run without a seed is its own replicate)."""
        groups: dict = {}
        for run in self.runs:
            groups.setdefault(run.seed if run.seed is not None else f"?{run.path}", []).append(run)
        return dict(sorted(groups.items(), key=lambda kv: str(kv[0]).zfill(12)))

    @property
    def n_seeds(self) -> int:
        return len(self.by_seed())


def duplicate_seeds(variants: list[Variant]) -> list[str]:
    """One warning line per (variant, seed) with several runs: they count as one seed."""
    lines = []
    for v in variants:
        for seed, runs in v.by_seed().items():
            if len(runs) > 1:
                lines.append(f"warning: {v.env} {v.label}: seed {seed} appears in {len(runs)} runs "
                             f"({', '.join(str(r.path) for r in runs)}); counted as one seed, their scores averaged")
    return lines


def variant_keys(variants: list[Variant]) -> dict[str, str]:
    """A short key per distinct label (V1, V2, ... in label order): the legends' and the key
    table's names; the same label on several envs is one key and one colour."""
    return {label: f"V{i}" for i, label in enumerate(sorted({v.label for v in variants}), 1)}


def _determined_by(key: str, by: list[str], runs: list[Run]) -> bool:
    """Whether ``key`` takes one value among runs that agree on all of ``by``."""
    return not _classes_where_it_varies(key, by, runs)


def _class(run: Run, by: list[str]) -> tuple:
    return tuple(repr(run.config.get(b, MISSING)) for b in by)


def _classes_where_it_varies(key: str, by: list[str], runs: list[Run]) -> set:
    values: dict[tuple, set] = {}
    for run in runs:
        values.setdefault(_class(run, by), set()).add(repr(run.config.get(key, MISSING)))
    return {cls for cls, vals in values.items() if len(vals) > 1}


@functools.lru_cache(maxsize=None)
def preset_groups() -> tuple[str, ...]:
    """The groups whose options are presets (``# @package _global_``: env, experiment,
    paper_setting): an option may set other groups' keys, so its choice may imply them."""
    def is_preset(group: str) -> bool:
        files = sorted((CONF_DIR / group).glob("*.yaml"))
        return bool(files) and all(f.read_text().startswith("# @package _global_") for f in files)

    return tuple(g for g in GROUPS if is_preset(g))


def label_groups() -> tuple[str, ...]:
    """Group choices in the order they name a variant: presets first (they imply the rest)."""
    return preset_groups() + tuple(g for g in GROUPS if g not in preset_groups())


def _explainers(key: str, shown: list[str]) -> list[str]:
    """What may imply ``key``'s value: the env, the preset groups' choices (experiment,
    paper_setting), and the key's own group choice (``loss.epsilon`` by ``loss=``). Not other
    groups: they would hide a real difference."""
    allowed = {f"choices.{g}" for g in preset_groups()}
    if not key.startswith("choices."):
        allowed.add(f"choices.{key.split('.')[0]}")
    return [FACET] + [k for k in shown if k in allowed and k != key]


def label_keys(runs: list[Run]) -> list[str]:
    """The keys that name variants: varying group choices first, then varying values that
    their explainers (env, preset choices, own group choice) do not already imply."""
    keys = sorted(k for k in set().union(*(run.config for run in runs)) if not is_tracking_only(k))
    varying = [k for k in keys if len({repr(run.config.get(k, MISSING)) for run in runs}) > 1]
    choices = [f"choices.{g}" for g in label_groups() if f"choices.{g}" in varying]
    shown: list[str] = []
    for key in choices + [k for k in varying if not k.startswith("choices.") and k != FACET]:
        if not _determined_by(key, _explainers(key, shown), runs):
            shown.append(key)
    return shown


def _show(key: str, value) -> str:
    if isinstance(value, str) and key.endswith("_target_"):
        value = value.rsplit(".", 1)[-1]  # the class name is enough
    return f"{key.removeprefix('choices.')}={value}"


def group_runs(runs: list[Run]) -> list[Variant]:
    shown = label_keys(runs)
    # A value is named only where it varies: within loss=klpen, loss.epsilon=None says nothing.
    # Same label => same shown choices => same classes, so runs that differ never share a label.
    named_in = {k: None if k.startswith("choices.") else _classes_where_it_varies(k, _explainers(k, shown), runs)
                for k in shown}
    variants: dict[tuple[str, str], Variant] = {}
    for run in runs:
        parts = [_show(k, run.config.get(k, MISSING)) for k in shown
                 if named_in[k] is None or _class(run, _explainers(k, shown)) in named_in[k]]
        if not shown:  # nothing varies: name the setting
            parts = [_show(f"choices.{g}", run.config[f"choices.{g}"])
                     for g in ("loss", "advantage") if f"choices.{g}" in run.config]
        label = ", ".join(parts) or "all runs"
        variants.setdefault((run.env, label), Variant(run.env, label)).runs.append(run)
    return [variants[k] for k in sorted(variants)]


# -- scores --------------------------------------------------------------------------------------

#: ``--final`` score read from metrics.jsonl instead of summary.json: the mean of a run's
#: evaluations, What Matters' score (Andrychowicz et al. 2021 evaluate every 100k steps and score a
#: run by the mean of those evaluations, the area under its learning curve)
EVAL_MEAN = "eval_mean"


def evaluations(run: Run) -> list[tuple[int, float]]:
    """(global_step, eval_return) of every evaluation in the run's metrics.jsonl, the one at the
    end included."""
    return [(row["global_step"], float(row["eval_return"])) for row in run.metrics
            if row.get("eval_return") is not None]


def no_evaluations(run: Run) -> ResultsError:
    return ResultsError(f"--final {EVAL_MEAN}: {run.path} has no eval_return in its metrics.jsonl (runs scored by "
                        "their evaluations must evaluate during training: eval.every > 0)")


def check_evaluation_steps(runs: list[Run]) -> None:
    """Means of evaluations compare only when they are taken at the same steps: within an env,
    every run must have evaluated at the same global steps (ResultsError naming two that did not)."""
    first: dict[str, tuple[Run, list[int]]] = {}
    for run in runs:
        steps = [step for step, _ in evaluations(run)]
        if not steps:
            raise no_evaluations(run)
        other, other_steps = first.setdefault(run.env, (run, steps))
        if steps != other_steps:
            raise ResultsError(f"--final {EVAL_MEAN}: {run.env} runs evaluated at different steps ({run.path}: "
                               f"{len(steps)} evaluations, {_steps_text(steps)}; {other.path}: {len(other_steps)}, "
                               f"{_steps_text(other_steps)}): their means do not compare")


def _steps_text(steps: list[int]) -> str:
    return ", ".join(map(str, steps)) if len(steps) <= 4 else f"{steps[0]}, {steps[1]}, ..., {steps[-1]}"


def run_score(run: Run, key: str = "auto") -> tuple[float, str]:
    """The score of one run and where it came from: ``EVAL_MEAN`` (the mean of its evaluations in
    metrics.jsonl) or a summary.json key (``final_return``)."""
    if key == EVAL_MEAN:
        returns = [value for _, value in evaluations(run)]
        if not returns:
            raise no_evaluations(run)
        return float(np.mean(returns)), EVAL_MEAN
    return final_return(run.summary, key)


def final_return(summary: dict, key: str = "auto") -> tuple[float, str]:
    """The score of one run and where it came from. ``auto``: eval_return (deterministic policy)
    if the run evaluated, else train_return (last 20 training episodes)."""
    if key == "auto":
        key = "eval_return" if summary.get("eval_return") is not None else "train_return"
    value = summary.get(key)
    if value is None:
        raise ResultsError(f"summary.json has no {key!r}; choose another --final (e.g. train_return)")
    return float(value), key


@dataclass(frozen=True)
class Normalization:
    """Per-env score normalisation: (score - random) / (reference - random).

    ``random`` maps env id -> the random policy's score (0 after normalising); ``reference``
    maps env id -> the score that becomes 1, or is ``"best"``: per env, the best variant's mean
    in this report (the PPO paper's Table 1 convention). ``name`` says what 1 means.
    """

    random: Mapping[str, float]
    reference: Union[Mapping[str, float], str] = "best"
    name: str = "best variant"

    @classmethod
    def from_file(cls, path: Union[str, Path]) -> "Normalization":
        """YAML or JSON: ``{random: {env_id: score}, reference: best | {env_id: score}, name: ...}``."""
        path = Path(path)
        if not path.is_file():
            raise ResultsError(f"no such normalisation file: {path}")
        node = load_yaml(path)
        if not isinstance(node, dict) or not isinstance(node.get("random"), dict):
            raise ResultsError(f"{path}: expected a mapping with 'random: {{env_id: score}}'")
        reference = node.get("reference", "best")
        if reference != "best" and not isinstance(reference, dict):
            raise ResultsError(f"{path}: 'reference' must be 'best' or a mapping env_id -> score")
        return cls({k: float(v) for k, v in node["random"].items()},
                   reference if reference == "best" else {k: float(v) for k, v in reference.items()},
                   str(node.get("name", "best variant" if reference == "best" else "reference")))

    def references(self, rows: list[dict]) -> dict[str, float]:
        if self.reference == "best":
            best: dict[str, float] = {}
            for row in rows:
                best[row["env"]] = max(best.get(row["env"], -math.inf), row["final_mean"])
            return best
        return dict(self.reference)

    def __call__(self, env: str, score: float, reference: Optional[float]) -> float:
        return normalize_score(score, self.random.get(env), reference)


def _interval(x: np.ndarray, how: str, n_boot: int) -> tuple[float, float]:
    """The interval ``summarize`` reports for ``aggregate(x, how)`` over seeds: from
    ``MIN_SEEDS_FOR_CI`` seeds on ``stats.confidence_interval`` (the t-interval for the mean,
    the percentile bootstrap for the IQM), the min–max of 2 seeds, none (nan) for 1."""
    if len(x) >= MIN_SEEDS_FOR_CI:
        return confidence_interval(x, how, n_boot=n_boot)
    if len(x) == 2:
        return float(x.min()), float(x.max())
    return math.nan, math.nan


def summarize(variants: list[Variant], final: str = "auto", normalization: Optional[Normalization] = None,
              n_boot: int = 2000) -> list[dict]:
    """One row per (env, variant): distinct seeds (runs of one seed averaged first), final return
    mean/std/IQM and their intervals (``interval`` and ``iqm_interval`` name their kinds: a CI
    only from 3 seeds on), steps, wall time, SPS, and (with a normalisation) the normalised score."""
    rows = []
    for v in variants:
        finals, keys = [], set()
        for runs in v.by_seed().values():
            scores = [run_score(r, final) for r in runs]
            finals.append(float(np.mean([f for f, _ in scores])))
            keys |= {k for _, k in scores}
        x = np.array(finals)
        mean_iv, iqm_iv = _interval(x, "mean", n_boot), _interval(x, "iqm", n_boot)
        ci = len(x) >= MIN_SEEDS_FOR_CI
        rows.append({
            "env": v.env, "variant": v.label, "n_seeds": len(x), "n_runs": len(v.runs),
            "seeds": " ".join(str(s) for s in v.by_seed() if not str(s).startswith("?")),
            "final_key": "/".join(sorted(keys)),
            "final_mean": float(x.mean()), "final_std": float(x.std(ddof=1)) if len(x) > 1 else math.nan,
            "final_min": float(x.min()), "final_max": float(x.max()),
            "interval": interval_label(len(x), "mean") or "none (1 seed)",
            "iqm_interval": interval_label(len(x), "iqm") or "none (1 seed)",
            "final_mean_ci_low": mean_iv[0] if ci else math.nan, "final_mean_ci_high": mean_iv[1] if ci else math.nan,
            "final_iqm": aggregate(x, "iqm"),
            "final_iqm_ci_low": iqm_iv[0] if ci else math.nan, "final_iqm_ci_high": iqm_iv[1] if ci else math.nan,
            "steps": float(np.mean([r.summary["global_step"] for r in v.runs])),
            "wall_time_s": float(np.mean([r.summary["wall_time_s"] for r in v.runs])),
            "sps": float(np.mean([r.summary["sps"] for r in v.runs])),
            "_finals": x, "_mean_interval": mean_iv, "_iqm_interval": iqm_iv,
        })
    if normalization is not None:
        refs = normalization.references(rows)
        for row in rows:
            scores = np.array([normalization(row["env"], f, refs.get(row["env"])) for f in row["_finals"]])
            row["_normalized"] = scores
            row["normalized_mean"] = float(scores.mean())
            row["_normalized_interval"] = (_interval(scores, "mean", n_boot) if np.isfinite(scores).all()
                                           else (math.nan, math.nan))
            ci = len(scores) >= MIN_SEEDS_FOR_CI
            row["normalized_ci_low"], row["normalized_ci_high"] = (
                row["_normalized_interval"] if ci else (math.nan, math.nan))
    return rows


def normalized_table(rows: list[dict]) -> tuple[list[str], list[dict]]:
    """Variant x env normalised scores and their mean over envs (the paper's Table 1 layout)."""
    envs = sorted({r["env"] for r in rows})
    table = {}
    for row in rows:
        table.setdefault(row["variant"], {"variant": row["variant"]})[row["env"]] = row["normalized_mean"]
    out = []
    for variant in sorted(table):
        values = [table[variant].get(e, math.nan) for e in envs]
        finite = [v for v in values if math.isfinite(v)]
        out.append({**table[variant], "mean over envs": float(np.mean(finite)) if finite else math.nan})
    return envs, out


# -- learning curves -----------------------------------------------------------------------------

def trailing_mean(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average, same length: point i is the mean of points i-window+1 .. i
    (fewer at the start: point 0 is itself, point 1 the mean of the first two, ...)."""
    y = np.asarray(y, float)
    if window <= 1 or not len(y):
        return y
    c = np.concatenate([[0.0], np.cumsum(y)])
    end = np.arange(1, len(y) + 1)
    start = np.maximum(0, end - window)
    return (c[end] - c[start]) / (end - start)


def run_curve(run: Run, metric: str, smooth: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``metric`` against ``global_step`` over the rows that have it (an iteration in which no
    episode ended has no ``episode_return``), smoothed by a trailing moving average over
    ``smooth`` of those rows (``trailing_mean``)."""
    points = [(m["global_step"], m[metric]) for m in run.metrics if m.get(metric) is not None]
    if not points:
        return np.zeros(0), np.zeros(0)
    x, y = map(np.asarray, zip(*points))
    return x.astype(float), trailing_mean(y.astype(float), smooth)


def variant_curve(variant: Variant, metric: str, smooth: int = 1, n_boot: int = 1000):
    """Runs interpolated onto their common step range, the runs of one seed averaged; the mean
    over seeds and its band: the t-interval of the mean from 3 seeds on
    (``stats.confidence_interval``), the min–max of 2, none for 1.
    Returns ``(steps, mean, low, high, n_seeds)`` or None."""
    curves, seeds = [], []
    for seed, runs in variant.by_seed().items():
        for run in runs:
            curve = run_curve(run, metric, smooth)
            if len(curve[0]):
                curves.append(curve)
                seeds.append(seed)
    if not curves:
        return None
    lo, hi = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    grid = np.unique(np.concatenate([x[(x >= lo) & (x <= hi)] for x, _ in curves]))
    if not len(grid):
        return None
    runs_y = np.stack([np.interp(grid, x, y) for x, y in curves])
    ys = np.stack([runs_y[[i for i, s in enumerate(seeds) if s == seed]].mean(axis=0)
                   for seed in dict.fromkeys(seeds)])  # (seeds, steps)
    if len(ys) >= MIN_SEEDS_FOR_CI:
        low, high = confidence_interval(ys, "mean", n_boot=n_boot)
    elif len(ys) == 2:
        low, high = ys.min(axis=0), ys.max(axis=0)
    else:
        low = high = None
    return grid, ys.mean(axis=0), low, high, len(ys)


@dataclass
class CurveEnd:
    """Where a variant's curve ends before its runs do, and the seeds that end it."""

    env: str
    label: str
    metric: str
    end: float  # the curve's last step: the last step every seed has a value at
    last: float  # the variant's last step (its runs' last metrics row)
    ended_by: dict  # seed -> its own last step with a value, for the seeds whose values stop at ``end``
    runs_end: dict  # seed -> True where the seed's run itself ends there (no later rows at all)
    without: list  # seeds with no value at all: the curve is over the others

    def text(self, key: Optional[str] = None) -> str:
        """One line: ``CartPole-v1 V2 loss=klpen: the episode_return curve ends at step 384 of
        512: seed 1 has no episode_return after step 384 (no episode finished in its last
        iterations)``."""
        name = f"{self.env} {key + ' ' if key else ''}{self.label}"
        parts = []
        if self.end < self.last:
            step, why = f"{self.end:.0f}", []
            silent = [s for s in self.ended_by if not self.runs_end.get(s)]
            ended = [s for s in self.ended_by if self.runs_end.get(s)]
            if silent:
                one = len(silent) == 1
                episode = (f" (no episode finished in {'its' if one else 'their'} last iterations)"
                           if self.metric.startswith("episode_") else "")
                why.append(f"{_seeds(silent)} {'has' if one else 'have'} no {self.metric} after step {step}{episode}")
            if ended:
                why.append(f"the run{'' if len(ended) == 1 else 's'} of {_seeds(ended)} "
                           f"end{'s' if len(ended) == 1 else ''} at step {step}")
            parts.append(f"the {self.metric} curve ends at step {step} of {self.last:.0f}: {'; '.join(why)}")
        if self.without:
            one = len(self.without) == 1
            parts.append(f"{_seeds(self.without)} {'has' if one else 'have'} no {self.metric} at all: the curve is "
                         "the mean of the other seeds")
        return f"{name}: {'; '.join(parts)}"


def _seeds(seeds) -> str:
    seeds = [str(s) for s in seeds]
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(seeds)}"


def curve_end(variant: Variant, metric: str) -> Optional[CurveEnd]:
    """Why ``variant_curve(variant, metric)`` stops before the variant's runs do, or leaves a
    seed out; None when its curve runs to its last step over every seed (or there is none)."""
    lasts, run_lasts, without = {}, {}, []
    for seed, runs in variant.by_seed().items():
        for run in runs:
            steps = [m["global_step"] for m in run.metrics if m.get("global_step") is not None]
            x, _ = run_curve(run, metric)
            if not len(x):
                without.append(seed)
                continue
            lasts.setdefault(seed, []).append(float(x[-1]))
            run_lasts.setdefault(seed, []).append(float(max(steps)) if steps else float(x[-1]))
    if not lasts:
        return None
    without = [s for s in dict.fromkeys(without) if s not in lasts]
    end = min(min(v) for v in lasts.values())
    last = max(max(v) for v in run_lasts.values())
    if end >= last and not without:
        return None
    ended_by = {seed: end for seed, v in lasts.items() if min(v) == end} if end < last else {}
    runs_end = {seed: min(run_lasts[seed]) <= end for seed in ended_by}
    return CurveEnd(variant.env, variant.label, metric, end, last, ended_by, runs_end, without)


def panels_text(split: Optional[str]) -> str:
    """What a panel of curves.png holds."""
    if not split:
        return "one panel per env"
    return f"one panel per env and {'variant' if split == SPLIT_VARIANT else split}, one y scale per env"


def smoothing_text(smooth: int) -> str:
    return (f"trailing moving average over {smooth} iterations" if smooth > 1
            else "per iteration, not smoothed")


def interval_kinds(seed_counts, ci: str, two: str, one: str) -> list[str]:
    """The kinds of interval shown for these seed counts: a CI only from MIN_SEEDS_FOR_CI seeds."""
    return [text for shown, text in ((any(n >= MIN_SEEDS_FOR_CI for n in seed_counts), ci),
                                     (2 in seed_counts, two), (1 in seed_counts, one)) if shown]


def band_text(seed_counts) -> str:
    """What the shaded bands are, for the seed counts drawn."""
    return "; ".join(interval_kinds(seed_counts, f"95% t-interval of the mean (>= {MIN_SEEDS_FOR_CI} seeds)",
                                    "min–max of 2 seeds", "none for 1 seed"))


def abbreviate(label: str, width: int = LEGEND_CHARS) -> str:
    """A legend's short form of a variant label: each dotted key by its last part
    (``algo.learning_rate=3e-4`` -> ``learning_rate=3e-4``), cut to ``width`` characters."""
    parts = []
    for part in label.split(", "):
        key, sep, value = part.partition("=")
        parts.append(f"{key.rsplit('.', 1)[-1]}{sep}{value}" if sep else part)
    text = ", ".join(parts)
    return text if len(text) <= width else text[:width - 1].rstrip(", ") + "…"


def _styles(keys: dict[str, str]) -> dict[str, dict]:
    """A colour and line style per label: tab10 colours, then dashed, dotted, ... past 10."""
    from matplotlib import colormaps

    cmap, styles = colormaps["tab10"], ["-", "--", ":", "-."]
    return {label: {"color": cmap(i % 10), "linestyle": styles[(i // 10) % len(styles)]}
            for i, label in enumerate(keys)}


def _seed_range(counts: list[int]) -> str:
    return f"n={min(counts)}" if min(counts) == max(counts) else f"n={min(counts)}–{max(counts)}"


def _legend_below(fig, handles: list, texts: list[str]) -> None:
    """One legend for the whole figure, under the panels, in as many columns as fit its width."""
    width_pt = fig.get_figwidth() * 72
    longest = max((len(t) for t in texts), default=10)
    ncol = max(1, min(len(texts), int(width_pt // (longest * 4.6 + 45))))
    fig.legend(handles, texts, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, fontsize=8,
               frameon=False, handlelength=2.5, columnspacing=1.5)


def _panel_grid(rows: int, cols: int, n_panels: int, width: float = 5.5, height: float = 4.0,
                min_width: float = 8.0):
    """A figure of ``rows`` x ``cols`` panels, those past ``n_panels`` hidden."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(max(width * cols, min_width), height * rows), squeeze=False)
    for ax in list(axes.flat)[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def wrap(text: str, width_inches: float, fontsize: float = 10) -> str:
    """``text`` broken into lines that fit ``width_inches`` at ``fontsize`` points (an average
    character is about 0.55 em wide), each of its own lines wrapped on its own."""
    chars = max(20, int(width_inches * 72 / (0.55 * fontsize)))
    return "\n".join(textwrap.fill(line, chars, break_on_hyphens=False) for line in text.split("\n"))


def legend_entries(variants: list[Variant], keys: dict[str, str]) -> dict[str, str]:
    """label -> legend text: ``V3 loss=klpen (n=5)``, cut to ``LEGEND_CHARS``."""
    counts: dict[str, list[int]] = {}
    for v in variants:
        counts.setdefault(v.label, []).append(v.n_seeds)
    return {label: f"{key} {abbreviate(label)} ({_seed_range(counts[label])})"
            for label, key in keys.items() if label in counts}


#: ``--split`` value for one panel per variant
SPLIT_VARIANT = "variant"
#: at most this many panels side by side when the curves are split (an env's panels wrap)
SPLIT_COLUMNS = 4


def panel_of(variant: Variant, split: Optional[str]) -> str:
    """The panel a variant's curve goes to within its env: ``""`` (one panel per env), the
    variant's label (``split="variant"``), or ``KEY=value`` where ``split`` is a config group
    (``loss``: its choice) or a config key (``loss.epsilon``). A key that differs between the
    runs of one variant cannot split them: ResultsError."""
    if not split:
        return ""
    if split == SPLIT_VARIANT:
        return variant.label
    key = f"choices.{split}" if any(f"choices.{split}" in r.config for r in variant.runs) else split
    values = {repr(r.config.get(key, MISSING)) for r in variant.runs}
    if len(values) > 1:
        raise ResultsError(f"--split {split}: its value differs between the seeds of {variant.env} {variant.label} "
                           f"({', '.join(sorted(values))}); split by a group or key that names variants")
    value = variant.runs[0].config.get(key, MISSING)
    return f"{split}={value}"


def _layout(variants: list[Variant], split: Optional[str]) -> tuple[list[tuple[str, str]], int, int]:
    """The panels, (env, panel_of) in order, and the grid's rows and columns: without a split up
    to 3 envs a row; with one, each env starts a row and its panels wrap after SPLIT_COLUMNS."""
    envs = sorted({v.env for v in variants})
    if split and split != SPLIT_VARIANT and not any(
            f"choices.{split}" in r.config or split in r.config for v in variants for r in v.runs):
        raise ResultsError(f"--split {split}: no run has a config group or key {split!r} (e.g. --split loss, "
                           f"--split loss.epsilon, --split {SPLIT_VARIANT})")
    per_env = {env: sorted({panel_of(v, split) for v in variants if v.env == env}) for env in envs}
    panels = [(env, value) for env in envs for value in per_env[env]]
    if not split:
        cols = min(3, len(envs))
        return panels, -(-len(envs) // cols), cols
    cols = min(SPLIT_COLUMNS, max(len(values) for values in per_env.values()))
    return panels, sum(-(-len(values) // cols) for values in per_env.values()), cols


def curves_figure(variants: list[Variant], metric: str = "episode_return", smooth: int = 1,
                  split: Optional[str] = None):
    """The learning-curve figure: one panel per env, or with ``split`` small multiples (one panel
    per env and ``panel_of`` value, an env's panels on one y scale); one line per variant (colour
    and key shared across panels), one legend below the panels; the smoothing window on the y
    axis; titles wrapped to stay inside the figure."""
    keys = variant_keys(variants)
    style, entries = _styles(keys), legend_entries(variants, keys)
    panels, rows, cols = _layout(variants, split)
    width = 4.4 if split else 5.5
    fig, grid = _panel_grid(rows, cols, rows * cols, width=width, height=3.6 if split else 4.0)
    axes_of: dict[tuple[str, str], object] = {}
    row, col, previous_env = 0, 0, None
    for env, value in panels:  # each env starts a row when split; its panels wrap after cols
        if split and previous_env is not None and (env != previous_env or col == cols):
            row, col = row + 1, 0
        elif not split and col == cols:
            row, col = row + 1, 0
        axes_of[(env, value)] = grid[row, col]
        col, previous_env = col + 1, env
    for ax in grid.flat:
        ax.set_visible(ax in axes_of.values())
    handles, counts, early = {}, set(), False
    for (env, value), ax in axes_of.items():
        runs_last = None  # the last step of a run whose curve ends early: the x axis reaches it
        for v in (v for v in variants if v.env == env and panel_of(v, split) == value):
            curve = variant_curve(v, metric, smooth)
            if curve is None:
                continue
            x, mean, low, high, n = curve
            counts.add(n)
            (line,) = ax.plot(x, mean, linewidth=1.4, **style[v.label])
            handles.setdefault(v.label, line)
            if low is not None:
                ax.fill_between(x, low, high, color=style[v.label]["color"], alpha=0.15, linewidth=0)
            ends = curve_end(v, metric)
            if ends is not None and ends.end < ends.last:  # ends before its runs do: marked, and said
                ax.plot([x[-1]], [mean[-1]], marker=END_MARKER, markersize=9, markeredgewidth=2, linestyle="none",
                        color=style[v.label]["color"])
                early = True
                runs_last = max(runs_last or ends.last, ends.last)
        if runs_last is not None and runs_last > ax.get_xlim()[1]:
            left = ax.get_xlim()[0]
            ax.set_xlim(left, runs_last + 0.02 * (runs_last - left))
        title = env if not value else f"{env}: {keys[value] + ' ' + abbreviate(value) if split == SPLIT_VARIANT else value}"
        ax.set(xlabel="global_step", ylabel=f"{metric}\n({smoothing_text(smooth)})")
        ax.set_title(wrap(title, width - 0.3, 10), fontsize=10)
        ax.grid(alpha=0.3)
    if split:  # one scale per env: its panels compare by eye
        for env in {env for env, _ in panels}:
            env_axes = [ax for (e, _), ax in axes_of.items() if e == env]
            low = min(ax.get_ylim()[0] for ax in env_axes)
            high = max(ax.get_ylim()[1] for ax in env_axes)
            right = max(ax.get_xlim()[1] for ax in env_axes)
            left = min(ax.get_xlim()[0] for ax in env_axes)
            for ax in env_axes:
                ax.set_ylim(low, high)
                ax.set_xlim(left, right)
    order = [label for label in keys if label in handles]
    _legend_below(fig, [handles[label] for label in order], [entries[label] for label in order])
    title = f"{metric}, {smoothing_text(smooth)}: mean over seeds; shaded: {band_text(counts) or 'none'}"
    if split:
        title += f"; {panels_text(split)}"
    if early:
        title += f"\n{END_MARKER_TEXT.format(metric=metric)}"
    fig.suptitle(wrap(title, fig.get_figwidth() - 0.4, 10), fontsize=10)
    fig.tight_layout()
    return fig


def plot_curves(variants: list[Variant], path: Path, metric: str = "episode_return", smooth: int = 1,
                split: Optional[str] = None) -> Path:
    return write_output(path, figure_png(curves_figure(variants, metric, smooth, split)))


# -- aggregate statistics over tasks (Agarwal et al. 2021) -----------------------------------------

@dataclass
class AggregateGroup:
    """Variants compared on the same tasks: ``scores[label]`` lists per task (env) the scores of
    its seeds; ``unit`` says what a score is."""

    title: str
    unit: str
    tasks: list[str]
    scores: dict[str, list[np.ndarray]]
    notes: list[str] = field(default_factory=list)

    @property
    def min_seeds(self) -> int:
        return min(len(s) for per_task in self.scores.values() for s in per_task)


def aggregate_groups(rows: list[dict], normalization: Optional[Normalization]) -> list[AggregateGroup]:
    """With a normalisation: one group pooling every env (normalised scores), the variants run on
    all of them; without: one group per env (raw final returns; scores of different envs do not
    pool)."""
    keys = sorted({k for r in rows for k in r["final_key"].split("/")})
    envs = sorted({r["env"] for r in rows})
    if normalization is not None:
        usable = [e for e in envs if all(np.isfinite(r["_normalized"]).all() for r in rows if r["env"] == e)]
        notes = [f"{', '.join(sorted(set(envs) - set(usable)))} left out: no random baseline or no scale"] \
            if len(usable) < len(envs) else []
        labels = sorted({r["variant"] for r in rows})
        complete = [l for l in labels if all(any(r["env"] == e and r["variant"] == l for r in rows) for e in usable)]
        if len(complete) < len(labels):
            notes.append(f"left out (not run on every env): {', '.join(sorted(set(labels) - set(complete)))}")
        by = {(r["env"], r["variant"]): r["_normalized"] for r in rows}
        if not usable or not complete:
            return []
        return [AggregateGroup(f"{len(usable)} env(s), normalised score (random policy = 0, "
                               f"{normalization.name} = 1)", "normalised score", usable,
                               {l: [by[(e, l)] for e in usable] for l in complete}, notes)]
    return [AggregateGroup(env, f"final return [{'/'.join(keys)}]", [env],
                           {r["variant"]: [r["_finals"]] for r in rows if r["env"] == env}) for env in envs]


@dataclass
class AggregateStats:
    group: AggregateGroup
    iqm: dict[str, float]
    iqm_ci: dict[str, tuple[float, float]]  # empty when fewer than MIN_SEEDS_FOR_CI seeds per task
    taus: np.ndarray
    profile: dict[str, np.ndarray]
    profile_ci: dict[str, tuple[np.ndarray, np.ndarray]]
    improvement: dict[tuple[str, str], float]  # (x, y) -> P(X > Y)
    improvement_ci: dict[tuple[str, str], tuple[float, float]]  # best variant vs each other one


def aggregate_stats(group: AggregateGroup, n_boot: int = 2000) -> AggregateStats:
    labels = list(group.scores)
    with_ci = group.min_seeds >= MIN_SEEDS_FOR_CI
    everything = np.concatenate([s for per_task in group.scores.values() for s in per_task])
    low, high = float(everything.min()), float(everything.max())
    taus = np.linspace(low, high, 101) if high > low else np.array([low - 0.5, low, low + 0.5])
    iqms = {l: pooled_iqm(group.scores[l]) for l in labels}
    best = max(labels, key=lambda l: iqms[l])
    stats = AggregateStats(
        group, iqms, {l: pooled_iqm_ci(group.scores[l], n_boot) for l in labels} if with_ci else {}, taus,
        {l: performance_profile(group.scores[l], taus) for l in labels},
        {l: performance_profile_ci(group.scores[l], taus, n_boot) for l in labels} if with_ci else {},
        {(x, y): probability_of_improvement(group.scores[x], group.scores[y]) for x in labels for y in labels
         if x != y},
        {(best, y): probability_of_improvement_ci(group.scores[best], group.scores[y], n_boot)
         for y in labels if y != best} if with_ci else {})
    return stats


def _interval_cell(interval, digits: int = 4) -> str:
    return f"[{_fmt(interval[0], digits)}, {_fmt(interval[1], digits)}]"


def aggregate_interval_text(all_stats: list[AggregateStats], n_boot: int) -> str:
    """What the intervals of ``aggregate.md`` are and how much they cover; none below
    ``MIN_SEEDS_FOR_CI`` seeds per task (and then no word of a 95% interval)."""
    if not any(st.iqm_ci for st in all_stats):
        return f"Intervals: none (fewer than {MIN_SEEDS_FOR_CI} seeds per task). {IQM_CONVENTION}"
    return (f"Intervals: nominal 95% stratified percentile bootstrap (each task's seeds resampled on their own, "
            f"{n_boot} resamples), given only with >= {MIN_SEEDS_FOR_CI} seeds per task; they cover less than "
            f"95% at few seeds: the IQM's {coverage_text('IQM over 5 tasks', 'percentile', unit='seeds per task')}"
            f" over 5 tasks, P(X > Y)'s "
            f"{coverage_text('P(X > Y) over 5 tasks', 'percentile', unit='seeds per task')} (tools/stats.py "
            f"COVERAGE). {CONVENTIONS}")


def markdown_aggregate(all_stats: list[AggregateStats], keys: dict[str, str], n_boot: int) -> str:
    lines = ["# Aggregate statistics (Agarwal et al. 2021)", "",
             "IQM: interquartile mean of all runs (the middle 50% of the seeds' final scores, pooled over the "
             "tasks). Performance profile (profiles.png): the fraction of runs scoring above each threshold. "
             "P(X > Y): the probability that a run of X scores above a run of Y on the same task (ties count "
             f"half), averaged over tasks. {aggregate_interval_text(all_stats, n_boot)}",
             ""]
    for st in all_stats:
        g = st.group
        labels = sorted(g.scores, key=lambda l: -st.iqm[l])
        best = labels[0]
        seeds = sorted({len(s) for per_task in g.scores.values() for s in per_task})
        lines += [f"## {g.title}", "", f"Tasks: {', '.join(g.tasks)}; seeds per task: "
                  f"{'/'.join(map(str, seeds))}; score: {g.unit}.", *[f"Note: {n}." for n in g.notes], ""]
        ci_head = "IQM 95% CI" if st.iqm_ci else "interval"
        pi_head = f"P({keys[best]} > it) [95% CI]" if st.improvement_ci else f"P({keys[best]} > it)"
        lines += [f"| key | variant | IQM | {ci_head} | {pi_head} |", "|---|---|---:|---|---|"]
        for l in labels:
            interval = _interval_cell(st.iqm_ci[l]) if st.iqm_ci else f"none ({g.min_seeds} seed(s) per task)"
            if l == best:
                poi = "(best IQM)"
            else:
                poi = _fmt(st.improvement[(best, l)], 3) + (
                    f" {_interval_cell(st.improvement_ci[(best, l)])}" if st.improvement_ci else "")
            lines.append(f"| {keys[l]} | {l} | {_fmt(st.iqm[l])} | {interval} | {poi} |")
        if len(labels) > 1:
            lines += ["", "P(row > column):", "",
                      "| | " + " | ".join(keys[l] for l in labels) + " |", "|---|" + "---:|" * len(labels)]
            for x in labels:
                lines.append(f"| {keys[x]} | " + " | ".join(
                    "–" if x == y else _fmt(st.improvement[(x, y)], 2) for y in labels) + " |")
        lines.append("")
    return "\n".join(lines)


def profiles_figure(all_stats: list[AggregateStats], keys: dict[str, str]):
    """Per aggregate group a row of two panels: the IQM of each variant with its interval, and
    the performance profiles with their bands; one legend below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = _styles(keys)
    n_labels = max(len(st.group.scores) for st in all_stats)
    fig, axes = plt.subplots(len(all_stats), 2, squeeze=False, gridspec_kw={"width_ratios": [1, 1.6]},
                             figsize=(11, max(3.5, 0.28 * n_labels + 1.5) * len(all_stats)))
    handles = {}
    for (ax_iqm, ax_prof), st in zip(axes, all_stats):
        labels = sorted(st.group.scores, key=lambda l: st.iqm[l])
        for i, l in enumerate(labels):
            color = style[l]["color"]
            if st.iqm_ci:
                low, high = st.iqm_ci[l]
                ax_iqm.plot([low, high], [i, i], color=color, linewidth=6, alpha=0.35, solid_capstyle="butt")
            ax_iqm.plot([st.iqm[l]], [i], "|", color=color, markersize=14, markeredgewidth=2)
        ax_iqm.set_yticks(range(len(labels)), [keys[l] for l in labels], fontsize=8)
        ax_iqm.set_ylim(-0.6, len(labels) - 0.4)
        ax_iqm.margins(x=0.08)
        what = "IQM, 95% stratified bootstrap CI" if st.iqm_ci else \
            f"IQM (no interval: {st.group.min_seeds} seed(s) per task)"
        ax_iqm.set(title=f"{st.group.title}\n{what}", xlabel=st.group.unit)
        ax_iqm.title.set_fontsize(9)
        ax_iqm.grid(alpha=0.3, axis="x")
        for l in sorted(st.group.scores, key=lambda l: keys[l]):
            (line,) = ax_prof.plot(st.taus, st.profile[l], linewidth=1.4, **style[l])
            handles.setdefault(l, line)
            if st.profile_ci:
                ax_prof.fill_between(st.taus, *st.profile_ci[l], color=style[l]["color"], alpha=0.12, linewidth=0)
        band = "shaded: 95% stratified bootstrap CI" if st.profile_ci else "no band: fewer than 3 seeds per task"
        ax_prof.set(title=f"Performance profile; {band}", xlabel=f"threshold tau on the {st.group.unit}",
                    ylabel="fraction of runs with score > tau", ylim=(-0.02, 1.02))
        ax_prof.title.set_fontsize(9)
        ax_prof.grid(alpha=0.3)
    entries = {l: f"{keys[l]} {abbreviate(l)}" for l in handles}
    order = [l for l in keys if l in handles]
    _legend_below(fig, [handles[l] for l in order], [entries[l] for l in order])
    fig.tight_layout()
    return fig


# -- writing tables ------------------------------------------------------------------------------

CSV_COLUMNS = ["env", "key", "variant", "n_seeds", "n_runs", "seeds", "final_key", "final_mean", "final_std",
               "final_min", "final_max", "interval", "final_mean_ci_low", "final_mean_ci_high", "final_iqm",
               "iqm_interval", "final_iqm_ci_low", "final_iqm_ci_high", "steps", "wall_time_s", "sps"]
NORM_COLUMNS = ["normalized_mean", "normalized_ci_low", "normalized_ci_high"]


def _fmt(value, digits: int = 4) -> str:
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


def csv_text(rows: list[dict], columns: list[str]) -> str:
    f = io.StringIO(newline="")
    writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()})
    return f.getvalue()


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    """The CSV of ``rows``, written whole (``cli_common.write_output``)."""
    return write_output(path, csv_text(rows, columns))


def figure_png(fig) -> bytes:
    """``fig`` as PNG bytes (110 dpi, tight), closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def final_description(final: str) -> str:
    if final == "auto":
        return ("eval_return (deterministic policy, summary.json), or train_return (mean of the last 20 training "
                "episodes) for runs that did not evaluate")
    if final == EVAL_MEAN:
        return ("eval_mean: the mean of each run's evaluations in metrics.jsonl (every evaluation during training and "
                "the one at the end, the same steps for every run of an env), What Matters' score")
    return f"summary.json {final}"


def _interval_text(interval, n: int, digits: int = 4, how: str = "mean") -> str:
    """An interval with its name: ``[a, b] 95% t-interval`` (``how`` names the aggregate: a
    mean's), ``[a, b] 95% bootstrap CI`` (an IQM's), ``[a, b] min–max of 2 seeds``, or
    ``– (1 seed)``."""
    label = interval_label(n, how)
    if label is None or not all(math.isfinite(v) for v in interval):
        return "– (1 seed)" if label is None else "–"
    return f"[{_fmt(float(interval[0]), digits)}, {_fmt(float(interval[1]), digits)}] {label}"


#: the quantile conventions, said wherever an IQM or an interval appears
IQM_CONVENTION = ("IQM: the mean of the values left after cutting floor(n/4) at each end (none of 3 seeds, 1 of "
                  "5), a cut by count with no quantile interpolated; no inter-quartile range is reported.")
BOOTSTRAP_CONVENTION = ("Bootstrap intervals end at the 2.5% and 97.5% quantiles of the resampled statistic "
                        "(scipy.stats.quantile's 'linear' method, Hyndman-Fan type 7, numpy's default).")
CONVENTIONS = f"{IQM_CONVENTION} {BOOTSTRAP_CONVENTION}"


def interval_method_text(how: str, n_boot: int = 2000) -> str:
    """What the interval of ``aggregate(x, how)`` over seeds is, and how much it covers: ``the
    mean's: Student-t interval (measured coverage 0.95 / 0.95 / 0.95 at 3 / 5 / 10 seeds (normal
    data), 0.83 / 0.81 / 0.85 (lognormal data))``."""
    method = INTERVAL_METHOD[how]
    name = METHOD_NAMES[method] + (f", {n_boot} resamples" if method != "t" else "")
    coverage = coverage_text(how, method)
    skewed = coverage_text(how, method, "lognormal")
    if not skewed.startswith("coverage not"):
        coverage += ", " + skewed.removeprefix("measured coverage ").replace(" at 3 / 5 / 10 seeds", "")
    what = "the mean's" if how == "mean" else f"the {how.upper() if how == 'iqm' else how}'s"
    return f"{what}: {name} ({coverage})"


def markdown_summary(rows: list[dict], final: str, normalization: Optional[Normalization],
                     keys: Optional[dict[str, str]] = None, duplicates: Sequence[str] = (),
                     smooth: int = 1, curve_notes: Sequence[str] = (), n_boot: int = 2000,
                     split: Optional[str] = None) -> str:
    keys = keys or {label: f"V{i}" for i, label in enumerate(sorted({r["variant"] for r in rows}), 1)}
    finals = sorted({k for r in rows for k in r["final_key"].split("/")})
    head = ["env", "key", "variant", "seeds", f"final return [{'/'.join(finals)}] mean ± std",
            "interval of the mean", "IQM, interval", "steps", "wall time (s)", "SPS"]
    if normalization is not None:
        head.append(f"normalised (random=0, {normalization.name}=1), interval")
    kinds = interval_kinds({r["n_seeds"] for r in rows},
                           f"nominal 95% over seeds for variants with >= {MIN_SEEDS_FOR_CI} seeds: "
                           f"{interval_method_text('mean', n_boot)}; {interval_method_text('iqm', n_boot)}",
                           "min–max of the seeds (variants with 2 seeds: too few for a confidence interval)",
                           "none (variants with 1 seed)")
    conventions = CONVENTIONS if any(r["n_seeds"] >= MIN_SEEDS_FOR_CI for r in rows) else IQM_CONVENTION
    lines = [f"Final return: {final_description(final)}. Seeds: distinct seeds (runs of one seed are averaged "
             f"first). Intervals: {'; '.join(kinds)}. {conventions} Learning curves (curves.png): "
             f"{smoothing_text(smooth)}; {panels_text(split)}.", ""]
    if duplicates:
        lines += ["Seeds counted once:", "", *[f"- {d.removeprefix('warning: ')}" for d in duplicates], ""]
    if curve_notes:
        lines += ["Curves that end early or leave a seed out (marked x in curves.png):", "",
                  *[f"- {n.removeprefix('note: ')}" for n in curve_notes], ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        n = r["n_seeds"]
        seeds = str(n) if r["n_runs"] == n else f"{n} ({r['n_runs']} runs)"
        cells = [r["env"], keys[r["variant"]], r["variant"], seeds,
                 f"{_fmt(r['final_mean'])} ± {_fmt(r['final_std'])}", _interval_text(r["_mean_interval"], n),
                 f"{_fmt(r['final_iqm'])} {_interval_text(r['_iqm_interval'], n, how='iqm')}",
                 f"{r['steps']:.0f}", f"{r['wall_time_s']:.1f}", f"{r['sps']:.0f}"]
        if normalization is not None:
            cells.append(f"{_fmt(r['normalized_mean'], 3)} {_interval_text(r['_normalized_interval'], n, 3)}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Key (the legends of curves.png and profiles.png):", "", "| key | variant |", "|---|---|"]
    lines += [f"| {key} | {label} |" for label, key in keys.items()]
    return "\n".join(lines) + "\n"


def markdown_normalized(envs: list[str], table: list[dict], name: str) -> str:
    head = ["variant", *envs, "mean over envs"]
    lines = [f"Normalised final return per env (random policy = 0, {name} = 1), mean over seeds.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([row["variant"]] + [_fmt(row.get(c, math.nan), 3) for c in head[1:]]) + " |"
              for row in table]
    return "\n".join(lines) + "\n"


def write_report(paths: Sequence[Union[str, Path]], out: Optional[Union[str, Path]] = None, final: str = "auto",
                 curve: str = "episode_return", smooth: int = 1, normalization: Optional[Normalization] = None,
                 n_boot: int = 2000, split: Optional[str] = None) -> dict[str, Path]:
    """Find, group and summarise the runs under ``paths``; returns the files written (``split``:
    small multiples in curves.png, see ``curves_figure``; a group or key no run has, or one that
    differs between the seeds of a variant, is a ResultsError before anything is written). A seed
    that appears in several runs of one variant is one warning line on stderr and counts once;
    a curve that ends before its runs do (or leaves a seed out) is one note line on stderr.
    ``out`` is checked before anything is computed (OutputError, exit status 2); a failure while
    writing is OutputError with exit status 4, and every file is written whole."""
    runs = finished(find_runs(paths), paths)
    out = Path(out) if out is not None else Path(paths[0]) / "report"
    check_output_dir(out, "report")
    if final == EVAL_MEAN:
        check_evaluation_steps(runs)
    variants = group_runs(runs)
    _layout(variants, split)  # a bad --split fails here, before the output directory is made
    duplicates = duplicate_seeds(variants)
    for line in duplicates:
        write_line(line)
    keys = variant_keys(variants)
    curve_notes = []
    for v in variants:
        ends = curve_end(v, curve)
        if ends is not None:
            curve_notes.append(f"note: {ends.text(keys[v.label])}")
            write_line(curve_notes[-1])
    rows = summarize(variants, final, normalization, n_boot)
    for row in rows:
        row["key"] = keys[row["variant"]]
    make_output_dir(out, "report")
    columns = CSV_COLUMNS + (NORM_COLUMNS if normalization is not None else [])
    files = {"curves": plot_curves(variants, out / "curves.png", curve, smooth, split),
             "summary_csv": write_csv(out / "summary.csv", rows, columns)}
    files["summary_md"] = write_output(out / "summary.md", markdown_summary(rows, final, normalization, keys,
                                                                           duplicates, smooth, curve_notes, n_boot,
                                                                           split))
    all_stats = [aggregate_stats(g, n_boot) for g in aggregate_groups(rows, normalization)]
    if all_stats:
        files["aggregate_md"] = write_output(out / "aggregate.md", markdown_aggregate(all_stats, keys, n_boot))
        files["profiles"] = write_output(out / "profiles.png", figure_png(profiles_figure(all_stats, keys)))
    if normalization is not None:
        envs, table = normalized_table(rows)
        files["normalized_csv"] = write_csv(out / "normalized.csv", table, ["variant", *envs, "mean over envs"])
        files["normalized_md"] = write_output(out / "normalized.md", markdown_normalized(envs, table, normalization.name))
    return files


# -- command line --------------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m ppo_research.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="run, multirun or Optuna study directories")
    parser.add_argument("--out", help="output directory (default: <first dir>/report)")
    parser.add_argument("--final", default="auto",
                        help="a run's score: a summary.json key, auto (eval_return, else train_return), "
                             "eval_return, train_return, train_return_last100, ..., or eval_mean (the mean of the "
                             "run's evaluations in metrics.jsonl, What Matters' score) (default: auto)")
    parser.add_argument("--curve", default="episode_return",
                        help="metrics.jsonl key plotted against global_step (default: episode_return)")
    parser.add_argument("--smooth", type=int, default=1,
                        help="trailing moving-average window over iterations, named on the plot (default: 1, none)")
    parser.add_argument("--split", metavar="GROUP|KEY|variant",
                        help="small multiples: one panel per env and value of a config group (loss), a config key "
                             "(loss.epsilon) or per variant (variant); default: one panel per env")
    parser.add_argument("--normalize", metavar="FILE",
                        help="YAML/JSON {random: {env_id: score}, reference: best | {env_id: score}, name: ...}")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if args.smooth < 1 or args.bootstrap < 1:
            raise ResultsError("--smooth and --bootstrap must be at least 1")
        normalization = Normalization.from_file(args.normalize) if args.normalize else None
        files = write_report(args.dirs, args.out, args.final, args.curve, args.smooth, normalization, args.bootstrap,
                             args.split)
    except (ResultsError, OutputError) as err:
        error_line(str(err))
        return err.status
    for path in files.values():
        print(path)
    return 0

