"""The training envs: gymnasium vector envs, observation normalisation and reward scaling,
their per-step bookkeeping, members stepped together, their state in checkpoints, video."""
