"""The population launcher: compose every job of the multirun, group the jobs that can train as one
population, and train each population in a fresh process, ``processes`` of them at a time.

- Grouping: jobs whose configs are equal outside ``MEMBER_KEYS`` (``population.group_key``) and
  whose ``hydra.job.env_set`` agree form a group (a job whose network is not ``stackable``, such
  as network=nature_cnn, forms its own), in the order of their first job; a group larger
  than ``population_size`` is cut into the fewest near-equal populations that fit (24 jobs, size
  16: 12 + 12), and further while there are fewer populations than ``processes`` (10 jobs, 2
  processes: 5 + 5). A job whose config does not resolve is a population of its own (it fails
  there, in one line, as it would alone). Populations start the most work first (``launch_order``).
- Each job is what Hydra's basic launcher makes of it: job number and id, the output directory
  ``hydra.sweep.dir/hydra.sweep.subdir`` (resolved here, so timestamps are the sweep's), ``.hydra/``
  and one JobReturn: the run's eval return, or its failure. Hydra's callbacks run here, around
  the population's process. The process itself (``worker``) sets up and trains the members.
- ``resume=true`` continues an earlier multirun in the same sweep directory (stopped, killed,
  or partly failed): a job whose directory holds its finished run (``summary.json``, the job's
  config, its budget reached) is not trained again and returns that run's eval return; one that
  holds an unfinished run resumes it in place, in a population of jobs that resume too (members
  of one population continue together from their common checkpoint); the others start fresh.
- Stops: the population processes run in their own session; SIGINT/SIGTERM to this process is
  passed on to each of them once per signal, as the stop workers take (``run/stops.FORWARDED``:
  a copy of the same stop that scancel or systemd also sends them directly is not a second
  signal), so Ctrl-C stops every member after a checkpoint, a second one at once, and no
  further population starts. If this process dies, its population processes get SIGTERM
  (Linux) and stop the same way.
"""

import json
import logging
import os
import pickle
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

import ppo_research
from ppo_research.algo.stacking import stackable
from ppo_research.run import jobs
from ppo_research.run.config.schema import validate
from ppo_research.run.console import fail, write_line
from ppo_research.run.envs.training import make_env
from ppo_research.run.jobs import EXIT_BUG, RunFailed, job_ended
from ppo_research.run.loop.train import group_key
from ppo_research.run.rundir import checkpoint
from ppo_research.run.rundir.resume import finished_summary
from ppo_research.run.signals.stops import FORWARDED, TrainingInterrupted, starting_workers
from ppo_research.tools.floor import env_step_us

from .job_returns import job_return, task_config

log = logging.getLogger(__name__)

WORKER_MODULE = "hydra_plugins.ppo_research_population.worker"
APP_MODULE = "ppo_research.run.app"  # the only task this launcher runs: python -m ppo_research
POLL_S = 0.2


@dataclass
class Job:
    """One job of the multirun: its number and its whole config (Hydra's node included, the
    output directory set in ``hydra.runtime.output_dir``)."""

    idx: int
    config: DictConfig


@dataclass
class Population:
    number: int
    jobs: list[Job]

    def describe(self) -> str:
        return ", ".join(str(job.idx) for job in self.jobs)



# ---------------------------------------------------------------------------------------------
# grouping

def population_key(config: DictConfig) -> str:
    """Equal keys: the jobs may be members of one population (``HydraConfig`` must be this job's).
    A job whose network has no stacked form (e.g. network=nature_cnn) is a population of one."""

    env = OmegaConf.to_container(config.hydra.job.env_set, resolve=True)
    task = task_config(config)
    alone = [] if stackable(OmegaConf.select(task, "network._target_", default="")) else [config.hydra.job.num]
    return json.dumps([group_key(task), env, *alone], sort_keys=True, default=str)


def make_populations(jobs: Sequence[Job], keys: Sequence[str], population_size: int,
                     processes: int = 1) -> list[Population]:
    """Group ``jobs`` by ``keys`` (in the order of each group's first job) and cut every group into
    the fewest near-equal populations of at most ``population_size`` members. Fewer populations
    than ``processes`` would leave a process idle: then the group with the largest populations is
    cut into one part more, until there are enough (or every population is a single job)."""
    groups: dict[str, list[Job]] = {}
    for job, key in zip(jobs, keys):
        groups.setdefault(key, []).append(job)
    grouped = list(groups.values())
    parts = [-(-len(members) // population_size) for members in grouped]
    while sum(parts) < processes:
        divisible = [g for g, members in enumerate(grouped) if len(members) > parts[g]]
        if not divisible:
            break
        widest = max(divisible, key=lambda g: len(grouped[g]) / parts[g])  # the first of equals
        parts[widest] += 1
    populations: list[Population] = []
    for members, count in zip(grouped, parts):
        size, extra = divmod(len(members), count)
        start = 0
        for part in range(count):
            end = start + size + (1 if part < extra else 0)
            populations.append(Population(len(populations), members[start:end]))
            start = end
    return populations


# What a member-step costs besides its env step: about the update's share at the paper's settings
# (25-30 us per member-step in a population of 12, docs/paper_table1.md), the same for every env.
UPDATE_US = 30.0


def launch_order(populations: Sequence[Population]) -> list[Population]:
    """The order to start ``populations`` in: the most work first, the order of their first jobs
    among equals. A population's work is its members' ``total_timesteps`` times what a step
    costs: the env's step, timed here for a few hundred steps per distinct env (a MuJoCo
    step costs several times a classic-control one), plus ``UPDATE_US``. With several processes
    the long populations then start early and the short ones fill in, instead of a long one
    running on alone at the end."""
    step_us: dict[str, float] = {}

    def env_us(config: DictConfig) -> float:

        env = validate(task_config(config)).env
        key = json.dumps([env.id, env.kwargs, env.max_episode_steps], sort_keys=True, default=str)
        if key not in step_us:
            step_us[key] = env_step_us(lambda: make_env(env), steps=300, warm_up=50)
        return step_us[key]

    def work(population: Population) -> float:
        total = 0.0
        for job in population.jobs:
            try:
                steps = int(OmegaConf.select(job.config, "total_timesteps", default=0) or 0)
            except Exception:  # noqa: BLE001 - a job that does not resolve fails at once wherever it starts
                continue
            try:
                cost = env_us(job.config) + UPDATE_US
            except Exception:  # noqa: BLE001 - no env to time (or a bad one: the job fails where it runs)
                cost = UPDATE_US
            total += steps * cost
        return total

    return sorted(populations, key=work, reverse=True)  # sorted is stable: equals keep their order


# ---------------------------------------------------------------------------------------------
# the launcher

def _fail(message: str) -> None:

    fail(message)


def _option(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(f"hydra.launcher.{name}={value!r} is invalid: expected an integer >= 1")
    return value


def _ended(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


class PopulationLauncher(Launcher):
    def __init__(self, population_size: int = 16, processes: int = 1, resume: bool = False) -> None:
        self.population_size = _option("population_size", population_size)
        self.processes = _option("processes", processes)
        if not isinstance(resume, bool):
            _fail(f"hydra.launcher.resume={resume!r} is invalid: expected true or false")
        self.resume = resume
        self.config: Optional[DictConfig] = None
        self.sweep_dir: Optional[Path] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        if getattr(task_function, "__module__", None) != APP_MODULE:
            _fail(f"hydra/launcher=population trains ppo_research runs only (python -m ppo_research), not "
                  f"{getattr(task_function, '__module__', '?')}.{getattr(task_function, '__name__', '?')}")
        if config.hydra.job.chdir:
            _fail("hydra.job.chdir=True is invalid with hydra/launcher=population: expected false (the members of "
                  "a population share one process and its working directory)")
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = self.sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        jobs, keys, finished = [], [], {}
        for offset, overrides in enumerate(job_overrides):
            job, key, summary = self._compose(initial_job_idx + offset, list(overrides))
            if summary is not None:
                finished[job.idx] = job_return(job.config, JobStatus.COMPLETED, summary.get("eval_return"))
                continue
            jobs.append(job)
            keys.append(key)
        if finished:
            log.info(f"hydra.launcher.resume=true: {len(finished)} job(s) hold their finished run and are not trained "
                     f"again: {', '.join(str(idx) for idx in finished)}")
        populations = make_populations(jobs, keys, self.population_size, self.processes)
        log.info(f"Launching {len(jobs)} jobs as {len(populations)} population(s) of at most {self.population_size} "
                 f"member(s), {self.processes} process(es) at a time")
        for population in populations:
            log.info(f"\tpopulation {population.number}: jobs {population.describe()}")
            for job in population.jobs:
                overrides = filter_overrides(OmegaConf.to_container(job.config.hydra.overrides.task))
                log.info(f"\t\t#{job.idx} : {' '.join(overrides)}")
        returns = {**finished, **self._run(populations)}
        return [returns[idx] for idx in range(initial_job_idx, initial_job_idx + len(job_overrides))]

    def _compose(self, idx: int, overrides: list[str]) -> tuple[Job, str, Optional[dict]]:
        """The job's config as the basic launcher composes it, its output directory resolved (as
        ``run_job`` does), its population key, and (``resume``) the summary of its finished run."""
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config):
            config.hydra.job.id = idx
            config.hydra.job.num = idx
        hydra_config = HydraConfig.instance()
        saved = hydra_config.cfg
        try:
            hydra_config.set_config(config)
            output_dir = os.path.join(str(OmegaConf.select(config, "hydra.sweep.dir")),
                                      str(OmegaConf.select(config, "hydra.sweep.subdir")))
            with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
                config.hydra.runtime.output_dir = os.path.abspath(output_dir)
            hydra_config.set_config(config)
            summary = None
            try:
                key = population_key(config)
                if self.resume:
                    summary, state = self._earlier_run(config)
                    key = json.dumps([state, key])  # resuming members train apart from fresh ones
            except Exception:  # noqa: BLE001 - it does not resolve: alone, it fails in one line there
                key = f"job {idx}"
        finally:
            hydra_config.cfg = saved
        return Job(idx, config), key, summary

    @staticmethod
    def _earlier_run(config: DictConfig) -> tuple[Optional[dict], str]:
        """(summary of the job's finished run or None, "resume" | "fresh"): what the job's directory
        holds from an earlier multirun. A run without a checkpoint starts over, so it is fresh."""

        run_dir = Path(config.hydra.runtime.output_dir)
        summary = finished_summary(run_dir, OmegaConf.to_container(task_config(config), resolve=True))
        return summary, "resume" if summary is None and checkpoint.latest(run_dir) is not None else "fresh"

    # -- the population processes -----------------------------------------------------------

    def _run(self, populations: list[Population]) -> dict[int, JobReturn]:
        returns: dict[int, JobReturn] = {}
        pending = launch_order(populations)
        running: dict[subprocess.Popen, tuple[Population, Path]] = {}
        stops: list[int] = []
        interrupts: list[dict] = []

        def forward(signum, frame):  # as the stop its population processes take (run/stops.FORWARDED)

            stops.append(signum)
            for proc in running:
                if proc.poll() is None:
                    proc.send_signal(FORWARDED)

        main_thread = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
        workdir = Path(tempfile.mkdtemp(prefix="ppo_research-population-"))
        try:
            while pending or running:
                while pending and len(running) < self.processes and not stops:
                    population = pending.pop(0)
                    result = workdir / f"{population.number}.out"
                    running[self._start(population, workdir / f"{population.number}.in", result)] = (population, result)
                if not running:
                    break
                time.sleep(POLL_S)
                for proc in [p for p in running if p.poll() is not None]:
                    population, result = running.pop(proc)
                    self._collect(proc, population, result, bool(stops), returns, interrupts)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            shutil.rmtree(workdir, ignore_errors=True)
        if interrupts or stops:

            stopped = next((i for i in interrupts if i.get("checkpoint")), None)
            if stopped is not None:  # the launcher's own signal, if it was the one stopped
                signum = stops[0] if stops else stopped["signum"]
                stop = TrainingInterrupted(signum, stopped["iteration"], Path(stopped["checkpoint"]))
                stop.continue_with = self._continuation()
                raise stop
            raise KeyboardInterrupt()
        return returns

    def _continuation(self) -> str:
        """The command that continues this multirun: the same one, in this sweep directory, with
        ``hydra.launcher.resume=true``."""

        kept = [a for a in sys.argv[1:] if not a.startswith(("hydra.sweep.dir=", "hydra.launcher.resume="))]
        return shlex.join(["python", "-m", "ppo_research", *kept, f"hydra.sweep.dir={self.sweep_dir}",
                           "hydra.launcher.resume=true"])

    def _start(self, population: Population, request: Path, result: Path) -> subprocess.Popen:

        for job in population.jobs:
            self._callback("on_job_start", job.config, task_function=self.task_function)
        with open(request, "wb") as f:
            pickle.dump({"number": population.number, "jobs": [(job.idx, job.config) for job in population.jobs],
                         "invocation": jobs.invocation, "parent": os.getpid(), "argv": list(sys.argv),
                         "resume": self.resume}, f)

        with starting_workers():
            proc = subprocess.Popen([sys.executable, "-m", WORKER_MODULE, str(request), str(result)],
                                    stdin=subprocess.DEVNULL, env=_worker_env(), start_new_session=True)
        log.info(f"population {population.number}: process {proc.pid} trains job(s) {population.describe()}")
        return proc

    def _collect(self, proc: subprocess.Popen, population: Population, result: Path, stopping: bool,
                 returns: dict[int, JobReturn], interrupts: list[dict]) -> None:
        try:
            with open(result, "rb") as f:
                outcome = pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError):
            outcome = None
        if outcome is None:
            if stopping:  # stopped before it could say so (e.g. SIGTERM while starting)
                interrupts.append({"signum": None})
                return

            message = (f"error: the process of population {population.number} (pid {proc.pid}, jobs "
                       f"{population.describe()}) ended with {_ended(proc.returncode)} before it reported its jobs; "
                       f"continue the multirun with: {self._continuation()}")
            write_line(message)
            # killed by a signal (the OOM killer's SIGKILL): 128 + N, as a killed run or sweep worker
            outcome = all_failed(population, message, 128 - proc.returncode if proc.returncode < 0 else EXIT_BUG)
        self._report(population, outcome, returns, interrupts)

    def _report(self, population: Population, outcome: dict, returns: dict[int, JobReturn],
                interrupts: list[dict]) -> None:
        """Take in what a population's process reported: each job's JobReturn, or its stop."""
        if outcome.get("interrupted"):
            interrupts.append(outcome["interrupted"])
        for job in population.jobs:
            ret = outcome["returns"].get(job.idx)
            if ret is None and not outcome.get("interrupted"):  # (a population process always reports each job)

                message = f"error: population {population.number} did not report job {job.idx}"
                write_line(message)
                ret = job_return(job.config, JobStatus.FAILED, RunFailed(message, EXIT_BUG))
            if ret is not None:

                failure = ret._return_value if ret.status == JobStatus.FAILED else None
                job_ended(0 if failure is None else getattr(failure, "status", 1))
                returns[job.idx] = ret
                self._callback("on_job_end", job.config, job_return=ret)

    def _callback(self, name: str, config: DictConfig, **kwargs: Any) -> None:
        """Hydra's callbacks for the job of ``config``, with its Hydra config current."""
        hydra_config = HydraConfig.instance()
        saved = hydra_config.cfg
        try:
            hydra_config.set_config(config)
            getattr(self.hydra_context.callbacks, name)(config=config, **kwargs)
        finally:
            hydra_config.cfg = saved


def all_failed(population: Population, message: str, status: int) -> dict:
    """The outcome of a population whose process or job ended without reporting: every job failed."""
    return {"returns": {job.idx: job_return(job.config, JobStatus.FAILED, RunFailed(message, status))
                        for job in population.jobs}}


def _worker_env() -> dict[str, str]:
    """The environment of a population process: ours, with this plugin's and ppo_research's
    folders first on its path, so that it runs the very code this process imported."""

    folders = [str(Path(__file__).resolve().parents[2]), str(Path(ppo_research.__file__).resolve().parents[1])]
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    path = list(dict.fromkeys(folders + rest))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
