"""`python -m ppo_research.export`: a standalone policy file (ppo_research/tools/export)."""
from .tools.export import main

if __name__ == "__main__":
    raise SystemExit(main())
