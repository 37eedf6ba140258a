"""The aggregate statistics of Agarwal et al. (2021) over a report's variants: IQM, performance
profiles and probability of improvement, as a markdown table and a figure."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..stats import (
    MIN_SEEDS_FOR_CI,
    coverage_text,
    performance_profile,
    performance_profile_ci,
    pooled_iqm,
    pooled_iqm_ci,
    probability_of_improvement,
    probability_of_improvement_ci,
)
from .curves import abbreviate, legend_below, line_styles
from .scores import Normalization
from .tables import CONVENTIONS, IQM_CONVENTION, fmt_number


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
    return f"[{fmt_number(interval[0], digits)}, {fmt_number(interval[1], digits)}]"


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
                poi = fmt_number(st.improvement[(best, l)], 3) + (
                    f" {_interval_cell(st.improvement_ci[(best, l)])}" if st.improvement_ci else "")
            lines.append(f"| {keys[l]} | {l} | {fmt_number(st.iqm[l])} | {interval} | {poi} |")
        if len(labels) > 1:
            lines += ["", "P(row > column):", "",
                      "| | " + " | ".join(keys[l] for l in labels) + " |", "|---|" + "---:|" * len(labels)]
            for x in labels:
                lines.append(f"| {keys[x]} | " + " | ".join(
                    "–" if x == y else fmt_number(st.improvement[(x, y)], 2) for y in labels) + " |")
        lines.append("")
    return "\n".join(lines)


def profiles_figure(all_stats: list[AggregateStats], keys: dict[str, str]):
    """Per aggregate group a row of two panels: the IQM of each variant with its interval, and
    the performance profiles with their bands; one legend below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = line_styles(keys)
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
    legend_below(fig, [handles[l] for l in order], [entries[l] for l in order])
    fig.tight_layout()
    return fig
