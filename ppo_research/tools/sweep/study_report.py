"""The study's report: every trial (CSV + Markdown), the best one, importances, the history plot.

    <study>/trials.csv, trials.md   state, value and its nominal 95% interval over the trial's runs
                                    (``_ci``; blank below 3 runs), params, last reported step, duration, error
    <study>/best.json               best trial, value, params, counts, importances, and the commands
                                    that reproduce the best trial's numbers (``reproduce_commands``)
    <study>/best_overrides.txt      the best config as Hydra overrides (one line, each key once)
    <study>/history.png             optimisation history: the objective named on the y axis,
                                    integer trial numbers on the x axis

The per-run scores come from the trials themselves (``<metric>/<run>`` attributes, so trials run
on other machines count too); their aggregate and interval from ``tools.stats``. The trial runs
on this machine are ordinary run directories: ``python -m ppo_research.report <study folder>``
gives their curves and per-variant table.
"""
from __future__ import annotations

import csv
import json
import math
import shlex
import warnings
from pathlib import Path
from typing import Any, Optional

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from optuna.trial import TrialState

from ..results import find_run_dirs
from ..stats import INTERVAL_METHOD, METHOD_NAMES, MIN_SEEDS_FOR_CI, confidence_interval, coverage_text
from .spec import Spec, param_overrides
from .trial import run_name, trial_dir

# matplotlib and optuna's plotting are imported where the figure is drawn (slow imports).


def effective_overrides(overrides: list[str]) -> list[str]:
    """``overrides`` with each plain ``key=value`` once: the last one, which is the one Hydra
    applies (``env=pendulum ... env=cartpole`` -> ``env=cartpole``), at its place. Overrides that
    add or delete keys (``+key=``, ``++key=``, ``~key``) are kept as they are."""

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # noqa: BLE001 - not expected (the trials composed them): leave them as they are
        return list(overrides)
    last = {(o.key_or_group, o.package): i for i, o in enumerate(parsed) if o.type == OverrideType.CHANGE}
    return [text for i, (text, o) in enumerate(zip(overrides, parsed))
            if o.type != OverrideType.CHANGE or last[(o.key_or_group, o.package)] == i]


def trial_label(t: optuna.trial.FrozenTrial) -> str:
    if t.state == TrialState.FAIL:
        return "FAIL" if "error" in t.user_attrs else ("SKIPPED" if "skipped" in t.user_attrs else "INTERRUPTED")
    return t.state.name


def run_scores(spec: Spec, t: optuna.trial.FrozenTrial) -> list[float]:
    """The (normalised) score of each run the trial finished, in seed/env order."""
    scores = []
    for seed in spec.seeds:
        for env in spec.env_runs():
            value = t.user_attrs.get(f"{spec.metric}/{run_name(env, seed)}")
            if isinstance(value, (int, float)) and math.isfinite(value):
                scores.append(spec.normalise(env, value))
    return scores


def _ci(spec: Spec, scores: list[float]):
    """The nominal 95% interval of the objective over a trial's runs, as the report gives it
    (``stats.confidence_interval``: the t-interval for a mean, the percentile bootstrap for a
    median or IQM); None below 3 runs (too few for a confidence interval)."""
    return list(confidence_interval(scores, spec.aggregate)) if len(scores) >= MIN_SEEDS_FOR_CI else None


def ci_text(spec: Spec) -> str:
    """What ``ci_low``/``ci_high`` are and how much such an interval covers at few runs."""
    method = INTERVAL_METHOD[spec.aggregate]
    return (f"nominal 95% {METHOD_NAMES[method]} of the {spec.aggregate} over the trial's runs (from "
            f"{MIN_SEEDS_FOR_CI} runs on); {coverage_text(spec.aggregate, method, unit='runs')}")


def objective_label(spec: Spec) -> str:
    """What a trial's value is, e.g. ``mean eval_return over 2 seeds (maximize)``."""
    normalised = any(isinstance(n, dict) and "random" in n for n in spec.envs.values())
    runs = f"{len(spec.seeds)} seed{'s' if len(spec.seeds) != 1 else ''}"
    if len(spec.env_runs()) > 1:
        runs += f" x {len(spec.env_runs())} envs"
    return f"{spec.aggregate} {'normalised ' if normalised else ''}{spec.metric} over {runs} ({spec.direction})"


def trial_rows(spec: Spec, trials: list) -> tuple[list[str], list[list]]:
    keys = [p.key for p in spec.params]
    header = ["number", "state", "value", *keys, "runs", "ci_low", "ci_high", "last_step", "duration_s", "error"]
    rows = []
    for t in trials:
        steps = t.intermediate_values
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        scores = run_scores(spec, t) if t.state == TrialState.COMPLETE else []
        low, high = _ci(spec, scores) or (None, None)
        rows.append([t.number, trial_label(t), t.value, *[t.params.get(k) for k in keys], len(scores), low, high,
                     max(steps) if steps else None, None if duration is None else round(duration, 1),
                     t.user_attrs.get("error") or t.user_attrs.get("interrupted") or ""])
    return header, rows


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(v: Any) -> str:
        return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "/"))

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_report(spec: Spec, study: optuna.Study) -> dict:
    """Best params, all trials (CSV + Markdown), importances, history plot, best overrides."""
    out = spec.study_dir
    out.mkdir(parents=True, exist_ok=True)
    trials = [t for t in study.get_trials(deepcopy=False) if trial_label(t) != "SKIPPED"]
    header, rows = trial_rows(spec, trials)
    with open(out / "trials.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    (out / "trials.md").write_text(f"ci_low, ci_high: {ci_text(spec)}.\n\n" + markdown_table(header, rows))

    result: dict = {"study": spec.study, "storage": spec.storage, "direction": spec.direction,
                    "metric": spec.metric, "aggregate": spec.aggregate, "seeds": spec.seeds,
                    "counts": {s: sum(trial_label(t) == s for t in trials)
                               for s in ("COMPLETE", "PRUNED", "FAIL", "INTERRUPTED")}}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        scores = run_scores(spec, best)
        base = effective_overrides(spec.overrides + param_overrides(best.params))
        result.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                      best_value_ci=_ci(spec, scores),
                      best_overrides=base, reproduce=reproduce_commands(spec, best),
                      best_runs=[str(p) for p in find_run_dirs(trial_dir(spec, best.number))]
                      if trial_dir(spec, best.number).is_dir() else [])
        (out / "best_overrides.txt").write_text(" ".join(base) + "\n")
    result["importances"] = importances(study, complete)
    (out / "best.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    if complete:
        plot_history(study, out / "history.png", objective_label(spec))
    return result


def trained_in_population(spec: Spec, t: optuna.trial.FrozenTrial) -> bool:
    """Whether the trial's runs trained as members of a population of several runs (``--population``:
    the trials trained together, each with every seed), rather than each alone."""
    together = t.user_attrs.get("population")
    return isinstance(together, list) and len(together) * len(spec.seeds) > 1


def rerun_dir(spec: Spec, number: int, env: Optional[str]) -> Path:
    """Where the reproduce command re-runs trial ``number``'s population on ``env``: beside the study
    folder, not in it, so that the study's report does not count the re-run's runs twice."""
    suffix = f"-{env}" if len(spec.env_runs()) > 1 else ""
    return spec.study_dir.parent / f"{spec.study}-t{number:04d}-rerun{suffix}"


def reproduce_commands(spec: Spec, t: optuna.trial.FrozenTrial) -> list[str]:
    """The commands that train the trial's runs again with the numbers they had. A run trained
    alone is ``python -m ppo_research <its overrides>``, one command per seed and env. A member of a
    population has its solo run's distribution but not its numbers (docs/populations.md): its
    population is trained again with ``python -m ppo_research.rerun``, one command per env."""
    if not trained_in_population(spec, t):
        return [" ".join(["python -m ppo_research", *effective_overrides(spec.run_overrides(t.params, env, seed))])
                for env in spec.env_runs() for seed in spec.seeds]
    commands = []
    for env in spec.env_runs():
        member = trial_dir(spec, t.number) / run_name(env, spec.seeds[0])  # any run of the trial names the population
        out = rerun_dir(spec, t.number, env)
        commands.append(shlex.join(["python", "-m", "ppo_research.rerun", str(member), "--out", str(out)]))
    return commands


def importances(study: optuna.Study, complete: list) -> dict:
    if len(complete) < 3 or len({t.value for t in complete}) < 2:
        return {"note": f"needs >= 3 complete trials with different values; have {len(complete)} complete, "
                        f"{len({t.value for t in complete})} distinct value(s)"}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except Exception as err:  # e.g. a parameter that never varied
        return {"note": f"not computed: {type(err).__name__}: {err}"}


def history_figure(study: optuna.Study, objective: str):
    """Optuna's optimisation history with the objective on the y axis and integer trial ticks."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib.ticker import MaxNLocator
    from optuna.visualization.matplotlib import plot_optimization_history

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backend is flagged experimental
        ax = plot_optimization_history(study, target_name=objective)
    ax.set_ylabel(objective)
    ax.set_xlabel("trial number")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Optimisation history: {objective}")
    handles, labels = ax.get_legend_handles_labels()  # optuna's legend sits outside and squeezes the axes
    names = {objective: "trial value", "Best Value": "best so far"}
    ax.legend(handles, [names.get(label, label) for label in labels], loc="best", fontsize="small")
    ax.figure.set_size_inches(8, 4.5)
    return ax.figure


def plot_history(study: optuna.Study, path: Path, objective: str = "objective value") -> None:
    import matplotlib.pyplot as plt

    fig = history_figure(study, objective)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
