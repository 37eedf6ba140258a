"""`python -m ppo_research.bench`: the speed benchmark (ppo_research/tools/bench)."""
from .tools.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
