"""A study spec: the YAML file, read and checked, and the Hydra overrides of each of its runs.

The file's format is in docs/sweeps.md. Checking it against the composed config (unknown keys,
bounds the schema rejects) is ``space.check_search_space``; here only the file's own fields
are checked, and the sampler and pruner it names are built once to fail early.
"""
from __future__ import annotations

import importlib
import socket
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna
import yaml

from ..stats import AGGREGATES, normalize_score

HOST = socket.gethostname()
# Always prepended to a trial's overrides (the spec and the command line may override them):
# per-iteration progress lines from parallel workers would interleave, and mid-run checkpoints
# are not needed to rank trials.
TRIAL_DEFAULTS = ["progress=false", "checkpoint.every=0"]


class SpecError(ValueError):
    """A bad study spec or search space; ``str()`` is one line."""


@dataclass
class Param:
    key: str
    kind: str  # float | int | categorical
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    choices: Optional[list] = None

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, self.choices)
        suggest = trial.suggest_int if self.kind == "int" else trial.suggest_float
        kwargs = {"log": self.log} if self.step is None else {"step": self.step}
        return suggest(self.key, self.low, self.high, **kwargs)

    def probe_values(self) -> list:
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]


def format_value(value: Any) -> str:
    """A value as a Hydra override writes it (floats exactly, booleans and None as YAML)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return repr(value) if isinstance(value, float) else str(value)


def param_overrides(params: dict) -> list[str]:
    return [f"{k}={format_value(v)}" for k, v in params.items()]


@dataclass
class Spec:
    study: str
    overrides: list[str]  # spec overrides followed by command-line overrides
    params: list[Param]
    metric: str = "eval_return"
    direction: str = "maximize"
    aggregate: str = "mean"
    seeds: list[int] = field(default_factory=lambda: [0])
    envs: dict = field(default_factory=dict)  # env option -> {random, reference}; empty = the overrides' env
    trials: int = 20
    workers: int = 1
    population: int = 1  # trials a worker trains together as populations (run/population.py)
    sampler: dict = field(default_factory=lambda: {"name": "TPESampler"})
    pruner: Optional[dict] = None
    enqueue: list = field(default_factory=list)
    heartbeat_s: float = 30.0
    storage: str = ""
    out_dir: str = ""

    @property
    def study_dir(self) -> Path:
        return Path(self.out_dir) / self.study

    def env_runs(self) -> list[Optional[str]]:
        """The env options each trial runs on (None: the one the overrides select)."""
        return list(self.envs) or [None]

    def run_overrides(self, params: dict, env: Optional[str] = None, seed: Optional[int] = None) -> list[str]:
        """``python -m ppo_research <these>`` is the run of ``params`` on ``env`` with ``seed``:
        what a trial trains, what the search space is checked with, what the report prints."""
        return self.overrides + ([f"env={env}"] if env else []) + ([f"seed={seed}"] if seed is not None else []) \
            + param_overrides(params)

    def normalise(self, env: Optional[str], value: float) -> float:
        """The score of a run on ``env``, normalised when the spec gives the env's reference scores."""
        norm = self.envs.get(env) if env else None
        if not isinstance(norm, dict) or "random" not in norm:
            return float(value)
        return normalize_score(value, norm["random"], norm["reference"])

    def fingerprint(self) -> dict:
        """What must not change while a study continues (changing it mixes incomparable trials)."""
        return {"overrides": self.overrides, "metric": self.metric, "aggregate": self.aggregate,
                "seeds": self.seeds, "envs": self.envs,
                "params": {p.key: [p.kind, p.low, p.high, p.log, p.step, p.choices] for p in self.params}}


SPEC_KEYS = {"study", "description", "overrides", "params", "objective", "seeds", "envs", "trials", "workers",
             "population", "sampler", "pruner", "enqueue", "heartbeat_s", "storage"}


def _param(key: str, node: Any) -> Param:
    where = f"search space: {key}"
    if not isinstance(node, dict):
        raise SpecError(f"{where}: expected a mapping with low/high or choices, got {node!r}")
    unknown = set(node) - {"type", "low", "high", "log", "step", "choices"}
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    if "choices" in node:
        kind = node.get("type", "categorical")
    else:
        ints = all(isinstance(node.get(k), int) and not isinstance(node.get(k), bool) for k in ("low", "high"))
        kind = node.get("type", "int" if ints else "float")
    if kind not in ("float", "int", "categorical"):
        raise SpecError(f"{where}: type={kind!r}, expected float, int or categorical")
    if kind == "categorical":
        choices = node.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpecError(f"{where}: choices must be a non-empty list")
        return Param(key, kind, choices=choices)
    low, high = node.get("low"), node.get("high")
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SpecError(f"{where}: {name}={v!r} is not a number")
    if low > high:
        raise SpecError(f"{where}: low={low!r} > high={high!r}")
    log, step = bool(node.get("log", False)), node.get("step")
    if log and low <= 0:
        raise SpecError(f"{where}: log scale needs low > 0, got low={low!r}")
    if log and step is not None:
        raise SpecError(f"{where}: use either log or step, not both")
    if kind == "int":
        low, high = int(low), int(high)
    return Param(key, kind, low, high, log, step)


def load_spec(path: str | Path, cli_overrides: list[str] = (), trials: Optional[int] = None,
              workers: Optional[int] = None, storage: Optional[str] = None, study: Optional[str] = None,
              out_dir: str | Path = "outputs/sweeps", population: Optional[int] = None) -> Spec:
    """Read and check a spec file (not the search space against the config: see space.check_search_space)."""
    try:
        node = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(f"cannot read spec {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(node, dict):
        raise SpecError(f"spec {path}: expected a mapping")
    unknown = set(node) - SPEC_KEYS
    if unknown:
        raise SpecError(f"spec {path}: unknown key(s) {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(sorted(SPEC_KEYS))}")
    params = node.get("params") or {}
    if not isinstance(params, dict) or not params:
        raise SpecError(f"spec {path}: params must map config keys to ranges")
    objective = node.get("objective") or {}
    seeds = node.get("seeds", 1)
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    spec = Spec(
        study=study or node.get("study") or Path(path).stem,
        overrides=[str(o) for o in node.get("overrides") or []] + list(cli_overrides),
        params=[_param(str(k), v) for k, v in params.items()],
        metric=objective.get("metric", "eval_return"),
        direction=objective.get("direction", "maximize"),
        aggregate=objective.get("aggregate", "mean"),
        seeds=seeds,
        envs=dict(node.get("envs") or {}),
        trials=node.get("trials", 20) if trials is None else trials,
        workers=node.get("workers", 1) if workers is None else workers,
        population=node.get("population", 1) if population is None else population,
        sampler=dict(node.get("sampler") or {"name": "TPESampler"}),
        pruner=node.get("pruner"),
        enqueue=list(node.get("enqueue") or []),
        heartbeat_s=node.get("heartbeat_s", 30.0),
    )
    spec.out_dir = str(Path(out_dir).resolve())
    spec.storage = storage or node.get("storage") or f"sqlite:///{spec.study_dir / 'study.db'}"
    if spec.direction not in ("maximize", "minimize"):
        raise SpecError(f"objective.direction={spec.direction!r}, expected maximize or minimize")
    if spec.aggregate not in AGGREGATES:
        raise SpecError(f"objective.aggregate={spec.aggregate!r}, expected one of {', '.join(AGGREGATES)}")
    if not spec.seeds or not all(isinstance(s, int) for s in spec.seeds):
        raise SpecError(f"seeds={node.get('seeds')!r}, expected a positive count or a list of integers")
    beat = spec.heartbeat_s  # 0 would spin a core; a worker is taken for dead after 3 silent beats
    if isinstance(beat, bool) or not isinstance(beat, (int, float)) or not 1 <= beat < float("inf"):
        raise SpecError(f"heartbeat_s={beat!r}, expected a number of seconds >= 1")
    spec.heartbeat_s = float(beat)
    for name, v, lo in (("trials", spec.trials, 0), ("workers", spec.workers, 1), ("population", spec.population, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise SpecError(f"{name}={v!r}, expected an integer >= {lo}")
    for env, norm in spec.envs.items():
        ok = isinstance(norm, dict) and {"random", "reference"} <= set(norm) and norm["random"] != norm["reference"]
        if len(spec.envs) > 1 and not ok:
            raise SpecError(f"envs.{env}: several envs need {{random: R, reference: E}} (R != E) to normalise scores")
    make_sampler(spec, 0, 0)  # fail now on a bad name or argument
    make_pruner(spec)
    return spec


def _build(module, node: dict, what: str):
    """``module.<name>(**rest of node)``; a dotted name (``mypackage.pruners.MyPruner``) is a class
    of your own, imported from wherever Python finds it (the current folder included)."""
    node = dict(node)
    name = node.pop("name", None)
    base = optuna.pruners.BasePruner if what == "pruner" else optuna.samplers.BaseSampler
    if isinstance(name, str) and "." in name:
        where, _, attr = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(where), attr, None)
        except ImportError as err:
            raise SpecError(f"{what}.name={name!r}: cannot import {where}: {err}") from None
    else:
        cls = getattr(module, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise SpecError(f"{what}.name={name!r} is not a class of {module.__name__} "
                        f"(or an importable module.Class deriving from {module.__name__}.{base.__name__})")
    try:
        return cls(**node)
    except (TypeError, ValueError) as err:
        raise SpecError(f"{what}: {name}({', '.join(f'{k}={v!r}' for k, v in node.items())}): {err}") from None


def make_sampler(spec: Spec, worker: int, n_existing: int) -> optuna.samplers.BaseSampler:
    node = dict(spec.sampler)
    if node.get("seed") is not None:
        # Distinct per worker, host and restart: equal seeds would make parallel workers (or a
        # re-run) draw the same random start-up points.
        node["seed"] = zlib.crc32(f"{node['seed']}/{HOST}/{worker}/{n_existing}".encode())
    return _build(optuna.samplers, node, "sampler")


def make_pruner(spec: Spec) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner() if not spec.pruner else _build(optuna.pruners, spec.pruner, "pruner")
