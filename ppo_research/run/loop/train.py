"""Populations: several runs of one config, differing only in their seed and a declared set of
scalar hyperparameters, trained in one process (docs/populations.md).

Each member is a whole run - its own run directory, run.json, metrics, checkpoints, tracker
run, envs, normalisation, random streams - and the members' networks are updated together by
one stacked update (algo/stacking.py, run/loop/trainer.py). ``train_members`` is the life of a
population as ``train.train_from_config`` is a run's; a single run is a population of one.

A member's numbers depend on its population (the stacked update's round-off, amplified by the
dynamics), so every member's run.json names its population (``describe_members``), from which
``python -m ppo_research.rerun`` (tools/rerun.py) trains it again with the same numbers.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ...algo.losses import SURROGATES, KLPenaltyLoss
from ...errors import CheckpointError, ConfigError, RunDirError
from ..console import print_end_line, write_line
from ..rundir import checkpoint, owner
from ..rundir.checkpoint import check_free_space, check_run_dir
from ..rundir.files import describe_run, described_run_id
from ..rundir.resume import choose_checkpoint, set_aside
from ..signals.stops import TrainingInterrupted
from .build import build
from .seeds import POPULATION, stream_seed
from .trainer import Trainer

#: The config keys in which the members of one population may differ.
MEMBER_KEYS = ("seed", "loss.epsilon", "loss.beta", "loss.kl_target", "loss.adaptive", "advantage.lam",
               "advantage.gamma", "algo.learning_rate", "algo.ent_coef")


@dataclass
class MemberJob:
    """One member: what ``train.train_from_config`` takes for a solo run."""

    cfg: DictConfig
    run_dir: Path
    choices: dict
    overrides: Sequence[str] = ()
    resume_from: Optional[Path] = None  # a checkpoint of this member (all members resume together)
    on_evaluation: Optional[Callable[[int, int, float], None]] = None  # may raise to stop this member only
    resume_state: Optional[dict] = None  # the loaded ``resume_from``, if the caller has it
    hydra: Optional[DictConfig] = None  # the member's Hydra config (a multirun job's), for its tracker run


#: Keys that are every run's own whatever its hyperparameters: ``resume`` names the member's own
#: directory when the members continue their runs.
RUN_OWN_KEYS = ("resume",)


def _without_member_keys(cfg: Union[DictConfig, dict]) -> dict:
    data = copy.deepcopy(cfg) if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    for key in ("hydra", *RUN_OWN_KEYS):
        data.pop(key, None)
    if isinstance(data.get("loss"), dict):
        data["loss"] = _as_surrogate(data["loss"])
    for key in MEMBER_KEYS:
        *path, last = key.split(".")
        holder = data
        for part in path:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if isinstance(holder, dict):
            holder.pop(last, None)
    return data


def _as_surrogate(loss: dict) -> dict:
    """A CPI, clipped or KL-penalty loss config (``algo.losses.SURROGATES``, one family whose
    members differ only in epsilon and beta) as the KL penalty's, its unset settings at their
    defaults: so members of these kinds group together when their KL settings are the defaults or,
    among penalties, the same. Other losses stay as they are."""
    kinds = {f"{kind.__module__}.{kind.__name__}": kind for kind in SURROGATES}
    kind = kinds.get(loss.get("_target_"))
    if kind is None:
        return loss
    defaults = _defaults(KLPenaltyLoss)
    # a setting the penalty lacks, at its own kind's default, is the family's plain form (e.g. the
    # clip's anneal_epsilon=false): dropped, so it does not keep the kind apart
    own_defaults = _defaults(kind)
    own = {key: value for key, value in loss.items() if key != "_target_"
           and not (key not in defaults and key in own_defaults and value == own_defaults[key])}
    return {**defaults, **own, "_target_": "a CPI, clipped or KL-penalty surrogate"}


def _defaults(kind: type) -> dict:
    return {name: p.default for name, p in inspect.signature(kind).parameters.items()
            if p.default is not inspect.Parameter.empty}


def group_key(cfg: DictConfig) -> str:
    """Jobs whose configs are equal outside ``MEMBER_KEYS`` share a key: they can be one population."""
    return json.dumps(_without_member_keys(cfg), sort_keys=True, default=str)


def check_members(cfgs: Sequence[Union[DictConfig, dict]]) -> None:
    """Members must share everything but ``MEMBER_KEYS``: else a ConfigError naming the first
    difference."""
    first = _without_member_keys(cfgs[0])
    for k, cfg in enumerate(cfgs[1:], 1):
        other = _without_member_keys(cfg)
        if other != first:
            raise ConfigError("population", f"member {k}",
                              f"a config equal to member 0's outside {', '.join(MEMBER_KEYS)} and the loss "
                              f"kind among cpi, clip, klpen, klfixed (it differs in {_first_difference(first, other)})")


def _first_difference(a, b, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return prefix.rstrip(".") or "the config"


Result = Union[dict, BaseException]


def train_members(jobs: Sequence[MemberJob]) -> list[Result]:
    """Train ``jobs`` as one population; per job its summary, or the exception that ended it.

    A member that cannot be built (ConfigError) or whose directory is busy or unusable
    (RunDirError) fails alone, before training. A checkpoint that cannot be loaded fails the
    whole population (CheckpointError for every member): its members resume together. During
    training a member ends alone on divergence (NonFiniteError) or when its ``on_evaluation``
    raises (e.g. a pruned trial). A stop signal raises TrainingInterrupted after every running
    member's checkpoint.
    """

    results: list[Optional[Result]] = [None] * len(jobs)
    built = []  # (index, parts, torch generator state after the build)
    for i, job in enumerate(jobs):
        try:
            parts = build(job.cfg, job.choices)  # seeds the globals from the member's seed
            built.append((i, parts, torch.get_rng_state()))
        except Exception as err:  # noqa: BLE001 - a member's failure is its result
            results[i] = err
    if len(built) > 1:
        try:
            check_members([parts.resolved for _, parts, _ in built])
        except ConfigError as err:
            for i, _, _ in built:
                results[i] = err
            return results

    with contextlib.ExitStack() as held:
        members = []
        for i, parts, rng in built:
            job = jobs[i]
            try:
                held.enter_context(owner.hold(Path(job.run_dir)))
                check_run_dir(Path(job.run_dir))
                state = None
                if job.resume_from is not None:
                    state = job.resume_state if job.resume_state is not None else checkpoint.load(job.resume_from)
                    parts.run_id = state.get("run_id") or described_run_id(Path(job.run_dir)) or parts.run_id
                members.append((i, parts, rng, state))
            except (RunDirError, CheckpointError, OSError) as err:
                results[i] = err
        if members:
            _train(jobs, members, results)
    return results


def _train(jobs: Sequence[MemberJob], members: list, results: list) -> None:

    indices = [i for i, *_ in members]
    states = [state for *_, state in members]
    if any(s is not None for s in states) and any(s is None for s in states):
        missing = [str(jobs[i].run_dir) for i, s in zip(indices, states) if s is None]
        err = CheckpointError(f"a population resumes all its members together; no checkpoint to resume for "
                              f"{', '.join(missing)}")
        for i in indices:
            results[i] = err
        return
    resuming = states[0] is not None
    if resuming:
        states = _common_iteration(jobs, indices, states)
        if isinstance(states, CheckpointError):
            for i in indices:
                results[i] = states
            return
    stopped: dict[int, int] = {}  # member -> the iteration at which its own on_evaluation stopped it
    try:
        trainer = population_trainer([parts for _, parts, _, _ in members], [Path(jobs[i].run_dir) for i in indices],
                                     [rng for _, _, rng, _ in members],
                                     [_noting_stop(jobs[i].on_evaluation, k, stopped) for k, i in enumerate(indices)])
    except ConfigError as err:  # e.g. a network that cannot be stacked
        for i in indices:
            results[i] = err
        return
    loggers_started = []
    exit_code = 1
    try:
        try:
            for k, i in enumerate(indices):
                check_free_space(trainer.members[k].run_dir, trainer, k)
            exact = load_into(trainer, states if len(states) > 1 else states[0], jobs[indices[0]].resume_from) \
                if resuming else True
            exact = exact if isinstance(exact, list) else [exact]
        except (CheckpointError, RunDirError) as err:
            for i in indices:
                results[i] = err
            return
        describe_members(trainer, jobs, indices, stopped)
        for k, (m, i) in enumerate(zip(trainer.members, indices)):
            job = jobs[i]
            _make_current(job)  # the tracker names and groups the run from its own job's Hydra config
            m.logger.start(m.run_dir, m.parts.resolved, m.parts.choices,
                           resume_id=states[k].get("logger_run_id") if resuming else None)
            loggers_started.append(m)
        _make_current(jobs[indices[0]])  # the progress line is member 0's
        if resuming:
            trainer.restore_random(states)  # whatever the trackers drew at start-up must not shift the continuation
            for k, m in enumerate(trainer.members):
                continue_metrics(trainer, exact[k], m)
        outcomes = trainer.train_members()
        if stopped:  # a re-run must stop these members where they stopped
            describe_members(trainer, jobs, indices, stopped)
        exit_code = 0
        for k, (m, i) in enumerate(zip(trainer.members, indices)):
            results[i] = outcomes[k]
            if isinstance(outcomes[k], dict):
                _make_current(jobs[i])
                print_end_line(m.run_dir, outcomes[k], m.logger)  # each run's one-line end report
    except TrainingInterrupted as err:
        exit_code = 128 + err.signum
        err.ended = {i: m.ended for m, i in zip(trainer.members, indices) if m.ended is not None}  # stay ended on resume
        raise
    finally:
        trainer.close()
        for m in loggers_started:
            m.logger.finish(exit_code if m.ended is None else 1)


def population_members(trainer, jobs: Sequence[MemberJob], indices: list[int], stopped: dict[int, int]) -> list[dict]:
    """The population's members in order, as run.json records them: enough to train the
    population again exactly (``python -m ppo_research.rerun``), since a member's numbers depend on
    who it trains with (the stacked update's round-off) and not only on its own config.

    Each: ``run_dir`` (absolute), ``run_id``, ``config`` (resolved), ``choices``, ``overrides``
    and ``stopped_at``: the iteration at whose evaluation the member's ``on_evaluation`` stopped
    it (a pruned trial), else null."""
    return [{"run_dir": str(Path(m.run_dir).absolute()), "run_id": m.parts.run_id, "config": m.parts.resolved,
             "choices": dict(m.parts.choices), "overrides": list(jobs[i].overrides), "stopped_at": stopped.get(k)}
            for k, (m, i) in enumerate(zip(trainer.members, indices))]


def describe_members(trainer, jobs: Sequence[MemberJob], indices: list[int], stopped: dict[int, int]) -> None:
    """Every member's run.json, each naming its population and its own index ``k`` in it."""
    members = population_members(trainer, jobs, indices, stopped)
    for k, (m, i) in enumerate(zip(trainer.members, indices)):
        describe_run(m.run_dir, m.parts.resolved, m.parts.choices, jobs[i].overrides, m.parts.run_id,
                     population={"index": k, "members": members})


def _noting_stop(hook: Optional[Callable[[int, int, float], None]], k: int, stopped: dict[int, int]):
    """``hook``, noting in ``stopped[k]`` the iteration at which it stops member k: once a member
    stops, the others train on other numbers, so a re-run must stop it at the same iteration."""
    if hook is None:
        return None

    def on_evaluation(iteration: int, global_step: int, eval_return: float) -> None:
        try:
            hook(iteration, global_step, eval_return)
        except Exception:  # the trainer ends this member (as it ends it for any hook's exception)
            stopped[k] = iteration
            raise

    return on_evaluation


def _make_current(job: MemberJob) -> None:
    """Make the member's Hydra job config the current one (a multirun job's name, number, dir)."""
    if job.hydra is not None:

        HydraConfig.instance().set_config(job.hydra)


def population_trainer(parts: Sequence, run_dirs: Sequence[Path], rng_states: Sequence, hooks=None):
    """The Trainer of built members (``rng_states``: torch's generator state right after each
    member's build). Between the members' own streams torch's global generator holds the
    population's (run/loop/seeds.py); a single run keeps its own."""

    if len(parts) > 1:
        torch.manual_seed(stream_seed(parts[0].config.seed, POPULATION))
    return Trainer(list(parts), list(run_dirs), hooks, rng_states=list(rng_states))


def _common_iteration(jobs, indices: list[int], states: list[dict]):
    """Members resume together from one iteration: the newest that every member holds a usable
    checkpoint of. A kill while the members' checkpoints were written leaves some one ahead; a
    damaged checkpoint sends every member back to an older one, as it sends a single run (the
    damaged file is set aside as ``*.unusable``). Returns the members' states, or the
    CheckpointError when no such iteration is left."""

    states = list(states)
    iterations = [int(s["iteration"]) for s in states]
    latest = list(iterations)
    chosen: dict[int, Path] = {}
    skipped: dict[int, dict[Path, str]] = {}
    while len(set(iterations)) > 1:
        target = min(iterations)
        for k, i in enumerate(indices):
            if iterations[k] == target:
                continue
            try:
                path, state, passed = choose_checkpoint(Path(jobs[i].run_dir), at_most=target)
            except CheckpointError as err:
                return CheckpointError(f"the population's members hold checkpoints up to iterations "
                                       f"{sorted(set(latest))} and no iteration that every member can resume from: {err}")
            skipped.setdefault(k, {}).update(passed)
            chosen[k], states[k], iterations[k] = path, state, int(state["iteration"])
    for k, path in chosen.items():
        set_aside([(p, why) for p, why in skipped.get(k, {}).items()], path)
        write_line(f"resuming {jobs[indices[k]].run_dir} from iteration {iterations[k]}, the population's common "
                   f"checkpoint (its latest is {latest[k]})")
    return states


def train_from_config(cfg: DictConfig, run_dir: Path, choices: dict[str, str],
                      on_evaluation: Optional[Callable[[int, int, float], None]] = None,
                      resume_from: Optional[Path] = None, overrides: Sequence[str] = (),
                      resume_state: Optional[dict] = None) -> dict:
    """Build the run of ``cfg``, train it in ``run_dir`` and return the summary. Usable without
    Hydra's runtime (the sweep driver calls it per trial with an ``on_evaluation`` pruning hook).
    A run is a population of one (run/loop/train.py): this is ``train_members`` of one job.

    The run owns ``run_dir`` while it lives (run/rundir/owner.py): a second writer is refused.

    ``resume_from``: a checkpoint of this run to continue from (``resume_state``: its loaded
    state, if the caller has it). The state is loaded into the trainer before anything in the
    directory is written; then rows of ``metrics.jsonl`` past it are dropped and a gap before it
    is reported. Failures raise: ConfigError, RunDirError, CheckpointError before training;
    NonFiniteError, TrainingInterrupted (a KeyboardInterrupt) during it.
    """

    result = train_members([MemberJob(cfg, Path(run_dir), choices, overrides, resume_from, on_evaluation,
                                      resume_state)])[0]
    if isinstance(result, BaseException):
        raise result
    return result


def load_into(trainer, state: dict, path: Path) -> bool:
    """Load ``state`` into the trainer (nothing is written); returns whether the envs are exact."""
    try:
        return trainer.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as err:  # e.g. a network of another size
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} does not fit this run's config: {first}") from None


def _ranges(numbers: list[int]) -> str:
    spans, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            spans.append(f"{start}" if start == n else f"{start}-{n}")
            start = None
    return ", ".join(spans)


def continue_metrics(trainer, exact: bool, member=None) -> None:
    """Drop the rows past the checkpoint; report rows missing before it (one line).
    ``member``: which of the trainer's runs (default its first)."""
    member = member or trainer.members[0]
    path = member.run_dir / checkpoint.METRICS_FILE
    dropped = checkpoint.truncate_metrics(path, trainer.iteration)
    write_line(f"resuming {member.run_dir} from iteration {trainer.iteration} (global step {trainer.global_step}); "
          f"{dropped} metrics row(s) past the checkpoint dropped")
    held = checkpoint.metrics_iterations(path)
    missing = sorted(set(range(1, trainer.iteration + 1)) - set(held or ()))
    if missing:
        what = f"{path} is missing" if held is None else \
            f"{path} lacks the rows of iteration(s) {_ranges(missing)}"
        write_line(f"warning: {what}: {len(missing)} of the {trainer.iteration} iteration(s) before the checkpoint have no "
              f"metrics row (lost before this resume); the run goes on from the checkpoint")
    if not exact and member.cfg.env.backend == "envpool":
        write_line(f"warning: the envs of {member.cfg.env.id} (envpool) cannot be restored exactly (EnvPool's internal "
              "env state cannot be checkpointed); they restart with fresh episodes, re-seeded, so the continuation "
              "is correct but not bit-identical to an uninterrupted run")
    elif not exact:
        write_line(f"warning: the envs of {member.cfg.env.id} ({member.cfg.env.vectorization}) cannot be restored "
              "exactly; they restart with fresh episodes, so the continuation is correct but not bit-identical "
              "to an uninterrupted run")
