"""Optuna studies over PPO hyperparameters.

    python -m ppo_research.sweep sweeps/<spec>.yaml [hydra overrides] [--trials N] [--workers N]
                                 [--population N] [--storage URL] [--study NAME] [--out DIR]

A spec (YAML, see docs/sweeps.md) names the study, the Hydra overrides every trial runs with, the
search space, the objective, the trial budget, the seeds per trial, the sampler and the pruner.
The study lives in a persistent storage (default: SQLite at <out>/<study>/study.db), so running
the command again continues it. Each worker is one process running trials in turn against the
shared storage; more machines join by running the same command with the same ``--storage``.
With ``--population N`` a worker trains N trials at a time together, as populations whose
members are the trials' runs (run/loop/train.py); each trial is still reported and pruned alone.

Trial budget: ``trials`` counts trials that ended because of the objective - complete, pruned or
failed with an error. A trial whose process died (kill, Ctrl-C, lost machine) is marked FAIL with
``interrupted`` and does not count, so a re-run fills its place. A worker that is a SLURM job
(``--workers 1`` in an sbatch array) resumes its trials after a preemption instead (slurm.py).
"""
from __future__ import annotations

import signal
import time
from typing import Optional

import optuna

from ...errors import EXIT_BAD_INPUT, ConfigError
from ...run.console import write_line
from ..cli_common import OneLineParser
from .space import check_search_space
from .spec import Spec, SpecError, load_spec
from .storage import create_study
from .study_report import write_report
from .workers import run_workers


def run(spec: Spec) -> dict:
    """Create or continue the study, run the workers, and write the report."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_search_space(spec)
    try:
        spec.study_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SpecError(f"cannot make the study folder {spec.study_dir} (--out): {err.strerror}: {err.filename}") \
            from None
    study = create_study(spec)
    together = f", populations of {spec.population} trials" if spec.population > 1 else ""
    print(f"study {spec.study}: {spec.trials} trials, {spec.workers} worker(s){together}, storage {spec.storage}",
          flush=True)
    start = time.perf_counter()
    codes = run_workers(spec)
    result = write_report(spec, study)  # also when a worker died: the study is consistent
    print(f"done in {time.perf_counter() - start:.0f}s: {result['counts']}; "
          f"best {result.get('best_value')} with {result.get('best_params')}; report in {spec.study_dir} "
          f"(runs: python -m ppo_research.report {spec.study_dir})", flush=True)
    for command in result.get("reproduce", []):  # the best trial's numbers again (docs/sweeps.md)
        print(f"reproduce trial {result['best_trial']}: {command}", flush=True)
    failed = [c for c in codes if c]
    if failed:
        raise WorkersDied(codes)
    return result


class WorkersDied(Exception):
    """Some worker processes ended abnormally; the study and its report are consistent."""

    def __init__(self, codes: list[int]):
        self.codes = codes
        first = next(c for c in codes if c)
        self.status = 128 - first if first < 0 else first  # a signal N as the shell says it: 128 + N
        super().__init__(f"{sum(1 for c in codes if c)} of {len(codes)} worker(s) ended abnormally (exit codes "
                         f"{codes}); their unfinished trials are marked interrupted and do not count; re-run the "
                         f"same command to fill their places")


def main(argv: Optional[list[str]] = None) -> int:
    parser = OneLineParser(prog="python -m ppo_research.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("spec", help="study spec, e.g. sweeps/gae_lambda.yaml")
    parser.add_argument("overrides", nargs="*", default=[], help="Hydra overrides added to the spec's for every trial")
    parser.add_argument("--trials", type=int, help="trial budget (total over all workers and re-runs)")
    parser.add_argument("--workers", type=int, help="worker processes on this machine")
    parser.add_argument("--population", type=int,
                        help="trials each worker trains together as one population (default: the spec's, else 1)")
    parser.add_argument("--storage", help="optuna storage URL: sqlite:///<path>, postgresql+psycopg://USER@HOST/DB "
                                          "(psycopg 3), journal:<path> "
                                          "(default: sqlite:///<out>/<study>/study.db)")
    parser.add_argument("--study", help="study name: letters, digits, '_', '-', '.'; the folder <out>/<study> "
                                        "(default: the spec's)")
    parser.add_argument("--out", default="outputs/sweeps", help="folder holding <study>/ (default outputs/sweeps)")
    args = parser.parse_intermixed_args(argv)
    try:
        spec = load_spec(args.spec, args.overrides, args.trials, args.workers, args.storage, args.study, args.out,
                         population=args.population)
        run(spec)
    except (SpecError, ConfigError) as err:
        write_line(f"error: {err}")
        return EXIT_BAD_INPUT
    except WorkersDied as err:
        write_line(f"error: {err}")
        return err.status
    except KeyboardInterrupt as err:  # Ctrl-C, or a trial's clean stop (TrainingInterrupted: SIGINT or SIGTERM)
        write_line(f"interrupted: {getattr(err, 'continue_with', None) or 're-run the same command to continue the study'}")
        return 128 + getattr(err, "signum", signal.SIGINT)
    return 0
