"""Optuna studies over PPO hyperparameters.

    python -m ppo_research.sweep sweeps/<spec>.yaml [hydra overrides] [--trials N] [--workers N]
                                 [--storage URL] [--study NAME] [--out DIR]

A spec (YAML, see docs/sweeps.md) names the study, the Hydra overrides every trial runs with, the
search space, the objective, the trial budget, the seeds per trial, the sampler and the pruner.
The study lives in a persistent storage (default: SQLite at <out>/<study>/study.db), so running
the command again continues it. Each worker is one process running trials in turn against the
shared storage; more machines join by running the same command with the same ``--storage``.

Trial budget: ``trials`` counts trials that ended because of the objective - complete, pruned or
failed with an error. A trial whose process died (kill, Ctrl-C, lost machine) is marked FAIL with
``interrupted`` and does not count, so a re-run fills its place.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import os
import socket
import sys
import threading
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import TrialState

from ..run.app import CONF_DIR, GROUPS, check_group_choices, group_options, train_from_config
from ..errors import ConfigError
from ..run.config import validate

HOST = socket.gethostname()
# Always prepended to a trial's overrides (the spec and the command line may override them):
# per-iteration progress lines from parallel workers would interleave, and mid-run checkpoints
# are not needed to rank trials.
TRIAL_DEFAULTS = ["progress=false", "checkpoint.every=0"]
AGGREGATES = ("mean", "iqm", "median")


class SpecError(ValueError):
    """A bad study spec or search space; ``str()`` is one line."""


# ---------------------------------------------------------------------------------------------
# the spec

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
    sampler: dict = field(default_factory=lambda: {"name": "TPESampler"})
    pruner: Optional[dict] = None
    enqueue: list = field(default_factory=list)
    heartbeat_s: float = 30.0
    storage: str = ""
    out_dir: str = ""

    @property
    def study_dir(self) -> Path:
        return Path(self.out_dir) / self.study

    def fingerprint(self) -> dict:
        """What must not change while a study continues (changing it mixes incomparable trials)."""
        return {"overrides": self.overrides, "metric": self.metric, "aggregate": self.aggregate,
                "seeds": self.seeds, "envs": self.envs,
                "params": {p.key: [p.kind, p.low, p.high, p.log, p.step, p.choices] for p in self.params}}


SPEC_KEYS = {"study", "description", "overrides", "params", "objective", "seeds", "envs", "trials", "workers",
             "sampler", "pruner", "enqueue", "heartbeat_s", "storage"}


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
              out_dir: str | Path = "outputs/sweeps") -> Spec:
    """Read and check a spec file (not the search space against the config: see check_search_space)."""
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
        sampler=dict(node.get("sampler") or {"name": "TPESampler"}),
        pruner=node.get("pruner"),
        enqueue=list(node.get("enqueue") or []),
        heartbeat_s=float(node.get("heartbeat_s", 30.0)),
    )
    spec.out_dir = str(Path(out_dir).resolve())
    spec.storage = storage or node.get("storage") or f"sqlite:///{spec.study_dir / 'study.db'}"
    if spec.direction not in ("maximize", "minimize"):
        raise SpecError(f"objective.direction={spec.direction!r}, expected maximize or minimize")
    if spec.aggregate not in AGGREGATES:
        raise SpecError(f"objective.aggregate={spec.aggregate!r}, expected one of {', '.join(AGGREGATES)}")
    if not spec.seeds or not all(isinstance(s, int) for s in spec.seeds):
        raise SpecError(f"seeds={node.get('seeds')!r}, expected a positive count or a list of integers")
    for name, v, lo in (("trials", spec.trials, 0), ("workers", spec.workers, 1)):
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
    node = dict(node)
    name = node.pop("name", None)
    cls = getattr(module, str(name), None)
    if not isinstance(cls, type):
        raise SpecError(f"{what}.name={name!r} is not a class of {module.__name__}")
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


# ---------------------------------------------------------------------------------------------
# configs

def compose_trial_config(overrides: list[str]) -> tuple[DictConfig, dict[str, str]]:
    """The composed config for ``python -m ppo_research <overrides>`` and its group choices."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if k in GROUPS and v is not None}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return repr(value) if isinstance(value, float) else str(value)


def param_overrides(params: dict) -> list[str]:
    return [f"{k}={format_value(v)}" for k, v in params.items()]


def env_runs(spec: Spec) -> list[Optional[str]]:
    return list(spec.envs) or [None]


def check_search_space(spec: Spec) -> None:
    """Every parameter must name a key of the composed config, and each bound (or choice) must
    pass validation, so a bad space fails here rather than as N failed trials."""
    for env in env_runs(spec):
        base = spec.overrides + ([f"env={env}"] if env else [])
        check_group_choices(base)
        try:
            cfg, _ = compose_trial_config(base)
        except HydraException as err:
            raise SpecError(f"overrides: {str(err).splitlines()[0]}") from None
        validate(cfg)
        for p in spec.params:
            if p.key in GROUPS:
                bad = [c for c in p.probe_values() if c not in group_options(p.key)]
                if p.kind != "categorical" or bad:
                    raise SpecError(f"search space: {p.key} is a config group: use choices from "
                                    f"{', '.join(group_options(p.key))}")
                continue
            if OmegaConf.select(cfg, p.key, default=KeyError) is KeyError:
                raise SpecError(f"search space: unknown parameter {p.key!r} (not a key of the composed config)")
            for value in p.probe_values():
                try:
                    validate(compose_trial_config(base + param_overrides({p.key: value}))[0])
                except (ConfigError, HydraException) as err:
                    first_line = str(err).splitlines()[0]
                    raise SpecError(f"search space: {p.key}={format_value(value)}: {first_line}") from None


def normalise(spec: Spec, env: Optional[str], value: float) -> float:
    norm = spec.envs.get(env) if env else None
    if not isinstance(norm, dict) or "random" not in norm:
        return float(value)
    return (float(value) - norm["random"]) / (norm["reference"] - norm["random"])


def aggregate(values: list[float], how: str) -> float:
    """mean, median, or IQM: the mean of the middle 50% (drops floor(n/4) runs at each end)."""
    xs = sorted(values)
    if how == "median":
        mid = len(xs) // 2
        return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2
    if how == "iqm":
        cut = len(xs) // 4
        xs = xs[cut:len(xs) - cut]
    return sum(xs) / len(xs)


# ---------------------------------------------------------------------------------------------
# one trial

class Interrupted(Exception):
    """The sweep command went away (its worker stops); the trial does not count."""


def run_trial(spec: Spec, trial: optuna.Trial, parent_pid: Optional[int]) -> float:
    """Train every (seed, env) of the trial in turn and return the aggregated score.

    Intermediate values: each periodic evaluation reports its (normalised) eval return at
    step = environment steps the trial has used so far, summed over its earlier runs. Trials
    thus compare at equal cost and equal position in the seed/env order, and one pruning
    decision can stop the whole trial during its first seed.
    """
    params = {p.key: p.suggest(trial) for p in spec.params}
    trial.set_user_attr("overrides", param_overrides(params))
    trial_dir = spec.study_dir / "trials" / f"{trial.number:04d}"
    scores, offset = [], 0
    for seed in spec.seeds:
        for env in env_runs(spec):
            name = f"{env}-s{seed}" if env else f"s{seed}"
            overrides = TRIAL_DEFAULTS + spec.overrides + ([f"env={env}"] if env else []) \
                + [f"seed={seed}"] + param_overrides(params)
            cfg, choices = compose_trial_config(overrides)
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
                trial.report(normalise(spec, env, eval_return), offset + global_step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {offset + global_step}")

            summary = train_from_config(cfg, trial_dir / name, choices, on_evaluation=on_evaluation)
            offset += summary["global_step"]
            value = sum(evals) / len(evals) if spec.metric == "eval_auc" and evals else summary.get(spec.metric)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"run {name} gave {spec.metric}={value!r}")
            trial.set_user_attr(f"{spec.metric}/{name}", value)
            scores.append(normalise(spec, env, value))
    return aggregate(scores, spec.aggregate)


# ---------------------------------------------------------------------------------------------
# workers

def make_storage(url: str) -> optuna.storages.BaseStorage:
    """``journal:<path>`` is an append-only journal file (fine on NFS); anything else is a
    SQLAlchemy URL (sqlite:///..., postgresql://...)."""
    if url.startswith("journal:"):
        path = Path(url[len("journal:"):].removeprefix("//"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        # Workers write concurrently; wait for SQLite's file lock instead of failing at once.
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(url)


def create_study(spec: Spec) -> optuna.Study:
    """Create (or load) the study once, before any worker starts, and check it is the same study."""
    storage = make_storage(spec.storage)
    for attempt in range(3):  # two machines creating the same fresh storage may collide once
        try:
            study = optuna.create_study(study_name=spec.study, storage=storage, direction=spec.direction,
                                        load_if_exists=True)
            break
        except Exception:
            if attempt == 2:
                raise
            time.sleep(1 + attempt)
    stored = study.user_attrs.get("spec")
    if stored is None:
        study.set_user_attr("spec", spec.fingerprint())
        for params in spec.enqueue:
            study.enqueue_trial(params)
    elif json.dumps(stored, sort_keys=True) != json.dumps(spec.fingerprint(), sort_keys=True):
        raise SpecError(f"study {spec.study!r} in {spec.storage} was created with a different spec "
                        f"(overrides, search space, seeds or objective); pass --study NAME to start a new one")
    if study.direction.name.lower() != spec.direction:
        raise SpecError(f"study {spec.study!r} has direction {study.direction.name.lower()}, "
                        f"spec says {spec.direction}")
    return study


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def classify(t: optuna.trial.FrozenTrial, grace_s: float, now: float) -> str:
    """done (counts toward the budget) | alive | dead | other (enqueued, interrupted, skipped)."""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return "done"
    if t.state == TrialState.FAIL:
        return "done" if "error" in t.user_attrs else "other"
    if t.state != TrialState.RUNNING:
        return "other"
    attrs = t.user_attrs
    if attrs.get("host") == HOST and "pid" in attrs and not _pid_alive(attrs["pid"]):
        return "dead"  # same machine: the worker process is gone
    last = attrs.get("alive_at") or t.datetime_start.timestamp()
    return "dead" if now - last > grace_s else "alive"  # other machines: heartbeat too old


def fail_dead(study: optuna.Study, trials: list, grace_s: float) -> None:
    storage, now = study._storage, time.time()
    for t in trials:
        if classify(t, grace_s, now) == "dead":
            try:
                storage.set_trial_user_attr(t._trial_id, "interrupted", "worker process gone")
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                print(f"trial {t.number}: worker gone, marked FAIL (interrupted, not counted)", flush=True)
            except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
                pass  # another worker got there first


def budget(study: optuna.Study, grace_s: float) -> tuple[int, int]:
    """(done, alive) trials right now, after failing trials whose worker died."""
    trials = study.get_trials(deepcopy=False)
    fail_dead(study, trials, grace_s)
    now = time.time()
    kinds = [classify(t, grace_s, now) for t in study.get_trials(deepcopy=False)]
    return kinds.count("done"), kinds.count("alive")


class Heartbeat:
    """Refresh the trial's ``alive_at`` so workers elsewhere can tell it is still running."""

    def __init__(self, trial: optuna.Trial, every_s: float):
        self.trial, self.every_s, self.stop = trial, every_s, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.every_s):
            try:
                self.trial.set_user_attr("alive_at", time.time())
            except Exception:  # the trial finished meanwhile
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def work(spec: Spec, worker: int = 0, parent_pid: Optional[int] = None, poll_s: float = 1.0) -> None:
    """Run trials until the budget is used: ask, claim, train, tell; repeat."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = make_storage(spec.storage)
    study = optuna.load_study(study_name=spec.study, storage=storage)
    study.sampler = make_sampler(spec, worker, len(study.get_trials(deepcopy=False)))
    study.pruner = make_pruner(spec)
    grace = 3 * spec.heartbeat_s
    while True:
        if parent_pid is not None and os.getppid() != parent_pid:
            return  # the sweep command was killed: stop with it
        done, alive = budget(study, grace)
        if done >= spec.trials:
            return
        if done + alive >= spec.trials:  # the last trials run elsewhere; wait in case one dies
            time.sleep(poll_s)
            continue
        trial = study.ask()
        trial.set_user_attr("host", HOST)
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("alive_at", time.time())
        # Exact count despite races: only trials numbered before this one may take the budget.
        now = time.time()
        ahead = sum(classify(t, grace, now) in ("done", "alive")
                    for t in study.get_trials(deepcopy=False) if t.number < trial.number)
        if ahead >= spec.trials:
            trial.set_user_attr("skipped", "budget taken by a concurrent worker")
            study.tell(trial, state=TrialState.FAIL)
            continue
        start = time.perf_counter()
        note = ""
        try:
            with Heartbeat(trial, spec.heartbeat_s):
                value = run_trial(spec, trial, parent_pid)
        except optuna.TrialPruned as err:
            state = study.tell(trial, state=TrialState.PRUNED).state
            note = str(err)
        except Interrupted:
            trial.set_user_attr("interrupted", "sweep command gone")
            study.tell(trial, state=TrialState.FAIL)
            return
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", "keyboard interrupt")
            study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as err:  # NonFiniteError, ConfigError, env errors: record and go on
            note = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            trial.set_user_attr("error", note)
            state = study.tell(trial, state=TrialState.FAIL).state
        else:
            state = study.tell(trial, value).state
            note = f"value={value:.4g}"
        print(f"[worker {worker}] trial {trial.number} {state.name} {note} "
              f"{' '.join(param_overrides(trial.params))} ({time.perf_counter() - start:.1f}s)", flush=True)


def _worker_main(spec: Spec, worker: int, parent_pid: int) -> None:
    try:
        work(spec, worker, parent_pid)
    except KeyboardInterrupt:
        sys.exit(130)


# ---------------------------------------------------------------------------------------------
# report

def trial_label(t: optuna.trial.FrozenTrial) -> str:
    if t.state == TrialState.FAIL:
        return "FAIL" if "error" in t.user_attrs else ("SKIPPED" if "skipped" in t.user_attrs else "INTERRUPTED")
    return t.state.name


def write_report(spec: Spec, study: optuna.Study) -> dict:
    """Best params, all trials (CSV + Markdown), importances, history plot, best overrides."""
    out = spec.study_dir
    out.mkdir(parents=True, exist_ok=True)
    trials = [t for t in study.get_trials(deepcopy=False) if trial_label(t) != "SKIPPED"]
    keys = [p.key for p in spec.params]
    header = ["number", "state", "value", *keys, "last_step", "duration_s", "error"]
    rows = []
    for t in trials:
        steps = t.intermediate_values
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append([t.number, trial_label(t), t.value, *[t.params.get(k) for k in keys],
                     max(steps) if steps else None, None if duration is None else round(duration, 1),
                     t.user_attrs.get("error") or t.user_attrs.get("interrupted") or ""])
    with open(out / "trials.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])

    def cell(v: Any) -> str:
        return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "/"))

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    (out / "trials.md").write_text("\n".join(lines) + "\n")

    result: dict = {"study": spec.study, "storage": spec.storage, "direction": spec.direction,
                    "metric": spec.metric, "aggregate": spec.aggregate, "seeds": spec.seeds,
                    "counts": {s: sum(trial_label(t) == s for t in trials)
                               for s in ("COMPLETE", "PRUNED", "FAIL", "INTERRUPTED")}}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        base = spec.overrides + param_overrides(best.params)
        commands = [" ".join(["python -m ppo_research", *base, *([f"env={e}"] if e else []), f"seed={s}"])
                    for e in env_runs(spec) for s in spec.seeds]
        result.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                      best_overrides=base, reproduce=commands)
        (out / "best_overrides.txt").write_text(" ".join(base) + "\n")
    result["importances"] = importances(study, complete)
    (out / "best.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    if complete:
        plot_history(study, out / "history.png")
    return result


def importances(study: optuna.Study, complete: list) -> dict:
    if len(complete) < 3 or len({t.value for t in complete}) < 2:
        return {"note": f"needs >= 3 complete trials with different values; have {len(complete)} complete, "
                        f"{len({t.value for t in complete})} distinct value(s)"}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except Exception as err:  # e.g. a parameter that never varied
        return {"note": f"not computed: {type(err).__name__}: {err}"}


def plot_history(study: optuna.Study, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backend is flagged experimental
        ax = plot_optimization_history(study)
    ax.figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(ax.figure)


# ---------------------------------------------------------------------------------------------
# command line

def run(spec: Spec) -> dict:
    """Create or continue the study, run the workers, and write the report."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_search_space(spec)
    spec.study_dir.mkdir(parents=True, exist_ok=True)
    study = create_study(spec)
    print(f"study {spec.study}: {spec.trials} trials, {spec.workers} worker(s), storage {spec.storage}", flush=True)
    start = time.perf_counter()
    if spec.workers == 1:
        work(spec, 0)
    else:
        # spawn, not fork: each worker starts clean (no torch threads or storage connections copied)
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_worker_main, args=(spec, i, os.getpid()), daemon=False)
                 for i in range(spec.workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            raise RuntimeError(f"worker exit codes {[p.exitcode for p in procs]}")
    result = write_report(spec, study)
    print(f"done in {time.perf_counter() - start:.0f}s: {result['counts']}; "
          f"best {result.get('best_value')} with {result.get('best_params')}; report in {spec.study_dir}", flush=True)
    return result


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppo_research.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("spec", help="study spec, e.g. sweeps/gae_lambda.yaml")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides added to the spec's for every trial")
    parser.add_argument("--trials", type=int, help="trial budget (total over all workers and re-runs)")
    parser.add_argument("--workers", type=int, help="worker processes on this machine")
    parser.add_argument("--storage", help="optuna storage URL (sqlite:///, postgresql://, journal:<path>)")
    parser.add_argument("--study", help="study name (default: the spec's)")
    parser.add_argument("--out", default="outputs/sweeps", help="folder holding <study>/ (default outputs/sweeps)")
    args = parser.parse_intermixed_args(argv)
    try:
        spec = load_spec(args.spec, args.overrides, args.trials, args.workers, args.storage, args.study, args.out)
        run(spec)
    except (SpecError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to continue the study", file=sys.stderr, flush=True)
        return 130
    return 0

