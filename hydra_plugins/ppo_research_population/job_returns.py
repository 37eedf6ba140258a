"""What the launcher and its population processes share: a job's config without Hydra's node,
and the JobReturn Hydra expects for a job (made where the job ends: the launcher or a population
process). Light on purpose: a population process imports it before torch (see worker.py)."""
from __future__ import annotations  # (no dataclass here: Hydra scans plugin modules outside sys.modules)

import copy
import os
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict, read_write


def task_config(config: DictConfig) -> DictConfig:
    """The job's config without Hydra's node: what the app's ``main`` receives."""
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        task.pop("hydra", None)
    return task


def job_return(config: DictConfig, status: JobStatus, value: Any) -> JobReturn:
    """The JobReturn Hydra's ``run_job`` makes for a job of ``config`` (chdir is never on here)."""
    ret = JobReturn(overrides=list(OmegaConf.to_container(config.hydra.overrides.task)), cfg=task_config(config),
                    hydra_cfg=OmegaConf.masked_copy(config, "hydra"), working_dir=os.getcwd(),
                    task_name=config.hydra.job.name, status=status)
    ret.return_value = value
    return ret
