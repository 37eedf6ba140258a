"""Runs grouped into variants: per env, by the config values that vary between them (seed is the
replicate axis; tracking-only settings never name a variant), and the labels that name them."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

from ...run.config.compose import CONF_DIR, GROUPS
from ..results import FACET, Run

#: Settings that change what is recorded or how a run is kept, never what it learns: they never
#: name a variant (seed is the replicate axis).
TRACKING_KEYS = frozenset({"seed", "progress", "resume", "torch_threads", "eval.every", "choices.logger"})


TRACKING_PREFIXES = ("logger.", "checkpoint.")


MISSING = "<unset>"


def is_tracking_only(key: str) -> bool:
    """``logger.*`` (``logger.loggers.*`` too) and the logger choice, ``checkpoint.*``,
    ``progress``, ``resume``, ``eval.every``, ``torch_threads`` (and ``seed``)."""
    return key in TRACKING_KEYS or key.startswith(TRACKING_PREFIXES)


@dataclass
class Variant:
    env: str
    label: str
    runs: list[Run] = field(default_factory=list)

    def by_seed(self) -> dict:
        """seed -> its runs, in seed order (a run without a seed is its own replicate)."""
        groups: dict = {}
        for run in self.runs:
            groups.setdefault(run.seed if run.seed is not None else f"?{run.path}", []).append(run)
        return dict(sorted(groups.items(), key=lambda kv: str(kv[0]).zfill(12)))

    @property
    def n_seeds(self) -> int:
        return len(self.by_seed())


def duplicate_seeds(variants: list[Variant]) -> list[str]:
    """One warning line per (variant, seed) with several runs: they count as one seed."""
    lines = []
    for v in variants:
        for seed, runs in v.by_seed().items():
            if len(runs) > 1:
                lines.append(f"warning: {v.env} {v.label}: seed {seed} appears in {len(runs)} runs "
                             f"({', '.join(str(r.path) for r in runs)}); counted as one seed, their scores averaged")
    return lines


def variant_keys(variants: list[Variant]) -> dict[str, str]:
    """A short key per distinct label (V1, V2, ... in label order): the legends' and the key
    table's names; the same label on several envs is one key and one colour."""
    return {label: f"V{i}" for i, label in enumerate(sorted({v.label for v in variants}), 1)}


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
    keys = sorted(k for k in set().union(*(run.config for run in runs)) if not is_tracking_only(k))
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


#: ``--split`` value for one panel per variant
SPLIT_VARIANT = "variant"
