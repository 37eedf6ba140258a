"""A run's score (a summary.json key, or ``eval_mean``: the mean of its evaluations), a variant's
summary over seeds with its interval, and normalised scores (random policy = 0, a reference = 1)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np

from ..results import ResultsError, Run, load_yaml
from ..stats import (
    MIN_SEEDS_FOR_CI,
    aggregate,
    confidence_interval,
    interval_label,
    normalize_score,
)
from .variants import Variant

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
