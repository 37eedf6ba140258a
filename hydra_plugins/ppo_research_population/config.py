"""The options of ``hydra/launcher=population`` (``hydra.launcher.<option>=...`` on the command line)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class PopulationLauncherConf:
    _target_: str = "hydra_plugins.ppo_research_population.launcher.PopulationLauncher"
    #: at most this many jobs train in one process; a larger group is cut into near-equal parts
    #: (and a group is cut further while there are fewer populations than processes)
    population_size: int = 16
    #: population processes running at the same time (each trains its members with torch_threads threads)
    processes: int = 1
    #: continue an earlier multirun in the same hydra.sweep.dir: a job whose directory holds its
    #: finished run is not trained again, one holding an unfinished run resumes it, the rest start
    resume: bool = False


ConfigStore.instance().store(group="hydra/launcher", name="population", node=PopulationLauncherConf,
                             provider="ppo_research")
