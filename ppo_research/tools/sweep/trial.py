"""One trial: sample its parameters, train each (seed, env) run in turn, return its score.

A run is exactly ``python -m ppo_research <spec.run_overrides(...)>``: composed by
``run.compose.compose`` and trained by ``run.train.train_from_config`` (no Hydra runtime, the
same checks) in ``<study>/trials/<number>/<env>-s<seed>/`` (``s<seed>`` for one env), which the
trainer describes with its ``run.json`` like any run directory.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import optuna

from ...run.compose import compose
from ..stats import aggregate
from .spec import TRIAL_DEFAULTS, Spec, param_overrides


class Interrupted(Exception):
    """The sweep command went away (its worker stops); the trial does not count."""


def run_name(env: Optional[str], seed: int) -> str:
    return f"{env}-s{seed}" if env else f"s{seed}"


def trial_dir(spec: Spec, number: int) -> Path:
    return spec.study_dir / "trials" / f"{number:04d}"


def run_trial(spec: Spec, trial: optuna.Trial, parent_pid: Optional[int]) -> float:
    """Train every (seed, env) of the trial in turn and return the aggregated score.

    Intermediate values: each periodic evaluation reports its (normalised) eval return at
    step = environment steps the trial has used so far, summed over its earlier runs. Trials
    thus compare at equal cost and equal position in the seed/env order, and one pruning
    decision can stop the whole trial during its first seed.
    """
    from ...run.train import train_from_config  # torch: imported by the worker that trains

    params = {p.key: p.suggest(trial) for p in spec.params}
    trial.set_user_attr("overrides", param_overrides(params))
    scores, offset = [], 0
    for seed in spec.seeds:
        for env in spec.env_runs():
            name = run_name(env, seed)
            overrides = TRIAL_DEFAULTS + spec.run_overrides(params, env, seed)
            composed = compose(overrides)
            cfg = composed.cfg
            if "job_type" in cfg.logger:  # wandb: one run per (trial, seed, env), grouped by study
                cfg.logger.job_type = "sweep-trial"
                cfg.logger.group = spec.study
                cfg.logger.name = f"{spec.study}-t{trial.number:04d}-{name}"
                cfg.logger.notes = (f"optuna trial {trial.number} of study {spec.study}: "
                                    f"{' '.join(param_overrides(params))}")
            evals: list[float] = []

            def on_evaluation(iteration: int, global_step: int, eval_return: float, env=env, offset=offset) -> None:
                if parent_pid is not None and os.getppid() != parent_pid:
                    raise Interrupted("the sweep command is gone")
                evals.append(eval_return)
                trial.report(spec.normalise(env, eval_return), offset + global_step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {offset + global_step}")

            summary = train_from_config(cfg, trial_dir(spec, trial.number) / name, composed.choices,
                                        on_evaluation=on_evaluation, overrides=overrides)
            offset += summary["global_step"]
            value = sum(evals) / len(evals) if spec.metric == "eval_auc" and evals else summary.get(spec.metric)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"run {name} gave {spec.metric}={value!r}")
            trial.set_user_attr(f"{spec.metric}/{name}", value)
            scores.append(spec.normalise(env, value))
    return aggregate(scores, spec.aggregate)
