"""How a tracker names, groups and tags a run: from its group choices, seed and the Hydra job
(a multirun's sweep groups its runs)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

NAME_GROUPS = ("paper_setting", "loss", "advantage", "env")  # run name: [<paper_setting>-]<loss>-<advantage>-<env>[-<hparams>]-s<seed>


HPARAM_GROUPS = ("loss", "advantage")  # overridden keys of these groups join the run name


@dataclass
class HydraContext:
    """What the Hydra runtime says about this job; empty when Hydra's runtime is not set
    (the Optuna driver calls training directly)."""

    multirun: bool = False
    sweep_dir: Optional[str] = None
    experiment: Optional[str] = None
    overrides: tuple[str, ...] = ()

    @classmethod
    def current(cls) -> "HydraContext":
        try:

            if not HydraConfig.initialized():
                return cls()
            hc = HydraConfig.get()
            return cls(multirun=hc.mode == RunMode.MULTIRUN, sweep_dir=hc.sweep.dir,
                       experiment=hc.runtime.choices.get("experiment"), overrides=tuple(hc.overrides.task))
        except Exception:  # a partial Hydra config (compose API, old versions): no context
            return cls()


def sweep_name(sweep_dir: str) -> str:
    """``outputs/multirun/2026-11-24/03-25-36`` -> ``2026-11-24_03-25-36``; else the last part."""
    parts = Path(sweep_dir).parts
    if "multirun" in parts[:-1]:
        return "_".join(parts[len(parts) - parts[::-1].index("multirun"):])
    return parts[-1] if parts else "multirun"


def default_name(choices: dict[str, str], seed: Any, overrides: tuple[str, ...] = ()) -> str:
    """``klpen-gae-hopper-s2``; ablated loss/advantage values join it: ``clip-gae-hopper-epsilon0.1-s2``."""
    parts = [str(choices[g]) for g in NAME_GROUPS if choices.get(g)]
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if sep and key.split(".")[0] in HPARAM_GROUPS and "." in key:
            parts.append(f"{key.rsplit('.', 1)[1]}{value}")
    return "-".join(parts + [f"s{seed}"])


def default_group(context: HydraContext) -> Optional[str]:
    """Multirun: the sweep (prefixed by the experiment); single run: the experiment, if any."""
    if context.multirun and context.sweep_dir:
        sweep = sweep_name(context.sweep_dir)
        return f"{context.experiment}-{sweep}" if context.experiment else sweep
    return context.experiment


def default_tags(choices: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(choices.items()) if v is not None and k != "logger"]
