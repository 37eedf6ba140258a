"""A run's life: its parts built once, the PPO training loop over them, evaluation, records, and
populations of runs trained together."""
