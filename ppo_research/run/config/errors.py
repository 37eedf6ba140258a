"""Hydra's and OmegaConf's errors about the command line, as one line each: a typo in a key
names the keys it could be, a bad override says where it fails to parse, a plugin that cannot
be built names its options. Anything else is not the command line's fault (None: a bug)."""
from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Optional

from hydra._internal.utils import get_args_parser
from hydra.errors import CompactHydraException, InstantiationException, MissingConfigException, OverrideParseException
from hydra.utils import get_class
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from ..console import fail
from .compose import CONF_DIR, GROUPS
from .schema import Config


def hydra_error_line(err: BaseException, argv: list[str]) -> Optional[str]:
    """One line for Hydra's and OmegaConf's errors about the command line; None for anything
    else (a bug: reported with a pointer to its traceback)."""

    def first(e) -> str:
        text = str(getattr(e, "msg", None) or e).strip()
        return text.splitlines()[0] if text else type(e).__name__

    if isinstance(err, InstantiationException):  # e.g. +hydra.launcher.<typo>=1
        return instantiation_line(err, argv)
    if isinstance(err, OverrideParseException):
        return f"cannot parse the override {err.override!r}: {first(err.message)}"
    if isinstance(err, MissingConfigException) and err.options:
        return f"{first(err).rstrip('.')}: expected one of {', '.join(err.options)}"
    cause = err.__cause__
    if isinstance(err, CompactHydraException) and isinstance(cause, (ConfigKeyError, ConfigAttributeError)) \
            and cause.full_key:  # an override of a key that does not exist (a typo)
        key = cause.full_key
        value = next((a.partition("=")[2] for a in argv if a.lstrip("+~").partition("=")[0] == key), None)
        section = key.rpartition(".")[0]
        known = valid_keys(section, argv)
        expected = f"a key of {section or 'the top level'}: {', '.join(known)}" if known else \
            f"an existing key ({first(cause)})"
        return f"{key}={value!r} is invalid: expected {expected}"
    if isinstance(err, CompactHydraException):
        parts = [first(err)] + ([first(cause)] if isinstance(cause, OmegaConfBaseException) else [])
        return "; ".join(p.rstrip(".") for p in parts)
    if isinstance(err, OmegaConfBaseException):
        return f"{getattr(err, 'full_key', '') or 'config'}: {first(err)}"
    if isinstance(err, ValueError) and str(err).startswith("Only one of --run, --multirun"):
        return f"{first(err)} (e.g. -m with --cfg: print a job's config with --cfg job and no -m)"
    return None


def instantiation_line(err: BaseException, argv: list[str]) -> str:
    """Hydra could not build a plugin from its config (a launcher, a sweeper): the key at fault
    and what the plugin takes, or Hydra's message and its cause in one line."""

    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    full_key = next((line.partition(":")[2].strip() for line in lines if line.startswith("full_key:")), "")
    target = re.search(r"target '([\w.]+)'", lines[0]) if lines else None
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(err.__cause__ or ""))
    if unexpected and full_key and target:
        key = f"{full_key}.{unexpected[1]}"
        value = next((a.partition("=")[2] for a in argv if a.lstrip("+~").partition("=")[0] == key), None)
        try:

            taken = [name for name in inspect.signature(get_class(target[1])).parameters if name != "self"]
        except Exception:  # noqa: BLE001 - the key is still named
            taken = []
        expected = f"a key of {full_key}: {', '.join(taken)}" if taken else \
            f"no such key ({target[1].rpartition('.')[2]} takes no options)"
        return f"{key}={value!r} is invalid: expected {expected}"
    return " ".join(line for line in lines if not line.startswith("full_key:"))


def valid_keys(section: str, argv: list[str] = ()) -> list[str]:
    """The keys allowed under ``section`` ('' = top level, 'algo', 'loss', 'network', ...): the
    schema's for typed sections, the chosen group option's for groups."""

    root = section.split(".")[0]
    if root in GROUPS:
        return _group_keys(section, argv)
    cls = Config
    for part in filter(None, section.split(".")):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields or not isinstance(fields[part].default_factory, type):
            return []
        cls = fields[part].default_factory
    return sorted(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else []


def _group_keys(section: str, argv: list[str]) -> list[str]:
    """Keys of the group option the command line selects (or the default), under ``section``."""
    group, _, rest = section.partition(".")
    option = next((a.partition("=")[2] for a in reversed(list(argv)) if a.lstrip("+").partition("=")[0] == group),
                  None)
    if option is None:
        defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml")).get("defaults", [])
        option = next((d[group] for d in defaults if isinstance(d, dict) and group in d), None)
    if not option or option == "null":
        return []
    try:
        node = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{option}.yaml"))
    except Exception:
        return []
    for part in filter(None, rest.split(".")):
        node = node.get(part) if isinstance(node, dict) else None
    return sorted(k for k in node if k != "_target_" and k != "defaults") if isinstance(node, dict) else []


def check_arguments(argv: list[str]) -> None:
    """Hydra's flags, read by Hydra's own parser: an unknown flag or a bad flag value is one line
    and a pointer to --help (argparse would print its whole usage)."""

    parser = get_args_parser()

    def one_line(message: str) -> None:
        fail(f"{message} (see python -m ppo_research --help)")

    parser.error = one_line
    parser.parse_args(argv)
