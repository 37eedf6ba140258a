"""ppo_research: a Hydra-configured research framework for Proximal Policy Optimization."""
__version__ = "0.1.0"
