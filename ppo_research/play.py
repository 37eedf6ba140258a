"""`python -m ppo_research.play`: run a trained policy (ppo_research/tools/play)."""
from .tools.play import main

if __name__ == "__main__":
    raise SystemExit(main())
