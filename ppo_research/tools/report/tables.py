"""The report's tables: summary.md and summary.csv, normalized.md/.csv, and the sentences that
say what each interval, band and score is."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Optional, Sequence

from ..cli_common import write_output
from ..stats import (
    INTERVAL_METHOD,
    METHOD_NAMES,
    MIN_SEEDS_FOR_CI,
    coverage_text,
    interval_label,
)
from .scores import EVAL_MEAN, Normalization
from .variants import SPLIT_VARIANT


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


CSV_COLUMNS = ["env", "key", "variant", "n_seeds", "n_runs", "seeds", "final_key", "final_mean", "final_std",
               "final_min", "final_max", "interval", "final_mean_ci_low", "final_mean_ci_high", "final_iqm",
               "iqm_interval", "final_iqm_ci_low", "final_iqm_ci_high", "steps", "wall_time_s", "sps"]


NORM_COLUMNS = ["normalized_mean", "normalized_ci_low", "normalized_ci_high"]


def fmt_number(value, digits: int = 4) -> str:
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
    return f"[{fmt_number(float(interval[0]), digits)}, {fmt_number(float(interval[1]), digits)}] {label}"


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
                 f"{fmt_number(r['final_mean'])} ± {fmt_number(r['final_std'])}", _interval_text(r["_mean_interval"], n),
                 f"{fmt_number(r['final_iqm'])} {_interval_text(r['_iqm_interval'], n, how='iqm')}",
                 f"{r['steps']:.0f}", f"{r['wall_time_s']:.1f}", f"{r['sps']:.0f}"]
        if normalization is not None:
            cells.append(f"{fmt_number(r['normalized_mean'], 3)} {_interval_text(r['_normalized_interval'], n, 3)}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Key (the legends of curves.png and profiles.png):", "", "| key | variant |", "|---|---|"]
    lines += [f"| {key} | {label} |" for label, key in keys.items()]
    return "\n".join(lines) + "\n"


def markdown_normalized(envs: list[str], table: list[dict], name: str) -> str:
    head = ["variant", *envs, "mean over envs"]
    lines = [f"Normalised final return per env (random policy = 0, {name} = 1), mean over seeds.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([row["variant"]] + [fmt_number(row.get(c, math.nan), 3) for c in head[1:]]) + " |"
              for row in table]
    return "\n".join(lines) + "\n"
