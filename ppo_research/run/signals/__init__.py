"""Stopping cleanly: SIGINT/SIGTERM after a checkpoint, and a SLURM job's time-limit or preemption
warning (stop, checkpoint, requeue)."""
