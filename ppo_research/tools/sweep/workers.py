"""Workers: processes that run trials in turn against the shared storage until the budget is used.

The budget counts trials that ended because of the objective (COMPLETE, PRUNED, FAIL with an
error). A RUNNING trial whose worker is gone is marked FAIL ``interrupted`` and does not count:
on this machine the worker's process id tells, elsewhere a heartbeat (``alive_at``) older than
3 x ``heartbeat_s``. A worker claims a trial only if fewer than ``trials`` counted or running
trials are numbered before it, so the count is exact with any number of workers and machines.
With ``--population N`` a worker claims up to N trials at once, each by that same rule, never
more than the budget has left, and trains them together (``trial.run_population``).
A worker that is a SLURM job parks its trials at a preemption and its restart resumes them
(slurm.py); a parked trial is alive while SLURM says its job is queued or running.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from typing import Optional

import optuna
from optuna.trial import TrialState

from ...run.console import write_line
from ...run.signals.stops import FORWARDED, forwarded_stop_pending, listen_for_forwarded_stops, starting_workers
from . import slurm
from .spec import HOST, Spec, make_pruner, make_sampler, param_overrides
from .storage import load_study
from .trial import Interrupted, Outcome, run_population, run_trial


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
    parked = slurm.parked_alive(attrs)  # left by a SLURM job for its restart (tools/sweep/slurm.py)
    if parked is not None:
        return "alive" if parked else "dead"
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
    """Refresh the trials' ``alive_at`` so workers elsewhere can tell they are still running."""

    def __init__(self, trials: list[optuna.Trial], every_s: float):
        self.trials, self.every_s, self.stop = list(trials), every_s, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.every_s):
            for trial in self.trials:
                try:
                    trial.set_user_attr("alive_at", time.time())
                except Exception:  # the trial finished meanwhile
                    pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def claim(study: optuna.Study, spec: Spec, n: int, grace: float) -> list[optuna.Trial]:
    """Ask up to ``n`` trials (enqueued ones first, as ``study.ask`` gives them) and keep those the
    budget allows.

    Exact count despite races: a trial is kept only if fewer than ``trials`` counted or running
    trials are numbered before it. A trial that loses the race is told FAIL with ``skipped``
    (not counted); the trials after it would lose too, so asking stops there."""
    claimed = []
    while len(claimed) < n:
        trial = study.ask()
        trial.set_user_attr("host", HOST)
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("alive_at", time.time())
        slurm.tag(trial)
        now = time.time()
        ahead = sum(classify(t, grace, now) in ("done", "alive")
                    for t in study.get_trials(deepcopy=False) if t.number < trial.number)
        if ahead >= spec.trials:
            trial.set_user_attr("skipped", "budget taken by a concurrent worker")
            study.tell(trial, state=TrialState.FAIL)
            break
        claimed.append(trial)
    return claimed


def solo_outcome(spec: Spec, trial: optuna.Trial, parent_pid: Optional[int], resume: bool = False) -> Outcome:
    try:
        return run_trial(spec, trial, parent_pid, resume)
    except Exception as err:  # noqa: BLE001 - pruned, interrupted, or failed: told by ``tell``
        return err


def tell(study: optuna.Study, trial: optuna.Trial, outcome: Outcome, worker: int, seconds: float) -> None:
    """Tell the study how the trial ended (an ``Interrupted`` trial is FAIL, not counted)."""
    if isinstance(outcome, optuna.TrialPruned):
        state, note = study.tell(trial, state=TrialState.PRUNED).state, str(outcome)
    elif isinstance(outcome, Interrupted):
        trial.set_user_attr("interrupted", "sweep command gone")
        study.tell(trial, state=TrialState.FAIL)
        return
    elif isinstance(outcome, BaseException):  # NonFiniteError, ConfigError, env errors: record and go on
        note = f"{type(outcome).__name__}: {str(outcome).splitlines()[0] if str(outcome) else ''}"
        trial.set_user_attr("error", note)
        state = study.tell(trial, state=TrialState.FAIL).state
    else:
        state, note = study.tell(trial, outcome).state, f"value={outcome:.4g}"
    print(f"[worker {worker}] trial {trial.number} {state.name} {note} "
          f"{' '.join(param_overrides(trial.params))} ({seconds:.1f}s)", flush=True)


def work(spec: Spec, worker: int = 0, parent_pid: Optional[int] = None, poll_s: float = 1.0) -> None:
    """Run trials until the budget is used: ask, claim, train, tell; repeat. With
    ``spec.population`` > 1 a worker claims up to that many trials at once and trains them as
    populations (``trial.run_population``)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = load_study(spec)
    study.sampler = make_sampler(spec, worker, len(study.get_trials(deepcopy=False)))
    study.pruner = make_pruner(spec)
    grace = 3 * spec.heartbeat_s
    warning = slurm.listen() if parent_pid is None else None  # a SLURM job's worker: preemption-safe
    adopted = slurm.adopt(study) if warning is not None else []  # its trials, left by its earlier attempt
    while True:
        if parent_pid is not None and (os.getppid() != parent_pid or forwarded_stop_pending()):
            return  # the sweep command was killed or stopped: stop with it
        if warning is not None and warning.pending:  # the job's end is near: claim nothing more
            raise _requeued(slurm.requeue([]))
        resume, trials = bool(adopted), adopted
        if not adopted:
            done, alive = budget(study, grace)
            if done >= spec.trials:
                return
            if done + alive >= spec.trials:  # the last trials run elsewhere; wait in case one dies
                if slurm.all_parked(study, alive):  # only their own SLURM job resumes them: leave them to it
                    return
                time.sleep(poll_s)
                continue
            trials = claim(study, spec, min(spec.population, spec.trials - done - alive), grace)
            if not trials:
                continue
        adopted = []
        start = time.perf_counter()
        try:
            with Heartbeat(trials, spec.heartbeat_s):
                if spec.population == 1 and len(trials) == 1:
                    outcomes = [solo_outcome(spec, trials[0], parent_pid, resume)]
                else:
                    for trial in trials:  # the trials trained together
                        trial.set_user_attr("population", [t.number for t in trials])
                    outcomes = run_population(spec, trials, parent_pid, resume)
        except KeyboardInterrupt as err:
            if slurm.parks(err, warning):  # kept RUNNING for this job's restart, which resumes them
                ended = getattr(err, "outcomes", {})  # trials of the population that had ended before
                seconds = time.perf_counter() - start
                for trial in trials:
                    if trial.number in ended:
                        tell(study, trial, ended[trial.number], worker, seconds)
                parked = [t for t in trials if t.number not in ended]
                slurm.park(parked)
                if err.signum == slurm.WARNING:
                    raise _requeued(slurm.requeue([t.number for t in parked])) from None
                err.continue_with = (f"trial(s) {', '.join(str(t.number) for t in parked)} parked: if SLURM "
                                     f"requeues job {slurm.job()}, it resumes them")
                raise
            how = f"stopped by {signal.Signals(getattr(err, 'signum', signal.SIGINT)).name}"
            for trial in trials:
                trial.set_user_attr("interrupted", how)
                study.tell(trial, state=TrialState.FAIL)
            raise
        seconds = time.perf_counter() - start
        for trial, outcome in zip(trials, outcomes):
            tell(study, trial, outcome, worker, seconds)
        if any(isinstance(outcome, Interrupted) for outcome in outcomes):
            return


def _requeued(line: str) -> KeyboardInterrupt:
    """The worker's end after the warning: a stop by that signal that says how it goes on."""
    stop = KeyboardInterrupt(line)
    stop.signum, stop.continue_with = int(slurm.WARNING), line
    return stop


def _worker_main(spec: Spec, worker: int, parent_pid: int) -> None:
    listen_for_forwarded_stops("the sweep command")
    try:
        work(spec, worker, parent_pid)
    except KeyboardInterrupt as err:
        sys.exit(128 + getattr(err, "signum", signal.SIGINT))


class SweepStopped(KeyboardInterrupt):
    """The sweep command was stopped by a signal; its workers have stopped after a checkpoint."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class _PassStopsOn:
    """While the command waits for its workers: SIGINT/SIGTERM to the command is passed on to
    them as a stop (each finishes its iteration and writes a checkpoint); a second one exits at once."""

    def __init__(self, procs: list):
        self.procs, self.signum = procs, None

    def _pass_on(self) -> None:
        for p in self.procs:
            if p.pid is not None:  # started (no exitcode check here: it would reap the child under join)
                try:
                    os.kill(p.pid, FORWARDED)
                except ProcessLookupError:
                    pass

    def _handler(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            write_line(f"\n{name} again: stopping the workers at once, without their checkpoints")
            self._pass_on()
            os._exit(128 + signum)
        self.signum = signum
        write_line(f"\n{name}: stopping the workers after their current iteration (each writes a checkpoint; "
                   f"send it again to exit at once)")
        self._pass_on()

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, old in self._previous.items():
            signal.signal(s, old)


def run_workers(spec: Spec) -> list[int]:
    """``spec.workers`` workers on this machine; returns their exit codes when all have stopped
    (-N: killed by signal N; a killed worker's running trial is marked interrupted by the others).
    Raises ``SweepStopped`` when the command was stopped by a signal (its workers stopped first)."""
    if spec.workers == 1:
        work(spec, 0)
        return [0]
    # spawn, not fork: each worker starts clean (no torch threads or storage connections copied)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(spec, i, os.getpid()), daemon=False)
             for i in range(spec.workers)]
    with _PassStopsOn(procs) as stops:
        with starting_workers():
            for p in procs:
                if stops.signum is None:  # stopped while starting them: start no more
                    p.start()
        for p in procs:
            if p.pid is not None:
                p.join()
    if stops.signum is not None:
        raise SweepStopped(stops.signum)
    return [p.exitcode for p in procs]
