"""Optuna studies over PPO hyperparameters (``python -m ppo_research.sweep``), one module per idea:

    spec          the spec file -> Spec (every key's type and range checked), sampler and pruner, a run's overrides
    space         the search space and enqueued trials checked against the composed config (run layer's checks)
    storage       the optuna storage behind a URL; the study created once, its spec fingerprinted
    trial         one trial: its (seed, env) runs trained in turn, pruning reports, its score
    workers       worker processes, the exact trial budget, dead-worker detection, heartbeats
    study_report  trials.csv/md, best.json, best_overrides.txt, history.png
    cli           the command line: check, create, run the workers, write the report
"""
