"""The options of ``hydra/launcher=population_slurm``: the population launcher's grouping options
and the SLURM job options of Hydra's submitit launcher (conf/hydra/launcher/population_slurm.yaml
sets them up for populations)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class PopulationSlurmLauncherConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.ppo_research_population.slurm.PopulationSlurmLauncher"
    #: at most this many jobs train in one SLURM job; a larger group is cut into near-equal parts
    population_size: int = 16
    #: continue an earlier multirun in the same hydra.sweep.dir (as hydra/launcher=population's resume)
    resume: bool = False


ConfigStore.instance().store(group="hydra/launcher", name="population_submitit_slurm",
                             node=PopulationSlurmLauncherConf, provider="ppo_research")
