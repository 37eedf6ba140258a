"""`python -m ppo_research.cleanrl_table`: runs beside CleanRL's published PPO figures (ppo_research/tools/cleanrl_table)."""
from .tools.cleanrl_table import main

if __name__ == "__main__":
    raise SystemExit(main())
