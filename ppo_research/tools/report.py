"""Review finished runs without wandb: learning curves and a table per variant.

    python -m ppo_research.report outputs/multirun/2026-11-24/12-00-00 [more dirs] [--out DIR]
    python -m ppo_research.report outputs/sweeps/<study>            # an Optuna study's trial runs

Runs are found under the given directories (``tools.results``: a run directory holds
``metrics.jsonl`` and ``run.json`` or ``.hydra/config.yaml``), grouped per env by the config
values that vary between them (seed is the replicate axis), and summarised over seeds with
percentile-bootstrap 95% confidence intervals (``tools.stats``).
Writes ``curves.png``, ``summary.md``/``summary.csv`` and, with a normalisation,
``normalized.md``/``normalized.csv`` (random policy = 0, a named reference = 1).
"""
from __future__ import annotations

import argparse
import csv
import functools
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from ..run.compose import CONF_DIR, GROUPS
from .results import FACET, ResultsError, Run, finished, find_runs, load_yaml
from .stats import aggregate, bootstrap_ci, normalize_score

IGNORED_KEYS = {"seed", "progress", "resume", "logger.name", "logger.group", "logger.tags", "logger.notes"}
MISSING = "<unset>"


# -- grouping into variants ----------------------------------------------------------------------

@dataclass
class Variant:
    env: str
    label: str
    runs: list[Run] = field(default_factory=list)


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
    keys = sorted(set().union(*(run.config for run in runs)) - IGNORED_KEYS)
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


def summarize(variants: list[Variant], final: str = "auto", normalization: Optional[Normalization] = None,
              n_boot: int = 2000) -> list[dict]:
    """One row per (env, variant): seeds, final return mean/std/IQM with bootstrap CIs, steps,
    wall time, SPS, and (with a normalisation) the normalised score."""
    rows = []
    for v in variants:
        finals = [final_return(r.summary, final) for r in v.runs]
        x = np.array([f for f, _ in finals])
        mean_ci, iqm_ci = bootstrap_ci(x, "mean", n_boot=n_boot), bootstrap_ci(x, "iqm", n_boot=n_boot)
        rows.append({
            "env": v.env, "variant": v.label, "n_seeds": len(x),
            "seeds": " ".join(str(r.seed) for r in v.runs),
            "final_key": "/".join(sorted({k for _, k in finals})),
            "final_mean": float(x.mean()), "final_std": float(x.std(ddof=1)) if len(x) > 1 else math.nan,
            "final_mean_ci_low": mean_ci[0], "final_mean_ci_high": mean_ci[1],
            "final_iqm": aggregate(x, "iqm"), "final_iqm_ci_low": iqm_ci[0], "final_iqm_ci_high": iqm_ci[1],
            "steps": float(np.mean([r.summary["global_step"] for r in v.runs])),
            "wall_time_s": float(np.mean([r.summary["wall_time_s"] for r in v.runs])),
            "sps": float(np.mean([r.summary["sps"] for r in v.runs])),
            "_finals": x,
        })
    if normalization is not None:
        refs = normalization.references(rows)
        for row in rows:
            scores = np.array([normalization(row["env"], f, refs.get(row["env"])) for f in row["_finals"]])
            row["normalized_mean"] = float(scores.mean())
            row["normalized_ci_low"], row["normalized_ci_high"] = (
                bootstrap_ci(scores, n_boot=n_boot) if np.isfinite(scores).all() else (math.nan, math.nan))
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

def run_curve(run: Run, metric: str, smooth: int = 1) -> tuple[np.ndarray, np.ndarray]:
    points = [(m["global_step"], m[metric]) for m in run.metrics if m.get(metric) is not None]
    if not points:
        return np.zeros(0), np.zeros(0)
    x, y = map(np.asarray, zip(*points))
    if smooth > 1 and len(y) >= smooth:  # trailing moving average, same length
        c = np.cumsum(np.insert(y.astype(float), 0, 0.0))
        y = np.concatenate([c[1:smooth] / np.arange(1, smooth), (c[smooth:] - c[:-smooth]) / smooth])
    return x.astype(float), y.astype(float)


def variant_curve(variant: Variant, metric: str, smooth: int = 1, n_boot: int = 1000):
    """Seeds interpolated onto their common step range; mean and bootstrap band over seeds."""
    curves = [c for c in (run_curve(r, metric, smooth) for r in variant.runs) if len(c[0])]
    if not curves:
        return None
    lo, hi = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    grid = np.unique(np.concatenate([x[(x >= lo) & (x <= hi)] for x, _ in curves]))
    if not len(grid):
        return None
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])  # (seeds, steps)
    low, high = bootstrap_ci(ys, "mean", n_boot=n_boot)
    return grid, ys.mean(axis=0), low, high


def plot_curves(variants: list[Variant], path: Path, metric: str = "episode_return", smooth: int = 1) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({v.env for v in variants})
    cols = min(3, len(envs))
    rows = -(-len(envs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
    for ax, env in zip(axes.flat, envs):
        for v in (v for v in variants if v.env == env):
            curve = variant_curve(v, metric, smooth)
            if curve is None:
                continue
            x, mean, low, high = curve
            (line,) = ax.plot(x, mean, label=f"{v.label} (n={len(v.runs)})")
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set(title=env, xlabel="global_step", ylabel=metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(envs):]:
        ax.set_visible(False)
    fig.suptitle(f"{metric}: mean over seeds, 95% bootstrap CI")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- writing tables ------------------------------------------------------------------------------

CSV_COLUMNS = ["env", "variant", "n_seeds", "seeds", "final_key", "final_mean", "final_std", "final_mean_ci_low",
               "final_mean_ci_high", "final_iqm", "final_iqm_ci_low", "final_iqm_ci_high", "steps", "wall_time_s",
               "sps"]
NORM_COLUMNS = ["normalized_mean", "normalized_ci_low", "normalized_ci_high"]


def _fmt(value, digits: int = 4) -> str:
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()})
    return path


def final_description(final: str) -> str:
    if final == "auto":
        return ("eval_return (deterministic policy, summary.json), or train_return (mean of the last 20 training "
                "episodes) for runs that did not evaluate")
    return f"summary.json {final}"


def markdown_summary(rows: list[dict], final: str, normalization: Optional[Normalization]) -> str:
    keys = sorted({k for r in rows for k in r["final_key"].split("/")})
    head = ["env", "variant", "seeds", f"final return [{'/'.join(keys)}] mean ± std", "mean 95% CI",
            "IQM [95% CI]", "steps", "wall time (s)", "SPS"]
    if normalization is not None:
        head.append(f"normalised (random=0, {normalization.name}=1) [95% CI]")
    lines = [f"Final return: {final_description(final)}. Intervals: 95% percentile bootstrap over seeds.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["env"], r["variant"], str(r["n_seeds"]), f"{_fmt(r['final_mean'])} ± {_fmt(r['final_std'])}",
                 f"[{_fmt(r['final_mean_ci_low'])}, {_fmt(r['final_mean_ci_high'])}]",
                 f"{_fmt(r['final_iqm'])} [{_fmt(r['final_iqm_ci_low'])}, {_fmt(r['final_iqm_ci_high'])}]",
                 f"{r['steps']:.0f}", f"{r['wall_time_s']:.1f}", f"{r['sps']:.0f}"]
        if normalization is not None:
            cells.append(f"{_fmt(r['normalized_mean'], 3)} [{_fmt(r['normalized_ci_low'], 3)}, "
                         f"{_fmt(r['normalized_ci_high'], 3)}]")
        lines.append("| " + " | ".join(cells) + " |")
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
                 n_boot: int = 2000) -> dict[str, Path]:
    """Find, group and summarise the runs under ``paths``; returns the files written."""
    runs = finished(find_runs(paths), paths)
    variants = group_runs(runs)
    rows = summarize(variants, final, normalization, n_boot)
    out = Path(out) if out is not None else Path(paths[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    columns = CSV_COLUMNS + (NORM_COLUMNS if normalization is not None else [])
    files = {"curves": plot_curves(variants, out / "curves.png", curve, smooth),
             "summary_csv": write_csv(out / "summary.csv", rows, columns)}
    (out / "summary.md").write_text(markdown_summary(rows, final, normalization))
    files["summary_md"] = out / "summary.md"
    if normalization is not None:
        envs, table = normalized_table(rows)
        files["normalized_csv"] = write_csv(out / "normalized.csv", table, ["variant", *envs, "mean over envs"])
        (out / "normalized.md").write_text(markdown_normalized(envs, table, normalization.name))
        files["normalized_md"] = out / "normalized.md"
    return files


# -- command line --------------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ppo_research.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="run, multirun or Optuna study directories")
    parser.add_argument("--out", help="output directory (default: <first dir>/report)")
    parser.add_argument("--final", default="auto",
                        help="summary.json key scored as the final return: auto (eval_return, else train_return), "
                             "eval_return, train_return, train_return_last100, ... (default: auto)")
    parser.add_argument("--curve", default="episode_return",
                        help="metrics.jsonl key plotted against global_step (default: episode_return)")
    parser.add_argument("--smooth", type=int, default=1, help="moving-average window over iterations (default: 1)")
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
        files = write_report(args.dirs, args.out, args.final, args.curve, args.smooth, normalization, args.bootstrap)
    except ResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in files.values():
        print(path)
    return 0

