"""A population process: ``python -m hydra_plugins.ppo_research_population.worker <request> <result>``.

The launcher pickles the population's jobs (number and whole config each) into ``<request>``;
this process sets up every member as a job of its own (``prepare_member``), trains the members
together through ``ppo_research.run.loop.train.train_members``, and pickles one JobReturn per job
(and whether a stop ended it) into ``<result>``. Failures are reported by the app's own rules:
one ``error:`` line each, the same statuses.

ppo_research (and torch with it) is imported inside the functions, after ``main`` has deferred
SIGINT: torch's C++ start-up can abort on a Ctrl-C, and this module is also imported by Hydra's
plugin scan in every Hydra application.
"""
from __future__ import annotations  # (no dataclass here: Hydra scans plugin modules outside sys.modules)

import os
import pickle
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus, configure_log, env_override, setup_globals
from omegaconf import DictConfig, OmegaConf

from ppo_research.run.console import write_line

if TYPE_CHECKING:
    from ppo_research.run.loop.train import MemberJob

from .job_returns import job_return, task_config


def prepare_member(idx: int, config: DictConfig, claimed: dict[Path, int],
                   resume: bool = False) -> Union["MemberJob", BaseException]:
    """Everything a job gets before its training, for one member: Hydra's part (``run_job``: its
    Hydra config current, the output directory, ``.hydra/``) and the app's (``main``: one owner per
    run directory; ``plan_job``: a resume in place or a fresh run, never over another run; with
    ``resume``, the run its directory holds is continued). Returns the member, or the failure its
    JobReturn carries (already reported in one line)."""
    from ppo_research.errors import EXIT_BAD_INPUT, RunDirError
    from ppo_research.run import jobs as job_api
    from ppo_research.run.loop.train import MemberJob
    from ppo_research.run.rundir import owner

    HydraConfig.instance().set_config(config)
    run_dir = Path(config.hydra.runtime.output_dir)
    task = task_config(config)
    if run_dir in claimed:
        return job_api.fail_job(f"error: output directory {run_dir} is also job {claimed[run_dir]}'s: one run directory "
                             f"has one writer; make hydra.sweep.subdir differ between jobs", EXIT_BAD_INPUT)
    try:
        owner.acquire(run_dir)  # (creates the directory)
    except RunDirError as err:  # another live process owns it, or it cannot be made: touch nothing
        return job_api.fail_job(f"error: {err}", EXIT_BAD_INPUT)
    try:  # a refused job writes nothing: .hydra/ only once the plan is accepted
        plan = job_api.plan_job(task, HydraConfig.get(), run_dir,
                            continuing=f"job {idx}: hydra.launcher.resume=true" if resume else None)
    except Exception as err:  # noqa: BLE001 - reported as the app reports it
        owner.release(run_dir)
        return _failure(err, run_dir)
    try:
        if config.hydra.output_subdir is not None:
            hydra_dir = run_dir / str(config.hydra.output_subdir)
            hydra_dir.mkdir(parents=True, exist_ok=True)
            for name, node in (("config.yaml", task), ("hydra.yaml", HydraConfig.instance().cfg),
                               ("overrides.yaml", config.hydra.overrides.task)):
                (hydra_dir / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")
    except OSError as err:
        owner.release(run_dir)
        return job_api.fail_job(f"error: {job_api.output_dir_line(err)}", EXIT_BAD_INPUT)
    claimed[run_dir] = idx
    return MemberJob(plan.cfg, run_dir, plan.choices, plan.overrides, resume_from=plan.resume_from,
                     resume_state=plan.resume_state, hydra=config)


def _failure(err: BaseException, run_dir: Path) -> BaseException:
    """The app's report of a job's failure (a RunFailed), or the bug itself under HYDRA_FULL_ERROR."""
    from ppo_research.run import jobs as job_api

    try:
        return job_api.job_failure(err, run_dir)
    except Exception as raw:  # noqa: BLE001 - HYDRA_FULL_ERROR: the job fails with the exception itself
        return raw


def finish_member(config: DictConfig, result: Union[dict, BaseException], run_dir: Path):
    """The member's JobReturn: its eval return, as the app's ``main`` returns it, or its failure."""
    HydraConfig.instance().set_config(config)
    if isinstance(result, BaseException):
        return job_return(config, JobStatus.FAILED, _failure(result, run_dir))
    return job_return(config, JobStatus.COMPLETED, result.get("eval_return"))


def configure_logging(configs: list[DictConfig]) -> None:
    """Hydra's job logging for all members at once: handlers that differ between members (the
    ``app.log`` file of each run directory) are all attached, the others once."""
    merged: dict = {}
    for number, config in enumerate(configs):
        HydraConfig.instance().set_config(config)
        conf = OmegaConf.to_container(config.hydra.job_logging, resolve=True)
        if not merged:
            merged = conf
            continue
        for name, handler in (conf.get("handlers") or {}).items():
            if merged.setdefault("handlers", {}).get(name) == handler:
                continue
            merged["handlers"][f"{name}_{number}"] = handler
            for logger in [merged.get("root") or {}, *(merged.get("loggers") or {}).values()]:
                if name in (logger.get("handlers") or []):
                    logger["handlers"].append(f"{name}_{number}")
    if merged:
        configure_log(OmegaConf.create(merged), configs[0].hydra.verbose)


def train_population(jobs: list[tuple[int, DictConfig]], resume: bool = False) -> dict[str, Any]:
    """Set up, train and report the members of one population (``resume``: continuing the runs
    their directories hold); a stop ends all of them."""
    from ppo_research.run import jobs as job_api
    from ppo_research.run.loop.train import train_members
    from ppo_research.run.rundir import owner
    from ppo_research.run.signals.stops import TrainingInterrupted

    configs = dict(jobs)
    returns, members, claimed = {}, {}, {}
    for idx, config in jobs:
        prepared = prepare_member(idx, config, claimed, resume)
        if isinstance(prepared, BaseException):
            returns[idx] = job_return(config, JobStatus.FAILED, prepared)
        else:
            members[idx] = prepared
    interrupted = None
    try:
        if members:
            configure_logging([configs[idx] for idx in members])
            first = configs[next(iter(members))]
            HydraConfig.instance().set_config(first)  # each member's own is current while its tracker run starts
            try:
                with env_override(dict(first.hydra.job.env_set)):
                    results = train_members(list(members.values()))
            except Exception as err:  # noqa: BLE001 - a bug of the population: every member's failure
                results = [err] * len(members)
            for (idx, member), result in zip(members.items(), results):
                returns[idx] = finish_member(configs[idx], result, member.run_dir)
    except KeyboardInterrupt as err:
        if isinstance(err, TrainingInterrupted):
            interrupted = {"signum": err.signum, "iteration": err.iteration, "checkpoint": str(err.checkpoint),
                           "ended": {idx: _picklable(finish_member(configs[idx], err.ended[k], member.run_dir))
                                     for k, (idx, member) in enumerate(members.items()) if k in err.ended}}
        else:
            interrupted = {"signum": None}
        for member in members.values():  # a member that had not started leaves nothing behind
            job_api.remove_if_unused(member.run_dir)
    finally:
        for member in members.values():
            owner.release(member.run_dir)
    return {"returns": {idx: _picklable(ret) for idx, ret in returns.items()}, "interrupted": interrupted}


def _picklable(ret):
    """A JobReturn whose failure can travel back to the launcher (a bug's exception may not pickle)."""
    try:
        pickle.dumps(ret)
        return ret
    except Exception:  # noqa: BLE001
        from ppo_research.run.jobs import EXIT_BUG, RunFailed

        err = ret._return_value
        ret.return_value = RunFailed(f"error: unexpected {type(err).__name__}: {str(err).strip()[:300]}", EXIT_BUG)
        return ret


def _stop_with_parent(parent: int) -> None:
    """SIGTERM when the launcher's process dies (Linux): the members stop after a checkpoint."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> int:
    from ppo_research.run.signals.stops import listen_for_forwarded_stops, sigint_deferred

    listen_for_forwarded_stops("the multirun's launcher")
    request_path, result_path = argv
    with open(request_path, "rb") as f:
        request = pickle.load(f)
    _stop_with_parent(request["parent"])
    sys.argv = request["argv"]  # the command that started the population (the owner lock and app.log name it)
    from ppo_research.run import jobs as job_api

    with sigint_deferred():  # torch's C++ start-up can abort (SIGABRT) on a signal
        import ppo_research.run.loop.train  # noqa: F401
    setup_globals()
    job_api.invocation = request["invocation"]  # what the command line said (HYDRA_FULL_ERROR, existing folders)
    try:
        outcome = train_population(request["jobs"], request.get("resume", False))
    except Exception as err:  # noqa: BLE001 - a bug here: one line, the traceback in a log file; every job fails
        if job_api.invocation.full_error:
            raise
        line = job_api.bug_line(err, job_api.log_bug(err))
        write_line(line)
        outcome = {"returns": {idx: job_return(config, JobStatus.FAILED, job_api.RunFailed(line, job_api.EXIT_BUG))
                               for idx, config in request["jobs"]}, "interrupted": None}
    tmp = Path(f"{result_path}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(outcome, f)
    os.replace(tmp, result_path)
    stop = outcome["interrupted"]
    return 0 if stop is None else 128 + (stop["signum"] or signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
