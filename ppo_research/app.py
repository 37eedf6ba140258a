"""The Hydra application: compose, validate, train, and report errors in one line."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, register_base_config, validate

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("env", "network", "loss", "advantage", "logger", "experiment")
register_base_config()


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_group_choices(argv: list[str]) -> None:
    """Reject ``loss=klpn`` before Hydra composes, naming the valid options."""
    for arg in argv:
        if "=" not in arg or arg.startswith(("hydra", "-")):
            continue
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        if key in GROUPS and value not in ("", "null"):
            options = group_options(key)
            for choice in value.split(","):
                if choice not in options:
                    fail(f"{key}={choice!r} is not an option of group '{key}': expected one of {', '.join(options)}")


def train_from_config(cfg: DictConfig, run_dir: Path, choices: dict[str, str],
                      on_evaluation: Optional[Callable[[int, int, float], None]] = None) -> dict:
    """Validate ``cfg``, train in ``run_dir`` and return the summary. Usable without Hydra's
    runtime (the sweep driver calls it per trial with an ``on_evaluation`` pruning hook)."""
    from .trainer import Trainer  # imported here so `--help` and config errors stay fast

    config = validate(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = instantiate(cfg.logger)
    trainer = Trainer(config, cfg, run_dir, logger, choices, on_evaluation=on_evaluation)
    logger.start(run_dir, trainer.config_dict, choices)
    exit_code = 1
    try:
        summary = trainer.train()
        exit_code = 0
        return summary
    finally:
        trainer.close()
        logger.finish(exit_code)


def hydra_choices() -> dict[str, str]:
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if k in GROUPS and v is not None}


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    try:
        summary = train_from_config(cfg, Path(HydraConfig.get().runtime.output_dir), hydra_choices())
    except ConfigError as err:
        fail(str(err))
    return summary.get("eval_return")
