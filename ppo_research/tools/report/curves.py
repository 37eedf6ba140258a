"""Learning curves: a run's curve (smoothed), a variant's mean over seeds with its band, where a
curve ends early, and the curves figure (one panel per env, or small multiples with ``--split``).

matplotlib is imported where a figure is drawn: it is slow to import, and the tables need none."""
from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..cli_common import write_output
from ..results import ResultsError, Run
from ..stats import (
    MIN_SEEDS_FOR_CI,
    confidence_interval,
)
from .tables import interval_kinds, panels_text, smoothing_text
from .variants import MISSING, SPLIT_VARIANT, Variant, variant_keys

#: legend entries longer than this are cut (the full label is in summary.md's key table)
LEGEND_CHARS = 38


#: the marker at the end of a curve that stops before its runs do, and what the title says of it
END_MARKER = "x"


END_MARKER_TEXT = ("x: the curve ends before its runs do (a seed has no {metric} after that step; "
                   "summary.md says which)")


def trailing_mean(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average, same length: point i is the mean of points i-window+1 .. i
    (fewer at the start: point 0 is itself, point 1 the mean of the first two, ...)."""
    y = np.asarray(y, float)
    if window <= 1 or not len(y):
        return y
    c = np.concatenate([[0.0], np.cumsum(y)])
    end = np.arange(1, len(y) + 1)
    start = np.maximum(0, end - window)
    return (c[end] - c[start]) / (end - start)


def run_curve(run: Run, metric: str, smooth: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``metric`` against ``global_step`` over the rows that have it (an iteration in which no
    episode ended has no ``episode_return``), smoothed by a trailing moving average over
    ``smooth`` of those rows (``trailing_mean``)."""
    points = [(m["global_step"], m[metric]) for m in run.metrics if m.get(metric) is not None]
    if not points:
        return np.zeros(0), np.zeros(0)
    x, y = map(np.asarray, zip(*points))
    return x.astype(float), trailing_mean(y.astype(float), smooth)


def variant_curve(variant: Variant, metric: str, smooth: int = 1, n_boot: int = 1000):
    """Runs interpolated onto their common step range, the runs of one seed averaged; the mean
    over seeds and its band: the t-interval of the mean from 3 seeds on
    (``stats.confidence_interval``), the min–max of 2, none for 1.
    Returns ``(steps, mean, low, high, n_seeds)`` or None."""
    curves, seeds = [], []
    for seed, runs in variant.by_seed().items():
        for run in runs:
            curve = run_curve(run, metric, smooth)
            if len(curve[0]):
                curves.append(curve)
                seeds.append(seed)
    if not curves:
        return None
    lo, hi = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    grid = np.unique(np.concatenate([x[(x >= lo) & (x <= hi)] for x, _ in curves]))
    if not len(grid):
        return None
    runs_y = np.stack([np.interp(grid, x, y) for x, y in curves])
    ys = np.stack([runs_y[[i for i, s in enumerate(seeds) if s == seed]].mean(axis=0)
                   for seed in dict.fromkeys(seeds)])  # (seeds, steps)
    if len(ys) >= MIN_SEEDS_FOR_CI:
        low, high = confidence_interval(ys, "mean", n_boot=n_boot)
    elif len(ys) == 2:
        low, high = ys.min(axis=0), ys.max(axis=0)
    else:
        low = high = None
    return grid, ys.mean(axis=0), low, high, len(ys)


@dataclass
class CurveEnd:
    """Where a variant's curve ends before its runs do, and the seeds that end it."""

    env: str
    label: str
    metric: str
    end: float  # the curve's last step: the last step every seed has a value at
    last: float  # the variant's last step (its runs' last metrics row)
    ended_by: dict  # seed -> its own last step with a value, for the seeds whose values stop at ``end``
    runs_end: dict  # seed -> True where the seed's run itself ends there (no later rows at all)
    without: list  # seeds with no value at all: the curve is over the others

    def text(self, key: Optional[str] = None) -> str:
        """One line: ``CartPole-v1 V2 loss=klpen: the episode_return curve ends at step 384 of
        512: seed 1 has no episode_return after step 384 (no episode finished in its last
        iterations)``."""
        name = f"{self.env} {key + ' ' if key else ''}{self.label}"
        parts = []
        if self.end < self.last:
            step, why = f"{self.end:.0f}", []
            silent = [s for s in self.ended_by if not self.runs_end.get(s)]
            ended = [s for s in self.ended_by if self.runs_end.get(s)]
            if silent:
                one = len(silent) == 1
                episode = (f" (no episode finished in {'its' if one else 'their'} last iterations)"
                           if self.metric.startswith("episode_") else "")
                why.append(f"{_seeds(silent)} {'has' if one else 'have'} no {self.metric} after step {step}{episode}")
            if ended:
                why.append(f"the run{'' if len(ended) == 1 else 's'} of {_seeds(ended)} "
                           f"end{'s' if len(ended) == 1 else ''} at step {step}")
            parts.append(f"the {self.metric} curve ends at step {step} of {self.last:.0f}: {'; '.join(why)}")
        if self.without:
            one = len(self.without) == 1
            parts.append(f"{_seeds(self.without)} {'has' if one else 'have'} no {self.metric} at all: the curve is "
                         "the mean of the other seeds")
        return f"{name}: {'; '.join(parts)}"


def _seeds(seeds) -> str:
    seeds = [str(s) for s in seeds]
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(seeds)}"


def curve_end(variant: Variant, metric: str) -> Optional[CurveEnd]:
    """Why ``variant_curve(variant, metric)`` stops before the variant's runs do, or leaves a
    seed out; None when its curve runs to its last step over every seed (or there is none)."""
    lasts, run_lasts, without = {}, {}, []
    for seed, runs in variant.by_seed().items():
        for run in runs:
            steps = [m["global_step"] for m in run.metrics if m.get("global_step") is not None]
            x, _ = run_curve(run, metric)
            if not len(x):
                without.append(seed)
                continue
            lasts.setdefault(seed, []).append(float(x[-1]))
            run_lasts.setdefault(seed, []).append(float(max(steps)) if steps else float(x[-1]))
    if not lasts:
        return None
    without = [s for s in dict.fromkeys(without) if s not in lasts]
    end = min(min(v) for v in lasts.values())
    last = max(max(v) for v in run_lasts.values())
    if end >= last and not without:
        return None
    ended_by = {seed: end for seed, v in lasts.items() if min(v) == end} if end < last else {}
    runs_end = {seed: min(run_lasts[seed]) <= end for seed in ended_by}
    return CurveEnd(variant.env, variant.label, metric, end, last, ended_by, runs_end, without)


def band_text(seed_counts) -> str:
    """What the shaded bands are, for the seed counts drawn."""
    return "; ".join(interval_kinds(seed_counts, f"95% t-interval of the mean (>= {MIN_SEEDS_FOR_CI} seeds)",
                                    "min–max of 2 seeds", "none for 1 seed"))


def abbreviate(label: str, width: int = LEGEND_CHARS) -> str:
    """A legend's short form of a variant label: each dotted key by its last part
    (``algo.learning_rate=3e-4`` -> ``learning_rate=3e-4``), cut to ``width`` characters."""
    parts = []
    for part in label.split(", "):
        key, sep, value = part.partition("=")
        parts.append(f"{key.rsplit('.', 1)[-1]}{sep}{value}" if sep else part)
    text = ", ".join(parts)
    return text if len(text) <= width else text[:width - 1].rstrip(", ") + "…"


def line_styles(keys: dict[str, str]) -> dict[str, dict]:
    """A colour and line style per label: tab10 colours, then dashed, dotted, ... past 10."""
    from matplotlib import colormaps

    cmap, styles = colormaps["tab10"], ["-", "--", ":", "-."]
    return {label: {"color": cmap(i % 10), "linestyle": styles[(i // 10) % len(styles)]}
            for i, label in enumerate(keys)}


def _seed_range(counts: list[int]) -> str:
    return f"n={min(counts)}" if min(counts) == max(counts) else f"n={min(counts)}–{max(counts)}"


def legend_below(fig, handles: list, texts: list[str]) -> None:
    """One legend for the whole figure, under the panels, in as many columns as fit its width."""
    width_pt = fig.get_figwidth() * 72
    longest = max((len(t) for t in texts), default=10)
    ncol = max(1, min(len(texts), int(width_pt // (longest * 4.6 + 45))))
    fig.legend(handles, texts, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, fontsize=8,
               frameon=False, handlelength=2.5, columnspacing=1.5)


def _panel_grid(rows: int, cols: int, n_panels: int, width: float = 5.5, height: float = 4.0,
                min_width: float = 8.0):
    """A figure of ``rows`` x ``cols`` panels, those past ``n_panels`` hidden."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(max(width * cols, min_width), height * rows), squeeze=False)
    for ax in list(axes.flat)[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def wrap(text: str, width_inches: float, fontsize: float = 10) -> str:
    """``text`` broken into lines that fit ``width_inches`` at ``fontsize`` points (an average
    character is about 0.55 em wide), each of its own lines wrapped on its own."""
    chars = max(20, int(width_inches * 72 / (0.55 * fontsize)))
    return "\n".join(textwrap.fill(line, chars, break_on_hyphens=False) for line in text.split("\n"))


def legend_entries(variants: list[Variant], keys: dict[str, str]) -> dict[str, str]:
    """label -> legend text: ``V3 loss=klpen (n=5)``, cut to ``LEGEND_CHARS``."""
    counts: dict[str, list[int]] = {}
    for v in variants:
        counts.setdefault(v.label, []).append(v.n_seeds)
    return {label: f"{key} {abbreviate(label)} ({_seed_range(counts[label])})"
            for label, key in keys.items() if label in counts}


#: at most this many panels side by side when the curves are split (an env's panels wrap)
SPLIT_COLUMNS = 4


def panel_of(variant: Variant, split: Optional[str]) -> str:
    """The panel a variant's curve goes to within its env: ``""`` (one panel per env), the
    variant's label (``split="variant"``), or ``KEY=value`` where ``split`` is a config group
    (``loss``: its choice) or a config key (``loss.epsilon``). A key that differs between the
    runs of one variant cannot split them: ResultsError."""
    if not split:
        return ""
    if split == SPLIT_VARIANT:
        return variant.label
    key = f"choices.{split}" if any(f"choices.{split}" in r.config for r in variant.runs) else split
    values = {repr(r.config.get(key, MISSING)) for r in variant.runs}
    if len(values) > 1:
        raise ResultsError(f"--split {split}: its value differs between the seeds of {variant.env} {variant.label} "
                           f"({', '.join(sorted(values))}); split by a group or key that names variants")
    value = variant.runs[0].config.get(key, MISSING)
    return f"{split}={value}"


def panel_layout(variants: list[Variant], split: Optional[str]) -> tuple[list[tuple[str, str]], int, int]:
    """The panels, (env, panel_of) in order, and the grid's rows and columns: without a split up
    to 3 envs a row; with one, each env starts a row and its panels wrap after SPLIT_COLUMNS."""
    envs = sorted({v.env for v in variants})
    if split and split != SPLIT_VARIANT and not any(
            f"choices.{split}" in r.config or split in r.config for v in variants for r in v.runs):
        raise ResultsError(f"--split {split}: no run has a config group or key {split!r} (e.g. --split loss, "
                           f"--split loss.epsilon, --split {SPLIT_VARIANT})")
    per_env = {env: sorted({panel_of(v, split) for v in variants if v.env == env}) for env in envs}
    panels = [(env, value) for env in envs for value in per_env[env]]
    if not split:
        cols = min(3, len(envs))
        return panels, -(-len(envs) // cols), cols
    cols = min(SPLIT_COLUMNS, max(len(values) for values in per_env.values()))
    return panels, sum(-(-len(values) // cols) for values in per_env.values()), cols


def curves_figure(variants: list[Variant], metric: str = "episode_return", smooth: int = 1,
                  split: Optional[str] = None):
    """The learning-curve figure: one panel per env, or with ``split`` small multiples (one panel
    per env and ``panel_of`` value, an env's panels on one y scale); one line per variant (colour
    and key shared across panels), one legend below the panels; the smoothing window on the y
    axis; titles wrapped to stay inside the figure."""
    keys = variant_keys(variants)
    style, entries = line_styles(keys), legend_entries(variants, keys)
    panels, rows, cols = panel_layout(variants, split)
    width = 4.4 if split else 5.5
    fig, grid = _panel_grid(rows, cols, rows * cols, width=width, height=3.6 if split else 4.0)
    axes_of: dict[tuple[str, str], object] = {}
    row, col, previous_env = 0, 0, None
    for env, value in panels:  # each env starts a row when split; its panels wrap after cols
        if split and previous_env is not None and (env != previous_env or col == cols):
            row, col = row + 1, 0
        elif not split and col == cols:
            row, col = row + 1, 0
        axes_of[(env, value)] = grid[row, col]
        col, previous_env = col + 1, env
    for ax in grid.flat:
        ax.set_visible(ax in axes_of.values())
    handles, counts, early = {}, set(), False
    for (env, value), ax in axes_of.items():
        runs_last = None  # the last step of a run whose curve ends early: the x axis reaches it
        for v in (v for v in variants if v.env == env and panel_of(v, split) == value):
            curve = variant_curve(v, metric, smooth)
            if curve is None:
                continue
            x, mean, low, high, n = curve
            counts.add(n)
            (line,) = ax.plot(x, mean, linewidth=1.4, **style[v.label])
            handles.setdefault(v.label, line)
            if low is not None:
                ax.fill_between(x, low, high, color=style[v.label]["color"], alpha=0.15, linewidth=0)
            ends = curve_end(v, metric)
            if ends is not None and ends.end < ends.last:  # ends before its runs do: marked, and said
                ax.plot([x[-1]], [mean[-1]], marker=END_MARKER, markersize=9, markeredgewidth=2, linestyle="none",
                        color=style[v.label]["color"])
                early = True
                runs_last = max(runs_last or ends.last, ends.last)
        if runs_last is not None and runs_last > ax.get_xlim()[1]:
            left = ax.get_xlim()[0]
            ax.set_xlim(left, runs_last + 0.02 * (runs_last - left))
        title = env if not value else f"{env}: {keys[value] + ' ' + abbreviate(value) if split == SPLIT_VARIANT else value}"
        ax.set(xlabel="global_step", ylabel=f"{metric}\n({smoothing_text(smooth)})")
        ax.set_title(wrap(title, width - 0.3, 10), fontsize=10)
        ax.grid(alpha=0.3)
    if split:  # one scale per env: its panels compare by eye
        for env in {env for env, _ in panels}:
            env_axes = [ax for (e, _), ax in axes_of.items() if e == env]
            low = min(ax.get_ylim()[0] for ax in env_axes)
            high = max(ax.get_ylim()[1] for ax in env_axes)
            right = max(ax.get_xlim()[1] for ax in env_axes)
            left = min(ax.get_xlim()[0] for ax in env_axes)
            for ax in env_axes:
                ax.set_ylim(low, high)
                ax.set_xlim(left, right)
    order = [label for label in keys if label in handles]
    legend_below(fig, [handles[label] for label in order], [entries[label] for label in order])
    title = f"{metric}, {smoothing_text(smooth)}: mean over seeds; shaded: {band_text(counts) or 'none'}"
    if split:
        title += f"; {panels_text(split)}"
    if early:
        title += f"\n{END_MARKER_TEXT.format(metric=metric)}"
    title = wrap(title, fig.get_figwidth() - 0.4, 10)
    fig.suptitle(title, fontsize=10, y=0.995, va="top")
    # tight_layout leaves the figure title out: keep its lines (10 pt, ~1.3 line spacing) clear of the panels
    title_inches = (title.count("\n") + 1) * 10 * 1.3 / 72 + 0.1
    fig.tight_layout(rect=(0, 0, 1, 1 - title_inches / fig.get_figheight()))
    return fig


def plot_curves(variants: list[Variant], path: Path, metric: str = "episode_return", smooth: int = 1,
                split: Optional[str] = None) -> Path:
    return write_output(path, figure_png(curves_figure(variants, metric, smooth, split)))


def figure_png(fig) -> bytes:
    """``fig`` as PNG bytes (110 dpi, tight), closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buffer.getvalue()
