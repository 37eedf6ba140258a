"""Every YAML key reaches a constructor argument, and every constructor argument is reachable
from config; the documented top-level schema matches what the trainer reads."""
from __future__ import annotations

import inspect

import pytest
from helpers import compose_config

from ppo_research.run.app import CONF_DIR
from ppo_research.run.config.schema import resolve_target, validate

BUILD_TIME_ARGS = {"obs_space", "action_space"}  # passed by the trainer, never written into config


def options(group):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


CASES = [(g, o) for g in ("loss", "advantage", "network", "logger") for o in options(g)]


@pytest.mark.parametrize("group,option", CASES)
def test_yaml_keys_and_constructor_arguments_match(group, option):
    node = compose_config([f"{group}={option}"])[group]
    cls = resolve_target(node["_target_"], group)
    params = {n for n in inspect.signature(cls).parameters if n not in BUILD_TIME_ARGS}
    keys = set(node) - {"_target_"}
    assert keys == params, f"{group}={option}: yaml-only {keys - params}, unreachable {params - keys}"


@pytest.mark.parametrize("env", options("env"))
def test_every_env_preset_validates(env):
    config = validate(compose_config([f"env={env}"]))
    assert config.env.id and config.total_timesteps > 0


def test_every_file_a_config_comment_names_exists():
    """The config files point readers at code and docs by path; a moved file must not leave them
    pointing at nothing (conf/config.yaml named ppo_research/config.py after it had moved)."""
    import re

    named = set()
    for path in CONF_DIR.rglob("*.yaml"):
        named |= {(path.name, m) for m in re.findall(r"\b(?:ppo_research|docs|tests|scripts|sweeps|benchmarks)/"
                                                     r"[\w./-]+\.(?:py|md|yaml|sh|json)", path.read_text())}
    missing = sorted((where, name) for where, name in named if not (CONF_DIR.parent / name).exists())
    assert named and not missing, missing
