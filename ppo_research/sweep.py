"""`python -m ppo_research.sweep`: the Optuna study driver (ppo_research/tools/sweep/)."""
from .run.signals.stops import exit_process
from .tools.sweep.cli import main

if __name__ == "__main__":
    exit_process(main())
