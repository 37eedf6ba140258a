"""The spec against the config: every parameter must be a key of the composed config, each
bound (or choice) must pass the run layer's checks, and so must every enqueued trial (its
config composed and checked as a trial's is), so a bad spec fails before the study starts
rather than as N failed trials. With ``population`` > 1 every parameter must be one of the
population member keys (run/loop/train.py, MEMBER_KEYS)."""
from __future__ import annotations

from hydra.errors import HydraException
from omegaconf import OmegaConf

from ...errors import ConfigError
from ...run.config.compose import GROUPS, check_group_choices, compose, group_options
from ...run.loop.build import check
from ...run.loop.train import MEMBER_KEYS
from .spec import TRIAL_DEFAULTS, Spec, SpecError, format_value, param_overrides


def checked_config(overrides: list[str], what: str):
    """Compose ``overrides`` and run every check a run would; a failure is a one-line SpecError."""

    try:
        cfg = compose(overrides).cfg
        check(cfg)
    except (ConfigError, HydraException) as err:
        raise SpecError(f"{what}: {str(err).splitlines()[0]}") from None
    return cfg


def check_search_space(spec: Spec) -> None:
    if spec.population > 1:  # the members of a population may differ only in the member keys
        outside = [p.key for p in spec.params if p.key not in MEMBER_KEYS]
        if outside:
            raise SpecError(f"search space: {', '.join(outside)} cannot differ between the members of a population "
                            f"(--population {spec.population}): members may differ only in {', '.join(MEMBER_KEYS)}; "
                            f"search it with --population 1")
    for env in spec.env_runs():
        base = spec.run_overrides({}, env)
        check_group_choices(base)
        cfg = checked_config(base, "overrides")
        for p in spec.params:
            if p.key in GROUPS:
                bad = [c for c in p.probe_values() if c not in group_options(p.key)]
                if p.kind != "categorical" or bad:
                    raise SpecError(f"search space: {p.key} is a config group: use choices from "
                                    f"{', '.join(group_options(p.key))}")
                continue
            if OmegaConf.select(cfg, p.key, default=KeyError) is KeyError:
                raise SpecError(f"search space: unknown parameter {p.key!r} (not a key of the composed config)")
            for value in p.probe_values():
                checked_config(spec.run_overrides({p.key: value}, env), f"search space: {p.key}={format_value(value)}")
        for i, params in enumerate(spec.enqueue):  # the config each enqueued trial's runs would train with
            checked_config(TRIAL_DEFAULTS + spec.run_overrides(params, env, spec.seeds[0]),
                           f"enqueue[{i}] ({' '.join(param_overrides(params))})")
