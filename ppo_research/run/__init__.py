"""The run machinery: from a command line to a trained run directory.

- ``app.py``: ``python -m ppo_research``, the command line (Hydra's entry point, one-line errors);
- ``jobs.py``: one job (a run) planned, trained and reported; what the launchers and the sweep call;
- ``config/``: the config schema and its validation, composing the config tree;
- ``loop/``: build a run's parts once, then the trainer's loop (collect, advantages, update,
  adapt, record), evaluation, populations of runs;
- ``envs/``: the training envs, their normalisation and bookkeeping, stepping members together;
- ``rundir/``: what a run directory holds: checkpoints, resume, its owner, its files;
- ``signals/``: stops on signals, SLURM time limits and preemption;
- ``loggers/``: the experiment trackers (wandb, TensorBoard).
"""
