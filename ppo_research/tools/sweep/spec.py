"""A study spec: the YAML file, read and checked, and the Hydra overrides of each of its runs.

The file's format is in docs/sweeps.md. Here every key of the file is checked for its type and
range (one ``SpecError`` line naming the key, the value and what is expected): the study name
(a safe folder name), the seeds (>= 0, distinct: each run of a trial has its own directory), the
search space (bounds, ``step`` > 0, ``log``), the enqueued trials (keys of the search space,
values inside it), the objective's metric (a key of a run's ``summary.json``, or ``eval_auc``),
the counts; the sampler and pruner it names are built once to fail early. Checking the spec
against the composed config (unknown config keys, values a run rejects, for the bounds and the
enqueued trials alike) is ``space.check_search_space``.
"""
from __future__ import annotations

import importlib
import math
import os
import re
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


#: What ``objective.metric`` may name: the keys of the ``summary.json`` a run writes
#: (run/loop/record.py; tests/tools/test_sweep_spec.py checks a real run's), and ``eval_auc``, the mean of
#: the run's periodic eval returns, computed by the trial.
SUMMARY_METRICS = ("eval_return", "eval_return_std", "eval_episodes", "train_return", "train_return_last100",
                   "global_step", "iterations", "wall_time_s", "sps")
OBJECTIVE_METRICS = ("eval_return", "eval_auc", *SUMMARY_METRICS[1:])

#: A study name is a folder name under --out: letters, digits, '_', '-', '.', starting with a
#: letter or digit, no '..' (so never a path that leaves --out), at most 100 characters.
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class SpecError(ValueError):
    """A bad study spec or search space; ``str()`` is one line."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def invalid(key: str, value: Any, expected: str) -> SpecError:
    """The one line for a bad spec value: ``<key>=<value> is invalid: expected <what>``."""
    return SpecError(f"{key}={_shown(value)} is invalid: expected {expected}")


def check_study_name(name: Any, key: str = "study") -> str:
    if not isinstance(name, str) or not STUDY_NAME.fullmatch(name) or ".." in name:
        raise invalid(key, name, "a study name of letters, digits, '_', '-' and '.' (starting with a letter or "
                                 "digit, no '..', at most 100 characters): it names the folder <out>/<study>")
    return name


def run_name(env: Optional[str], seed: int) -> str:
    """The folder of a trial's run on ``env`` with ``seed``, under ``trials/<number>/``."""
    return f"{env}-s{seed}" if env else f"s{seed}"


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
    population: int = 1  # trials a worker trains together as populations (run/loop/train.py)
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


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


SCALARS = (str, int, float, bool, type(None))  # what a categorical choice may be


def _param(key: Any, node: Any) -> Param:
    if not isinstance(key, str) or not key:
        raise invalid("params", key, "config keys (such as loss.epsilon) mapped to ranges")
    where = f"params.{key}"
    if not isinstance(node, dict):
        raise invalid(where, node, "a mapping with low/high (and optionally log or step), or choices")
    unknown = set(node) - {"type", "low", "high", "log", "step", "choices"}
    if unknown:
        raise SpecError(f"search space: {key}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
                        f"known: choices, high, log, low, step, type")
    kind = node.get("type")
    if kind is not None and kind not in ("float", "int", "categorical"):
        raise invalid(f"{where}.type", kind, "float, int or categorical")
    if "choices" in node:
        if kind not in (None, "categorical") or set(node) & {"low", "high", "log", "step"}:
            raise SpecError(f"search space: {key}: choices make a categorical parameter: give either choices "
                            f"or low/high (with log or step), not both")
        choices = node["choices"]
        if not isinstance(choices, list) or not choices or not all(isinstance(c, SCALARS) for c in choices):
            raise invalid(f"{where}.choices", choices, "a non-empty list of values (numbers, strings, booleans, null)")
        return Param(key, "categorical", choices=choices)
    if kind == "categorical":
        raise invalid(f"{where}.choices", None, "a non-empty list of values for type categorical")
    low, high = node.get("low"), node.get("high")
    for name, v in (("low", low), ("high", high)):
        if not _number(v):
            raise invalid(f"{where}.{name}", v, "a finite number")
    kind = kind or ("int" if _int(low) and _int(high) else "float")
    if low > high:
        raise SpecError(f"search space: {key}: low={low!r} > high={high!r}")
    log, step = node.get("log"), node.get("step")
    log = False if log is None else log
    if not isinstance(log, bool):
        raise invalid(f"{where}.log", log, "true or false")
    if log and low <= 0:
        raise SpecError(f"search space: {key}: log scale needs low > 0, got low={low!r}")
    if log and step is not None:
        raise SpecError(f"search space: {key}: use either log or step, not both")
    if kind == "int":
        for name, v in (("low", low), ("high", high)):
            if v != int(v):
                raise invalid(f"{where}.{name}", v, "an integer (type int)")
        low, high = int(low), int(high)
        if step is not None and (not _int(step) or step < 1):
            raise invalid(f"{where}.step", step, "an integer >= 1 (type int)")
    elif step is not None and (not _number(step) or step <= 0):
        raise invalid(f"{where}.step", step, "a number > 0")
    return Param(key, kind, low, high, log, step)


def _enqueued(i: int, node: Any, params: list[Param]) -> dict:
    """An enqueued trial: a mapping from search-space keys to values inside the search space
    (a choice, or a number in [low, high]); keys left out are sampled."""
    where = f"enqueue[{i}]"
    if not isinstance(node, dict):
        raise invalid(where, node, "a mapping from search-space keys to values (e.g. {loss.epsilon: 0.2})")
    space = {p.key: p for p in params}
    for key, value in node.items():
        p = space.get(key)
        if p is None:
            raise invalid(f"{where}.{key}", value, f"a key of the search space ({', '.join(space)}): an enqueued "
                                                  f"trial sets searched parameters only")
        if p.kind == "categorical":
            if value not in p.choices:
                raise invalid(f"{where}.{key}", value, f"one of the choices {p.choices}")
        elif not (_int(value) if p.kind == "int" else _number(value)) or not p.low <= value <= p.high:
            raise invalid(f"{where}.{key}", value, f"{'an integer' if p.kind == 'int' else 'a number'} in the "
                                                  f"search space's [{p.low!r}, {p.high!r}]")
    return dict(node)


def _seeds(node: Any) -> list[int]:
    if _int(node):
        if node < 1:
            raise invalid("seeds", node, "a count >= 1 (seeds 0..count-1) or a list of distinct integers >= 0")
        return list(range(node))
    if not isinstance(node, list) or not node or not all(_int(s) for s in node):
        raise invalid("seeds", node, "a count >= 1 (seeds 0..count-1) or a list of distinct integers >= 0")
    negative = [s for s in node if s < 0]
    if negative:
        raise invalid("seeds", node, f"integers >= 0 (seed {negative[0]} is negative)")
    repeated = sorted({s for s in node if node.count(s) > 1})
    if repeated:
        raise invalid("seeds", node, f"distinct seeds: seed {repeated[0]} is listed {node.count(repeated[0])} "
                                     f"times, and a trial's runs with one seed would share one directory "
                                     f"(trials/<number>/s{repeated[0]})")
    return list(node)


def _mapping(key: str, node: Any, expected: str) -> dict:
    """A spec field that is a mapping: {} when left out (null); anything but a mapping is refused."""
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise invalid(key, node, expected)
    return node


def _envs(node: Any) -> dict:
    node = _mapping("envs", node, "a mapping from env options to {random: R, reference: E} (or null)")
    for env, norm in node.items():
        if not isinstance(env, str) or not env:
            raise invalid("envs", env, "env options (config group env, e.g. cartpole) as keys")
        if norm is None or norm == {}:
            continue
        if not isinstance(norm, dict) or set(norm) != {"random", "reference"} \
                or not all(_number(norm[k]) for k in norm) or norm["random"] == norm["reference"]:
            raise invalid(f"envs.{env}", norm, "{random: R, reference: E} with numbers R != E (or null: no "
                                               "normalisation)")
    if len(node) > 1:
        for env, norm in node.items():
            if not norm:
                raise SpecError(f"envs.{env}: several envs need {{random: R, reference: E}} (R != E) to normalise "
                                f"scores")
    return dict(node)


def _objective(node: Any) -> dict:
    node = _mapping("objective", node, "a mapping with metric, direction and aggregate")
    if not node:
        return {}
    unknown = set(node) - {"metric", "direction", "aggregate"}
    if unknown:
        raise SpecError(f"objective: unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
                        f"known: aggregate, direction, metric")
    metric = node.get("metric", "eval_return")
    if metric not in OBJECTIVE_METRICS:
        raise invalid("objective.metric", metric, f"one of {', '.join(OBJECTIVE_METRICS)} (a key of the "
                                                  f"summary.json a run writes, or eval_auc: the mean of its "
                                                  f"periodic eval returns)")
    if node.get("direction", "maximize") not in ("maximize", "minimize"):
        raise invalid("objective.direction", node.get("direction"), "maximize or minimize")
    if node.get("aggregate", "mean") not in AGGREGATES:
        raise invalid("objective.aggregate", node.get("aggregate"), f"one of {', '.join(AGGREGATES)}")
    return dict(node)


def _optional(node: dict, key: str, types: tuple, expected: str) -> Any:
    value = node.get(key)
    if value is not None and not isinstance(value, types):
        raise invalid(key, value, expected)
    return value


def load_spec(path: str | Path, cli_overrides: list[str] = (), trials: Optional[int] = None,
              workers: Optional[int] = None, storage: Optional[str] = None, study: Optional[str] = None,
              out_dir: str | Path = "outputs/sweeps", population: Optional[int] = None) -> Spec:
    """Read and check a spec file, every key (not against the config: see space.check_search_space)."""
    try:
        node = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise SpecError(f"cannot read spec {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(node, dict):
        raise SpecError(f"spec {path}: expected a mapping")
    unknown = set(node) - SPEC_KEYS
    if unknown:
        raise SpecError(f"spec {path}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                        f"known: {', '.join(sorted(SPEC_KEYS))}")
    if study is not None:
        check_study_name(study, "--study")
    elif node.get("study") is not None:
        check_study_name(node["study"], "study")
    else:
        check_study_name(Path(path).stem, "study (not in the spec: its file name)")
    _optional(node, "description", (str,), "a string")
    overrides = node.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise invalid("overrides", overrides, "a list of Hydra overrides (key=value strings)")
    params = node.get("params")
    if not isinstance(params, dict) or not params:
        raise invalid("params", params, "a mapping from config keys to ranges (e.g. loss.epsilon: {low: 0.1, "
                                        "high: 0.3})")
    space = [_param(k, v) for k, v in params.items()]
    objective = _objective(node.get("objective"))
    seeds = _seeds(node["seeds"] if "seeds" in node else 1)
    envs = _envs(node.get("envs"))
    enqueue = node.get("enqueue") or []
    if not isinstance(enqueue, list):
        raise invalid("enqueue", enqueue, "a list of trials, each a mapping from search-space keys to values")
    enqueue = [_enqueued(i, e, space) for i, e in enumerate(enqueue)]
    for key in ("sampler", "pruner"):
        value = _optional(node, key, (dict,), f"a mapping with name (an optuna.{key}s class) and its arguments"
                                              f"{'; or null for none' if key == 'pruner' else ''}")
        if value and not isinstance(value.get("name"), str):  # {} or null: the default (TPESampler; no pruner)
            raise invalid(f"{key}.name", value.get("name"), f"the name of an optuna.{key}s class (or module.Class)")
    _optional(node, "storage", (str,), "a storage URL (sqlite:///..., postgresql+psycopg://..., journal:<path>)")
    spec = Spec(
        study=study or node.get("study") or Path(path).stem,
        overrides=list(overrides) + list(cli_overrides),
        params=space,
        metric=objective.get("metric", "eval_return"),
        direction=objective.get("direction", "maximize"),
        aggregate=objective.get("aggregate", "mean"),
        seeds=seeds,
        envs=envs,
        trials=node.get("trials", 20) if trials is None else trials,
        workers=node.get("workers", 1) if workers is None else workers,
        population=node.get("population", 1) if population is None else population,
        sampler=dict(node.get("sampler") or {"name": "TPESampler"}),
        pruner=node.get("pruner"),
        enqueue=enqueue,
        heartbeat_s=node.get("heartbeat_s", 30.0),
    )
    spec.out_dir = str(Path(out_dir).resolve())
    spec.storage = storage or node.get("storage") or f"sqlite:///{spec.study_dir / 'study.db'}"
    beat = spec.heartbeat_s  # 0 would spin a core; a worker is taken for dead after 3 silent beats
    if not _number(beat) or beat < 1:  # this wording is pinned by tests/cli/test_bad_input.py
        raise SpecError(f"heartbeat_s={_shown(beat)}, expected a number of seconds >= 1")
    spec.heartbeat_s = float(beat)
    for name, v, lo in (("trials", spec.trials, 0), ("workers", spec.workers, 1), ("population", spec.population, 1)):
        if not _int(v) or v < lo:
            raise invalid(name, v, f"an integer >= {lo}")
    names = [run_name(env, seed) for seed in spec.seeds for env in spec.env_runs()]
    shared = sorted({n for n in names if names.count(n) > 1})
    if shared:  # distinct seeds and env names never do this; any other way is refused the same
        raise SpecError(f"seeds={spec.seeds!r}, envs={list(spec.envs)!r}: two runs of a trial would share the "
                        f"directory trials/<number>/{shared[0]}: expected one directory per run")
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
        # Distinct per worker, host, SLURM job (the tasks of one array on one host are each worker 0)
        # and restart: equal seeds would make parallel workers (or a re-run) draw the same points.
        job = os.environ.get("SLURM_JOB_ID", "")
        node["seed"] = zlib.crc32(f"{node['seed']}/{HOST}/{job}/{worker}/{n_existing}".encode())
    return _build(optuna.samplers, node, "sampler")


def make_pruner(spec: Spec) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner() if not spec.pruner else _build(optuna.pruners, spec.pruner, "pruner")
