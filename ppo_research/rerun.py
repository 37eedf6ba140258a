"""`python -m ppo_research.rerun`: a run's population trained again (ppo_research/tools/rerun)."""
from .run.signals.stops import exit_process
from .tools.rerun import main

if __name__ == "__main__":
    exit_process(main())
