"""Finished runs beside CleanRL's published ppo_continuous_action figures, scored as CleanRL scores.

    python -m ppo_research.cleanrl_table outputs/long_runs/mujoco_1m [more dirs] [--out FILE.md]

CleanRL's table is made by openrlbenchmark's ``rlops`` (``compare``): a run's score is the mean
return of its last 100 training episodes, and a task's cell is the mean ± std of those scores
over its runs, the std numpy's default (``ndarray.std``: ddof=0, the population standard
deviation). Here a run's score is its summary.json ``train_return_last100`` (the last 100 training
episodes' raw returns, before any reward normalisation) and the std is taken the same way; the
table also gives the sample std (ddof=1, the report's) and the t-interval of the mean over seeds,
and says per task whether our mean reaches CleanRL's. Runs of one seed are averaged first, as
the report does; the seeds are listed so a reader sees them.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .cli_common import OneLineParser, OutputError, check_output_file, error_line, write_output
from .report import Variant, group_runs, run_score
from .results import ResultsError, find_runs, finished
from .stats import MIN_SEEDS_FOR_CI, t_interval

#: CleanRL's ppo_continuous_action at 1M steps on the MuJoCo v4 tasks, mean ± std over its seeds,
#: as its documentation publishes them (docs.cleanrl.dev, PPO, ppo_continuous_action.py).
CLEANRL_PPO_CONTINUOUS = {
    "HalfCheetah-v4": (2905.85, 1129.37),
    "Walker2d-v4": (2890.97, 231.40),
    "Hopper-v4": (2051.80, 313.94),
    "InvertedPendulum-v4": (950.98, 36.39),
}
SCORE_KEY = "train_return_last100"


def seed_scores(variant: Variant) -> tuple[list, np.ndarray]:
    """The variant's seeds and their scores (``SCORE_KEY``; the runs of one seed averaged)."""
    seeds = list(variant.by_seed())
    scores = [np.mean([run_score(r, SCORE_KEY)[0] for r in runs]) for runs in variant.by_seed().values()]
    return seeds, np.array(scores, float)


def rows(variants: list[Variant], published: dict = CLEANRL_PPO_CONTINUOUS) -> list[dict]:
    """One row per (env, variant): our mean, both stds, the t-interval of the mean (from
    ``MIN_SEEDS_FOR_CI`` seeds), CleanRL's mean ± std for the env (None where it has none)."""
    out = []
    for v in variants:
        seeds, x = seed_scores(v)
        interval = t_interval(x) if len(x) >= MIN_SEEDS_FOR_CI else (math.nan, math.nan)
        out.append({"env": v.env, "variant": v.label, "seeds": seeds, "mean": float(x.mean()),
                    "std": float(x.std()), "sample_std": float(x.std(ddof=1)) if len(x) > 1 else math.nan,
                    "interval": interval, "cleanrl": published.get(v.env)})
    return out


def _f(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.2f}"


def markdown(table: list[dict]) -> str:
    lines = [f"Score of a run: summary.json {SCORE_KEY} (the mean raw return of its last 100 training episodes). "
             "Per task: mean ± std over seeds, the std with ddof=0 as CleanRL's table (openrlbenchmark rlops) "
             f"takes it; the sample std (ddof=1) and the 95% t-interval of the mean (given with {MIN_SEEDS_FOR_CI} "
             "seeds or more) beside it. CleanRL: ppo_continuous_action.py at 1M steps, the figures its "
             "documentation publishes.", "",
             "| env | variant | seeds | ours: mean ± std | sample std | 95% t-interval of the mean | CleanRL: mean ± std "
             "| ours − CleanRL | mean reaches CleanRL's |",
             "|---|---|---|---:|---:|---|---:|---:|---|"]
    for r in table:
        ref = r["cleanrl"]
        low, high = r["interval"]
        interval = f"[{_f(low)}, {_f(high)}]" if math.isfinite(low) else f"– (fewer than {MIN_SEEDS_FOR_CI} seeds)"
        cells = [r["env"], r["variant"], f"{len(r['seeds'])} ({', '.join(map(str, r['seeds']))})",
                 f"{_f(r['mean'])} ± {_f(r['std'])}", _f(r["sample_std"]), interval,
                 f"{_f(ref[0])} ± {_f(ref[1])}" if ref else "– (not in CleanRL's table)",
                 _f(r["mean"] - ref[0]) if ref else "–",
                 ("yes" if r["mean"] >= ref[0] else "no") if ref else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m ppo_research.cleanrl_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="run or multirun directories (e.g. a mujoco_1m sweep)")
    parser.add_argument("--out", help="also write the table to this markdown file")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if args.out:
            check_output_file(args.out, "table")
        text = markdown(rows(group_runs(finished(find_runs(args.dirs), args.dirs))))
        if args.out:
            write_output(Path(args.out), text, "table")
    except (ResultsError, OutputError) as err:
        error_line(str(err))
        return err.status
    print(text, end="")
    return 0
