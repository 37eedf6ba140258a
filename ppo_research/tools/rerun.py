"""Train a run's population again, with the same numbers.

    python -m ppo_research.rerun <run dir> --out <new dir>

A population member and its solo run share their distribution, not their numbers: the stacked
update rounds differently from a lone run, and from a population of other members, and the
dynamics amplify the difference (docs/populations.md). So every run.json names the population
its run trained in (``population``: the members in order, each with its directory, resolved
config, group choices, overrides and where its ``on_evaluation`` stopped it; see
``run/loop/train.py`` ``population_members``). This command trains that population again through
``train_members``, as the population launcher and the sweep train it: the same members in the
same order, from their recorded configs, each stopped again where it stopped (a pruned trial).
Every member's metrics.jsonl is then the original's bit for bit, timing fields aside (time_s,
sps, time_*). A run that trained alone is trained alone again.

Each member trains into ``<out>/<its directory below the members' common folder>``: ``<out>/0``,
``<out>/1`` for a multirun's jobs, ``<out>/0003/s0`` for a sweep trial's run, ``<out>/<name>`` for
a run alone. The original directories are only read; ``--out`` must be new or an empty directory.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Callable, Optional, Sequence

from omegaconf import OmegaConf

from ..errors import EXIT_BAD_INPUT, ConfigError, NonFiniteError, exit_status, first_line
from ..run.console import write_line
from ..run.loop.build import check
from ..run.loop.train import RUN_OWN_KEYS, MemberJob, check_members, train_members
from ..run.rundir.files import RUN_FILE
from .cli_common import OneLineParser, OutputError, check_output_dir, error_line


class RerunError(Exception):
    """Bad input (exit status 2); ``str()`` is one line."""


class StoppedAsRecorded(Exception):
    """Ends a member at the iteration where its original stopped."""

    def __init__(self, iteration: int):
        super().__init__(f"stopped at iteration {iteration}, as the original member did")
        self.iteration = iteration


def read_population(run_dir: Path) -> list[dict]:
    """The members that ``run_dir``'s run.json records for its population, in order."""
    path = run_dir / RUN_FILE
    if not run_dir.is_dir():
        raise RerunError(f"{run_dir}: {'not a directory' if run_dir.exists() else 'no such directory'}")
    try:
        described = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RerunError(f"{run_dir}: holds no {RUN_FILE} (not a run directory)") from None
    except (OSError, ValueError) as err:
        raise RerunError(f"{path}: cannot be read ({first_line(err)})") from None
    record = described.get("population") if isinstance(described, dict) else None
    if record is None:
        raise RerunError(f"{path}: records no population (written before run.json named the population a run "
                         f"trains in), so its numbers cannot be reproduced exactly")
    members = record.get("members") if isinstance(record, dict) else None
    if not isinstance(members, list) or not members:
        raise RerunError(f"{path}: its population record holds no members")
    for k, member in enumerate(members):
        problem = member_problem(member)
        if problem:
            raise RerunError(f"{path}: member {k} of its population record {problem}")
    return members


def member_problem(member) -> Optional[str]:
    """What is wrong with one member's record (None: nothing)."""
    if not isinstance(member, dict):
        return "is not a mapping"
    for key, kind in (("run_dir", str), ("config", dict), ("choices", dict), ("overrides", list)):
        if not isinstance(member.get(key), kind):
            return f"has no {key}"
    stopped = member.get("stopped_at")
    if stopped is not None and (isinstance(stopped, bool) or not isinstance(stopped, int)):
        return f"has stopped_at={stopped!r} (an iteration or null)"
    return None


def check_out(out: Path) -> None:
    """``out`` must be new or an empty directory, and writable: a re-run writes no run over another."""
    if out.is_dir() and any(out.iterdir()):
        raise RerunError(f"--out {out}: already holds files; re-run into a new directory")
    check_output_dir(out, "--out")


def member_dirs(members: Sequence[dict], out: Path) -> list[Path]:
    """Each member's new directory: its original path below its parents' common folder, under ``out``."""
    originals = [Path(member["run_dir"]) for member in members]
    try:
        common = Path(os.path.commonpath([path.parent for path in originals]))
        return [out / path.relative_to(common) for path in originals]
    except ValueError as err:  # a record edited by hand: relative and absolute paths mixed
        raise RerunError(f"the population's run directories have no common folder ({err})") from None


def stop_at(iteration: Optional[int]) -> Optional[Callable[[int, int, float], None]]:
    """The hook that stops a member at the evaluation of ``iteration`` (None: never)."""
    if iteration is None:
        return None

    def on_evaluation(at: int, global_step: int, eval_return: float) -> None:
        if at >= iteration:
            raise StoppedAsRecorded(at)

    return on_evaluation


def member_jobs(members: Sequence[dict], dirs: Sequence[Path]) -> list[MemberJob]:
    """The members as ``train_members`` takes them: fresh runs of their recorded configs (a
    resumed member's ``resume`` dropped: the re-run starts from the beginning)."""
    jobs = []
    for member, run_dir in zip(members, dirs):
        config = {**member["config"], **{key: None for key in RUN_OWN_KEYS if key in member["config"]}}
        jobs.append(MemberJob(OmegaConf.create(config), run_dir, dict(member["choices"]), list(member["overrides"]),
                              on_evaluation=stop_at(member.get("stopped_at"))))
    return jobs


def check_jobs(jobs: Sequence[MemberJob], run_dir: Path) -> None:
    """Every member's recorded config passes a run's checks, and they can still be one population:
    else nothing trains. A member refused alone (a run.json edited by hand, or written by a version
    whose checks were looser) would leave the others training in a smaller population, with other
    numbers than the originals'."""
    path = run_dir / RUN_FILE
    for k, job in enumerate(jobs):
        try:
            check(job.cfg)
        except ConfigError as err:
            raise RerunError(f"{path}: member {k} of its population record has a config this version refuses "
                             f"({first_line(err)})") from None
    try:
        check_members([job.cfg for job in jobs])
    except ConfigError as err:
        raise RerunError(f"{path}: its population record's members cannot train together ({first_line(err)})") from None


def report(jobs: Sequence[MemberJob], results: Sequence) -> int:
    """One line per member that did not finish (a finished one has printed its ``done:`` line);
    the exit status is the first failure's."""
    status = 0
    for job, result in zip(jobs, results):
        if isinstance(result, StoppedAsRecorded):
            write_line(f"stopped: {job.run_dir} at iteration {result.iteration}, as the original member did")
        elif isinstance(result, BaseException):
            what = "training diverged: " if isinstance(result, NonFiniteError) else ""
            write_line(f"error: {job.run_dir}: {what}{first_line(result)}")
            status = status or exit_status(result)
    return status


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = OneLineParser(prog="python -m ppo_research.rerun",
                           description="Train a run's population again, with the same numbers.")
    parser.add_argument("run_dir", type=Path, help="a run directory: any member of the population")
    parser.add_argument("--out", type=Path, required=True,
                        help="a new directory for the members' run directories (not an existing run's)")
    args = parser.parse_args(argv)
    try:
        members = read_population(args.run_dir)
        check_out(args.out)
        jobs = member_jobs(members, member_dirs(members, args.out))
        check_jobs(jobs, args.run_dir)
    except (RerunError, OutputError) as err:
        error_line(str(err))
        return EXIT_BAD_INPUT
    for k, (member, job) in enumerate(zip(members, jobs)):
        print(f"member {k}: {job.run_dir} re-runs {member['run_dir']}", flush=True)
    try:
        results = train_members(jobs)
    except KeyboardInterrupt as err:  # Ctrl-C or a stop signal: every member stopped after a checkpoint
        write_line(f"interrupted: the re-run in {args.out} is incomplete; re-run into a new --out")
        return 128 + getattr(err, "signum", signal.SIGINT)
    return report(jobs, results)
