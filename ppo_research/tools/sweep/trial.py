"""Trials: sample their parameters, train their (seed, env) runs, return their scores.

A run is exactly ``python -m ppo_research <spec.run_overrides(...)>``: composed by
``run.compose.compose`` and trained (no Hydra runtime, the same checks) in
``<study>/trials/<number>/<env>-s<seed>/`` (``s<seed>`` for one env), which the trainer describes
with its ``run.json`` like any run directory. Each run has its own directory (the spec's seeds
are distinct), and a run never trains into a directory that already holds files (``new_run_dir``).

``run_trial`` trains one trial's runs in turn (``--population 1``). ``run_population`` trains
several trials' runs together as populations (run/loop/train.py): one population per env, whose
members are every (trial, seed) run on that env; each trial reports and is pruned on its own.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import optuna
from hydra.conf import HydraConf
from hydra.types import RunMode
from omegaconf import OmegaConf

from ...errors import RunDirError
from ...run.config.compose import Composed, compose
from ...run.loop.train import MemberJob, train_from_config, train_members
from ...run.rundir import checkpoint
from ...run.rundir.resume import continue_in_place
from ...run.signals.stops import TrainingInterrupted
from ..stats import aggregate
from .spec import TRIAL_DEFAULTS, Spec, param_overrides, run_name


class Interrupted(Exception):
    """The sweep command went away (its worker stops); the trial does not count."""


class RunStopped(Exception):
    """Another run of the same trial ended early (it diverged), so this one stops too."""


def trial_dir(spec: Spec, number: int) -> Path:
    return spec.study_dir / "trials" / f"{number:04d}"


def new_run_dir(spec: Spec, number: int, env: Optional[str], seed: int) -> Path:
    """The directory of a trial's run, which must not hold files yet: a trial's run never writes
    into another run's files (a trials/ folder left by a removed study of the same name, or by
    another storage used with the same --out and --study). The trial fails instead."""
    path = trial_dir(spec, number) / run_name(env, seed)
    try:
        taken = path.is_dir() and any(path.iterdir())
    except OSError:
        taken = True
    if taken or (path.exists() and not path.is_dir()):
        raise RunDirError(f"run directory {path} already holds files (of another study named {spec.study!r}?): "
                          f"a trial's run trains only into a new directory")
    return path


@dataclass
class Attempt:
    """What an earlier attempt of a resumed trial (its SLURM job requeued: tools/sweep/slurm.py)
    left in one run directory: the run finished (``summary``), or a checkpoint to continue from
    (``resume_from``; None: the run starts over), and the eval returns of its rows kept."""

    summary: Optional[dict] = None
    resume_from: Optional[Path] = None
    evals: list[float] = field(default_factory=list)


def earlier_attempt(run_dir: Path, number: int) -> Attempt:
    """The state of a resumed trial's run in ``run_dir``, said in a line when it resumes."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = None
    if isinstance(summary, dict):
        return Attempt(summary, None, _evals(run_dir, None))
    if not continue_in_place(run_dir, f"trial {number} resumed after its SLURM job's requeue", announce=False):
        return Attempt()
    path = checkpoint.latest(run_dir)
    return Attempt(None, path, _evals(run_dir, checkpoint.iteration_of(path)))


def _evals(run_dir: Path, up_to: Optional[int]) -> list[float]:
    """The eval returns in ``run_dir``'s metrics.jsonl (rows up to iteration ``up_to``)."""
    evals = []
    try:
        lines = (run_dir / checkpoint.METRICS_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return evals
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "eval_return" in row and (up_to is None or row.get("iteration", 0) <= up_to):
            evals.append(row["eval_return"])
    return evals


def sample(spec: Spec, trial: optuna.Trial) -> dict:
    """The trial's parameters (recorded as its ``overrides`` attribute too)."""
    params = {p.key: p.suggest(trial) for p in spec.params}
    trial.set_user_attr("overrides", param_overrides(params))
    return params


def compose_run(spec: Spec, trial: optuna.Trial, params: dict, env: Optional[str], seed: int,
                population: bool = False) -> tuple[Composed, list[str]]:
    """The composed config of one run of ``trial`` and the overrides it was composed from.

    With wandb each run is a wandb run grouped by study (``job_type=sweep-trial``). A solo run is
    named ``<study>-t<trial>-<run>``; a population's members must share their config outside the
    member keys, so there the name and notes are left to the tracker's defaults, which name the
    run by its own ``loss.*``/``advantage.*`` values and seed (``run_context``)."""
    overrides = TRIAL_DEFAULTS + spec.run_overrides(params, env, seed)
    composed = compose(overrides)
    cfg = composed.cfg
    if "job_type" in cfg.logger:
        cfg.logger.job_type = "sweep-trial"
        cfg.logger.group = spec.study
        if population:
            cfg.logger.name = None
            cfg.logger.notes = f"optuna study {spec.study} (trials trained as populations)"
        else:
            cfg.logger.name = f"{spec.study}-t{trial.number:04d}-{run_name(env, seed)}"
            cfg.logger.notes = (f"optuna trial {trial.number} of study {spec.study}: "
                                f"{' '.join(param_overrides(params))}")
    return composed, overrides


def run_value(spec: Spec, trial: optuna.Trial, env: Optional[str], seed: int, summary: dict,
              evals: list[float]) -> float:
    """A finished run's metric (recorded on the trial), normalised: its part of the trial's score."""
    name = run_name(env, seed)
    value = sum(evals) / len(evals) if spec.metric == "eval_auc" and evals else summary.get(spec.metric)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"run {name} gave {spec.metric}={value!r}")
    trial.set_user_attr(f"{spec.metric}/{name}", value)
    return spec.normalise(env, value)


def check_parent(parent_pid: Optional[int]) -> None:
    if parent_pid is not None and os.getppid() != parent_pid:
        raise Interrupted("the sweep command is gone")


def run_trial(spec: Spec, trial: optuna.Trial, parent_pid: Optional[int], resume: bool = False) -> float:
    """Train every (seed, env) of the trial in turn and return the aggregated score.

    Intermediate values: each periodic evaluation reports its (normalised) eval return at
    step = environment steps the trial has used so far, summed over its earlier runs. Trials
    thus compare at equal cost and equal position in the seed/env order, and one pruning
    decision can stop the whole trial during its first seed.

    ``resume``: the trial was trained before by this SLURM job's earlier attempt (the same
    parameters: optuna gives a trial's suggested values back); its finished runs count as they
    are and the others continue from their checkpoints (``earlier_attempt``).
    """

    params = sample(spec, trial)
    scores, offset = [], 0
    for seed in spec.seeds:
        for env in spec.env_runs():
            composed, overrides = compose_run(spec, trial, params, env, seed)
            run_dir = trial_dir(spec, trial.number) / run_name(env, seed) if resume else \
                new_run_dir(spec, trial.number, env, seed)
            attempt = earlier_attempt(run_dir, trial.number) if resume else Attempt()
            evals: list[float] = list(attempt.evals)

            def on_evaluation(iteration: int, global_step: int, eval_return: float, env=env, offset=offset) -> None:
                check_parent(parent_pid)
                evals.append(eval_return)
                trial.report(spec.normalise(env, eval_return), offset + global_step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {offset + global_step}")

            summary = attempt.summary or train_from_config(composed.cfg, run_dir, composed.choices,
                                                           on_evaluation=on_evaluation, overrides=overrides,
                                                           resume_from=attempt.resume_from)
            offset += summary["global_step"]
            scores.append(run_value(spec, trial, env, seed, summary, evals))
    return aggregate(scores, spec.aggregate)


# -- populations -----------------------------------------------------------------------------

Outcome = Union[float, BaseException]  # a trial's score, or why it has none (TrialPruned, an error, Interrupted)


def run_context(spec: Spec, overrides: list[str]):
    """A Hydra job config holding only what the tracker reads (run/loggers.HydraContext): the
    run's overrides, so a population member's wandb run is named as ``python -m ppo_research
    <overrides>`` would name it."""

    node = OmegaConf.create({"hydra": OmegaConf.structured(HydraConf)})
    node.hydra.mode = RunMode.RUN
    node.hydra.sweep.dir = str(spec.study_dir)
    node.hydra.overrides.task = list(overrides)
    return node


class PopulationTrial:
    """One trial's part in populations: its runs' evaluations become the trial's reports and
    pruning decisions; their ends become its outcome.

    At each periodic evaluation, once all the trial's runs on the env have evaluated, the trial
    reports the mean of their (normalised) eval returns at step = environment steps the trial
    has used so far (its runs on earlier envs, plus runs x steps on this one). A pruning decision
    stops the run that made it at once and the trial's other runs at their next evaluation; a run
    that ends early otherwise (divergence) stops them the same way, since the trial has failed.
    """

    def __init__(self, spec: Spec, trial: optuna.Trial, parent_pid: Optional[int], resume: bool = False):
        self.spec, self.trial, self.parent_pid, self.resume = spec, trial, parent_pid, resume
        self.params: dict = {}
        self.offset = 0  # environment steps of the trial's runs on earlier envs
        self.pruned: Optional[optuna.TrialPruned] = None
        self.failure: Optional[BaseException] = None  # the first error that failed the trial
        self.interrupted: Optional[Interrupted] = None
        self.scores: dict[tuple[int, Optional[str]], float] = {}
        self.evals: dict[Optional[str], list[list[float]]] = {}  # env -> each seed's eval returns
        try:
            self.params = sample(spec, trial)
        except Exception as err:  # noqa: BLE001 - a trial's failure is its outcome
            self.failure = err

    @property
    def going(self) -> bool:
        return self.pruned is None and self.failure is None and self.interrupted is None

    def jobs(self, env: Optional[str]) -> list:
        """The trial's member jobs on ``env``, one per seed (none once the trial has ended)."""

        if not self.going:
            return []
        jobs, pending = [], {}  # iteration -> the normalised eval returns of the runs that reported it
        self.evals[env] = []
        finished = []  # a resumed trial's runs on env that its earlier attempt finished
        for seed in self.spec.seeds:
            try:
                composed, overrides = compose_run(self.spec, self.trial, self.params, env, seed, population=True)
                run_dir = trial_dir(self.spec, self.trial.number) / run_name(env, seed) if self.resume else \
                    new_run_dir(self.spec, self.trial.number, env, seed)
                attempt = earlier_attempt(run_dir, self.trial.number) if self.resume else Attempt()
            except Exception as err:  # noqa: BLE001
                self.failure = err
                return []
            evals: list[float] = list(attempt.evals)
            self.evals[env].append(evals)
            finished.append(attempt.summary)
            jobs.append(MemberJob(composed.cfg, run_dir,
                                  composed.choices, overrides, on_evaluation=self._hook(env, pending, evals),
                                  hydra=run_context(self.spec, overrides), resume_from=attempt.resume_from))
        if all(summary is not None for summary in finished):  # (the members of one env finish together)
            self.finish(env, finished)
            return []
        return jobs

    def _hook(self, env: Optional[str], pending: dict, evals: list[float]) -> Callable[[int, int, float], None]:
        runs = len(self.spec.seeds)

        def on_evaluation(iteration: int, global_step: int, eval_return: float) -> None:
            check_parent(self.parent_pid)
            if self.pruned is not None:
                raise optuna.TrialPruned(str(self.pruned))
            evals.append(eval_return)
            if any(it < iteration for it in pending):  # a run missed an evaluation: it has ended
                raise RunStopped("another run of the trial ended early")
            pending.setdefault(iteration, []).append(self.spec.normalise(env, eval_return))
            if len(pending[iteration]) < runs:
                return
            values = pending.pop(iteration)
            step = self.offset + runs * global_step
            self.trial.report(sum(values) / len(values), step)
            if self.trial.should_prune():
                self.pruned = optuna.TrialPruned(f"pruned at step {step}")
                raise optuna.TrialPruned(str(self.pruned))

        return on_evaluation

    def finish_ended(self, results: list) -> None:
        """Take what ended some of the trial's runs: an interruption, or an error that fails the
        trial (a pruning decision is already noted; RunStopped follows another run's end)."""
        for result in results:
            if isinstance(result, Interrupted):
                self.interrupted = self.interrupted or result
            elif isinstance(result, BaseException) and not isinstance(result, (optuna.TrialPruned, RunStopped)):
                self.failure = self.failure or result

    def finish(self, env: Optional[str], results: list) -> None:
        """Take the results of the trial's runs on ``env`` (seed order): their scores, or what
        ended the trial."""
        self.finish_ended(results)
        if not self.going:
            return
        ended = [r for r in results if isinstance(r, BaseException)]
        if ended:  # stopped with no error of a run to show (not expected): the trial has no score
            self.failure = ended[0]
            return
        for seed, summary, evals in zip(self.spec.seeds, results, self.evals[env]):
            try:
                self.scores[(seed, env)] = run_value(self.spec, self.trial, env, seed, summary, evals)
            except ValueError as err:
                self.failure = err
                return
            self.offset += summary["global_step"]

    def outcome(self) -> Outcome:
        """The trial's score, or what ended it: pruned first (the decision came before any later
        error of a run already condemned), then a run's error, then an interruption."""
        if self.pruned is not None:
            return self.pruned
        if self.failure is not None:
            return self.failure
        if self.interrupted is not None:
            return self.interrupted
        scores = [self.scores[(seed, env)] for seed in self.spec.seeds for env in self.spec.env_runs()]
        return aggregate(scores, self.spec.aggregate)


def run_population(spec: Spec, trials: list[optuna.Trial], parent_pid: Optional[int],
                   resume: bool = False) -> list[Outcome]:
    """Train ``trials`` together and return each one's outcome, in order.

    Every run of the trials on one env is a member of one population (``train_members``): the
    members differ only in the searched parameters and seed, which ``space.check_search_space``
    keeps to the member keys. Several envs are trained one population after the other, env by
    env; a trial pruned or failed on one env has no runs on the next.

    ``resume``: the trials were trained before by this SLURM job's earlier attempt (``run_trial``).
    A stop signal raises TrainingInterrupted with ``outcomes``: those of the trials that had
    ended before it (pruned, diverged), by trial number.
    """

    members = [PopulationTrial(spec, trial, parent_pid, resume) for trial in trials]
    for env in spec.env_runs():
        jobs = [(m, m.jobs(env)) for m in members]
        flat = [job for _, js in jobs for job in js]
        if not flat:
            if any(m.going and (m.resume and env in m.evals) for m in members):
                continue  # (the resumed trials' runs on env were finished by the earlier attempt)
            break
        try:
            results = train_members(flat)
        except TrainingInterrupted as err:
            at = 0
            for m, js in jobs:  # runs that ended before the stop: their trial's outcome
                m.finish_ended([err.ended[i] for i in range(at, at + len(js)) if i in err.ended])
                at += len(js)
            err.outcomes = {m.trial.number: m.outcome() for m in members if not m.going}
            raise
        at = 0
        for m, js in jobs:
            m.finish(env, results[at:at + len(js)])
            at += len(js)
        if any(m.interrupted is not None for m in members):
            break
    return [m.outcome() for m in members]
