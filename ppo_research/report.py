"""`python -m ppo_research.report`: the ablation report (ppo_research/tools/report)."""
from .tools.report import main

if __name__ == "__main__":
    raise SystemExit(main())
