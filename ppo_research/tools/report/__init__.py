"""``python -m ppo_research.report``: review finished runs without wandb (cli.py says what it writes).

    variants.py   runs grouped into variants per env, and their labels
    scores.py     a run's score, a variant's summary over seeds, normalised scores
    curves.py     learning curves and the curves figure
    aggregate.py  IQM, performance profiles, probability of improvement
    tables.py     summary.md/.csv, normalized.md/.csv, what each interval and score is
    cli.py        write_report and the command line
"""
from .aggregate import aggregate_groups, aggregate_stats
from .cli import main, write_report
from .curves import LEGEND_CHARS, curves_figure, variant_curve
from .scores import EVAL_MEAN, Normalization, normalized_table, run_score, summarize
from .tables import CONVENTIONS, write_csv
from .variants import Variant, group_runs

__all__ = ["CONVENTIONS", "EVAL_MEAN", "LEGEND_CHARS", "Normalization", "Variant", "aggregate_groups",
           "aggregate_stats", "curves_figure", "group_runs", "main", "normalized_table", "run_score", "summarize",
           "variant_curve", "write_csv", "write_report"]
