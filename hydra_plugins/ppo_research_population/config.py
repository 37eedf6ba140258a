"""The options of ``hydra/launcher=population`` (``hydra.launcher.<option>=...`` on the command line)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class PopulationLauncherConf:
    _target_: str = "hydra_plugins.ppo_research_population.launcher.PopulationLauncher"
    #: at most this many jobs train in one process; a larger group is cut into near-equal parts
    population_size: int = 8
    #: population processes running at the same time (each trains its members with torch_threads threads)
    processes: int = 1


ConfigStore.instance().store(group="hydra/launcher", name="population", node=PopulationLauncherConf,
                             provider="ppo_research")
