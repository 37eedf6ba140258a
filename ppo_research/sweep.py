"""`python -m ppo_research.sweep`: the Optuna study driver (ppo_research/tools/sweep/)."""
from .tools.sweep.cli import main, stopped

if __name__ == "__main__":
    status = main()
    if stopped():
        from .run.stops import leave_after_stop

        leave_after_stop(status)
    raise SystemExit(status)
