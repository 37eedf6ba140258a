"""Finished and running runs on disk: find them under a folder and read what each one is.

A run directory is any folder holding ``metrics.jsonl`` and a description of the run:
``run.json`` (``{"config": <resolved config>, "choices": {group: option}, "overrides": [...]}``,
written by the trainer at the start of every run, whoever started it: ``python -m
ppo_research``, a multirun job, an Optuna trial) or, for run directories older than
``run.json``, Hydra's ``.hydra/config.yaml`` (+ ``hydra.yaml`` for the group choices and
``overrides.yaml``). So the same reader serves a single run, a multirun folder
(``outputs/multirun/<date>/<time>/``) and an Optuna study folder (``outputs/sweeps/<study>/``,
runs under ``trials/<number>/<seed>/``).

Every results tool (the ablation report, the paper table) reads runs through this module only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from omegaconf import OmegaConf

from ..run.config.compose import GROUPS
from ..run.console import write_line

#: The run's self-description, written by the trainer (``ppo_research.run.rundir.files.RUN_FILE``; a
#: test checks the two agree, this module does not import the trainer to stay light).
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
HYDRA_CONFIG = Path(".hydra") / "config.yaml"
FACET = "env.id"  # what a run is "on": tools never average across it


class ResultsError(Exception):
    """A problem with the input of a results tool; ``str()`` is the one line the CLI prints,
    ``status`` its exit status (bad input, as an OutputError refused before anything ran)."""

    status = 2


@dataclass
class Run:
    """One run directory, read."""

    path: Path
    config: dict  # flattened: "loss.epsilon" -> 0.2, plus "choices.loss" -> "clip"
    metrics: list[dict]  # the metrics.jsonl rows
    summary: Optional[dict]  # summary.json; None while the run has not finished
    overrides: list[str] = field(default_factory=list)

    @property
    def env(self) -> str:
        return str(self.config.get(FACET, "?"))

    @property
    def seed(self):
        return self.config.get("seed")

    @property
    def choices(self) -> dict[str, str]:
        return {k[len("choices."):]: v for k, v in self.config.items() if k.startswith("choices.")}

    def values(self, prefix: str) -> dict:
        """The nested section ``prefix`` (e.g. ``loss``) as a flat mapping of its keys."""
        head = prefix + "."
        return {k[len(head):]: v for k, v in self.config.items() if k.startswith(head)}


def flatten(node: Any, prefix: str = "") -> dict:
    """``{"loss": {"epsilon": 0.2}}`` -> ``{"loss.epsilon": 0.2}``; lists become tuples (hashable)."""
    if isinstance(node, dict) and node:
        out = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    value = tuple(node) if isinstance(node, list) else node
    return {prefix.rstrip("."): value}


def load_yaml(path: Path) -> Any:
    """A YAML (or JSON) file as plain data, interpolations resolved where they can be."""

    node = OmegaConf.load(path)
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception:  # Hydra-only resolvers (${hydra:...}) cannot resolve outside Hydra
        return OmegaConf.to_container(node, resolve=False)


def is_run_dir(path: Path) -> bool:
    path = Path(path)
    return (path / METRICS_FILE).is_file() and ((path / RUN_FILE).is_file() or (path / HYDRA_CONFIG).is_file())


def group_choices(choices: dict) -> dict[str, str]:
    """Only the run's config groups (Hydra also lists ``hydra/*`` choices), unset ones dropped."""
    return {k: str(v) for k, v in (choices or {}).items() if k in GROUPS and v is not None}


def _hydra_description(path: Path) -> tuple[dict, dict[str, str], list[str]]:
    """config, choices and overrides from ``.hydra/`` (choices from ``hydra.yaml``, or parsed out
    of ``overrides.yaml`` (``loss=klpen``) when it is missing)."""
    hydra_dir = path / ".hydra"
    config = load_yaml(path / HYDRA_CONFIG)
    overrides_file = hydra_dir / "overrides.yaml"
    overrides = [str(o) for o in (load_yaml(overrides_file) or [])] if overrides_file.is_file() else []
    if (hydra_dir / "hydra.yaml").is_file():
        runtime = (load_yaml(hydra_dir / "hydra.yaml").get("hydra") or {}).get("runtime") or {}
        return config, group_choices(runtime.get("choices")), overrides
    choices = {}
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if sep:
            choices[key] = value
    return config, group_choices(choices), overrides


def read_description(path: Union[str, Path]) -> tuple[dict, dict[str, str], list[str]]:
    """A run's (nested resolved config, group choices, overrides): ``run.json`` if it has one,
    else ``.hydra/``."""
    path = Path(path)
    if (path / RUN_FILE).is_file():
        data = json.loads((path / RUN_FILE).read_text())
        return data["config"], group_choices(data.get("choices")), [str(o) for o in data.get("overrides") or []]
    return _hydra_description(path)


def read_metrics(path: Union[str, Path]) -> list[dict]:
    """The rows of a run's metrics.jsonl. A last line without its newline is a row being written
    (a running run) or cut off (a killed one): it is not read."""
    text = (Path(path) / METRICS_FILE).read_text()
    lines = text.split("\n")[:-1]  # each complete row ends with a newline; what follows the last is not whole
    return [json.loads(line) for line in lines if line.strip()]


def read_summary(path: Union[str, Path]) -> Optional[dict]:
    """summary.json, or None if the run has not finished."""
    file = Path(path) / SUMMARY_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def read_run(path: Union[str, Path]) -> Run:
    path = Path(path)
    config, choices, overrides = read_description(path)
    flat = flatten(config)
    flat.update({f"choices.{k}": v for k, v in choices.items()})
    return Run(path, flat, read_metrics(path), read_summary(path), overrides)


def find_run_dirs(path: Union[str, Path]) -> list[Path]:
    """Every run directory at or under ``path``, sorted."""
    path = Path(path)
    candidates = {p.parent for p in path.rglob(METRICS_FILE)}
    return sorted(d for d in candidates if is_run_dir(d))


def find_runs(paths: Sequence[Union[str, Path]]) -> list[Run]:
    """Every run under ``paths`` (a path may itself be a run), read; unfinished runs included
    (their ``summary`` is None)."""
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise ResultsError(f"no such directory: {path}")
        run_dirs = find_run_dirs(path)
        if not run_dirs:
            raise ResultsError(f"no runs under {path} (a run directory holds {METRICS_FILE} and {RUN_FILE} "
                               f"or {HYDRA_CONFIG})")
        for run_dir in run_dirs:
            try:
                found.append(read_run(run_dir))
            except Exception as err:  # a half-written or foreign file: name it, no traceback
                lines = str(err).strip().splitlines()
                raise ResultsError(f"cannot read run {run_dir}: {type(err).__name__}: {lines[0] if lines else ''}")
    return found


def finished(runs: list[Run], paths: Sequence[Union[str, Path]]) -> list[Run]:
    """The runs with a ``summary.json``; the others are named in one note on stderr. Raises if
    none is finished."""
    unfinished = [r for r in runs if r.summary is None]
    if unfinished:
        write_line(f"note: skipping {len(unfinished)} unfinished run(s) without {SUMMARY_FILE}: "
              f"{', '.join(str(r.path) for r in unfinished)}")
    done = [r for r in runs if r.summary is not None]
    if not done:
        raise ResultsError(f"no finished runs (with {SUMMARY_FILE}) under {', '.join(map(str, paths))}")
    return done
