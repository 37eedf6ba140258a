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
from pathlib import Path
from typing import Optional, Sequence, Union

from ...run.console import write_line
from ..cli_common import OneLineParser, OutputError, check_output_dir, error_line, make_output_dir, write_output
from ..results import ResultsError, find_runs, finished
from .aggregate import aggregate_groups, aggregate_stats, markdown_aggregate, profiles_figure
from .curves import curve_end, figure_png, panel_layout, plot_curves
from .scores import EVAL_MEAN, Normalization, check_evaluation_steps, normalized_table, summarize
from .tables import CSV_COLUMNS, NORM_COLUMNS, markdown_normalized, markdown_summary, write_csv
from .variants import duplicate_seeds, group_runs, variant_keys


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
    panel_layout(variants, split)  # a bad --split fails here, before the output directory is made
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
