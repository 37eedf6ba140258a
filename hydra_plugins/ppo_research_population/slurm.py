"""``hydra/launcher=population_slurm``: the multirun's jobs grouped into populations as
``hydra/launcher=population`` groups them (``launcher``), each population submitted as one SLURM
job through submitit (one array of them), waited for, and every member's result returned as the
job's JobReturn: the same run directories, ``.hydra/``, wandb runs and report as the local
launcher's. What a job runs, and how it survives time limits and preemption: ``slurm_job``.
"""

import logging
import sys
from typing import Any, Optional

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from ppo_research.errors import first_line
from ppo_research.run import jobs
from ppo_research.run.console import fail, say_sacct_once, write_line
from ppo_research.run.jobs import EXIT_BUG

from .launcher import Population, PopulationLauncher, all_failed
from .slurm_job import PopulationJob

log = logging.getLogger(__name__)

#: submitit's options that are neither the executor's own (its folder, its requeue count) nor
#: sbatch's slurm_* ones: hydra_submitit_launcher's BaseQueueConf, passed on as they are
GENERIC = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "name",
           "stderr_to_stdout"}
COUNTS = {"timeout_min": 1, "cpus_per_task": 1, "mem_gb": 1, "signal_delay_s": 0, "max_num_timeout": 0}


class PopulationSlurmLauncher(PopulationLauncher):
    def __init__(self, population_size: int = 16, resume: bool = False, **slurm: Any) -> None:
        super().__init__(population_size=population_size, processes=1, resume=resume)
        self.slurm = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                      for k, v in slurm.items()}
        for name, least in COUNTS.items():
            value = self.slurm.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                fail(f"hydra.launcher.{name}={value!r} is invalid: expected an integer >= {least}")

    def _executor(self):
        import submitit

        say_sacct_once()  # (app.cli did already, unless the launcher runs from Python)
        params = dict(self.slurm)
        executor = submitit.AutoExecutor(folder=params.pop("submitit_folder"), cluster="slurm",
                                         slurm_max_num_timeout=params.pop("max_num_timeout"))
        executor.update_parameters(**{k if k in GENERIC else f"slurm_{k}": v for k, v in params.items()})
        return executor

    def _run(self, populations: list[Population]) -> dict[int, JobReturn]:
        if not populations:
            return {}
        executor = self._executor()
        continue_with = self._continuation()
        calls = []
        for population in populations:
            for job in population.jobs:
                self._callback("on_job_start", job.config, task_function=self.task_function)
            calls.append(PopulationJob(population.number, [(job.idx, job.config) for job in population.jobs],
                                       jobs.invocation, list(sys.argv), self.resume, continue_with))
        with executor.batch():  # one sbatch: an array of populations
            submitted = [executor.submit(call) for call in calls]
        for population, job in zip(populations, submitted):
            log.info(f"population {population.number}: SLURM job {job.job_id} trains job(s) {population.describe()}")
        returns: dict[int, JobReturn] = {}
        try:
            for population, job in zip(populations, submitted):
                self._report(population, self._outcome(population, job, continue_with), returns, [])
        except KeyboardInterrupt:
            ids = " ".join(job.job_id for job in submitted)
            write_line(f"stopped waiting for the SLURM jobs; they go on running (scancel {ids} stops them, each member "
                       f"after a checkpoint); continue the multirun with: {continue_with}")
            raise
        return returns

    def _outcome(self, population: Population, job, continue_with: str) -> dict:
        """What the population's job returned, once it has ended; each member's failure is also
        said here in its line (the job's own stderr is a file on the cluster)."""
        try:
            outcome = job.result()
        except Exception as err:  # noqa: BLE001 - submitit: the job failed, was cancelled, or its result is lost
            message = (f"error: SLURM job {job.job_id} of population {population.number} (jobs {population.describe()}) "
                       f"ended without reporting its jobs: {first_line(err)}; its log: {job.paths.stderr}; continue "
                       f"the multirun with: {continue_with}")
            write_line(message)
            return all_failed(population, message, EXIT_BUG)
        for ret in outcome["returns"].values():
            failure: Optional[BaseException] = ret._return_value if ret.status == JobStatus.FAILED else None
            if failure is not None:
                write_line(str(failure))
        return outcome

