"""``hydra/launcher=population``: a multirun's jobs that differ only in a population's member keys
(``ppo_research.run.loop.train.MEMBER_KEYS``: seed and a few scalar hyperparameters) train
together, one process per population (docs/populations.md).

Hydra finds this package through the ``hydra_plugins`` namespace: ``config`` registers the
launcher's options, ``launcher`` groups the jobs and runs the population processes, ``worker`` is
the program each population process runs.
"""
