"""`python -m ppo_research.paper`: the PPO paper's Table 1 experiment (ppo_research/tools/paper)."""
from .tools.paper import main

if __name__ == "__main__":
    raise SystemExit(main())
