"""Resume in place: find a run's checkpoint and the config to continue it with.

A resume continues the run it names; the checkpoint's config is the one that counts, and the
command line may change only what does not alter the run's maths (RESUME_MAY_CHANGE).

The checkpoint is the newest one that loads, whose checksum verifies, and that belongs to the
run: its run id is the one in the directory's ``run.json`` and its config agrees with that
file's (apart from what a resume may change). Older checkpoints are the fallback; a warning
line names every file passed over, and only when none is usable does the resume fail. Nothing
in the directory is written before the choice is made.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from ...errors import CheckpointError, ConfigError
from ..config.compose import GROUPS
from ..console import write_line
from . import checkpoint
from .owner import holds_a_run

#: What a resume may change: the rest of the config is the checkpoint's, so the continuation
#: stays the run it was. ``logger`` covers the group and its keys (tracking, not training).
RESUME_MAY_CHANGE = ("total_timesteps", "progress", "logger")
#: Keys that differ between segments of one run without making it another run.
_SEGMENT_KEYS = (*RESUME_MAY_CHANGE, "resume")
RUN_FILE = "run.json"  # written by run/loop/train.py at the start of every segment


def resume_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint file of ``run_dir`` (not yet verified), or a one-line ConfigError
    saying what is wrong with the directory."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ConfigError("resume", str(run_dir), "an existing run directory (no such directory)")
    if not run_dir.is_dir():
        raise ConfigError("resume", str(run_dir), "a run directory (this is a file)")
    path = checkpoint.latest(run_dir)
    if path is None:
        raise ConfigError("resume", str(run_dir), "a ppo_research run directory holding checkpoints/ckpt_*.pt "
                                                  "(none found)")
    return path


# ---------------------------------------------------------------------------------------------
# which checkpoint

@dataclass
class RunIdentity:
    """What a checkpoint must match to belong to the run: from the directory's run.json."""

    run_id: Optional[str]
    config: Optional[dict]


def run_identity(run_dir: Path) -> RunIdentity:
    try:
        described = json.loads((Path(run_dir) / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return RunIdentity(None, None)
    if not isinstance(described, dict):
        return RunIdentity(None, None)
    run_id = described.get("run_id")
    config = described.get("config")
    return RunIdentity(run_id if isinstance(run_id, str) else None, config if isinstance(config, dict) else None)


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def config_difference(a: dict, b: dict) -> Optional[str]:
    """The first key (outside what a resume may change) whose value differs, as one phrase."""
    fa, fb = _flatten(a), _flatten(b)
    for key in sorted(set(fa) | set(fb)):
        if key.split(".")[0] in _SEGMENT_KEYS:
            continue
        if fa.get(key, "<absent>") != fb.get(key, "<absent>"):
            return f"{key}={fa.get(key, '<absent>')!r} where the run has {fb.get(key, '<absent>')!r}"
    return None


def foreign_reason(state: dict, identity: RunIdentity) -> Optional[str]:
    """Why ``state`` does not belong to the run described by ``identity`` (None: it does)."""
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("choices"), dict):
        return "holds no run config"
    for key in ("iteration", "global_step", "policy"):
        if key not in state:
            return f"holds no {key}"
    theirs = state.get("run_id")
    if identity.run_id is not None and theirs is not None and theirs != identity.run_id:
        return f"belongs to another run (run id {theirs}; {RUN_FILE} says {identity.run_id})"
    if identity.config is not None:
        differs = config_difference(state["config"], identity.config)
        if differs:
            return f"belongs to another run (its config has {differs} in {RUN_FILE})"
    return None


def _reason(err: CheckpointError, path: Path) -> str:
    """A CheckpointError's message without the path (the list names the file), one sentence."""
    text = str(err)
    for prefix in (f"cannot load checkpoint {path}: ", f"checkpoint {path} is ", f"{path} is "):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    if not text.startswith(("refused", "not a ppo_research")) and ". " in text:
        text = text.split(". ")[0]  # torch's zip reader adds paragraphs of advice
    return text[:200]


def choose_checkpoint(run_dir: Path, at_most: Optional[int] = None) -> tuple[Path, dict, list[tuple[Path, str]]]:
    """(path, state, skipped): the newest checkpoint of ``run_dir`` (of an iteration up to
    ``at_most``, if given) that loads, verifies and belongs to the run; ``skipped`` lists the newer
    ones passed over and why. Reads only. Raises CheckpointError (one line, naming every file and
    its fault) when none is usable."""
    run_dir = Path(run_dir)
    identity = run_identity(run_dir)
    skipped: list[tuple[Path, str]] = []
    for path in reversed(checkpoint.list_checkpoints(run_dir)):
        if at_most is not None and checkpoint.iteration_of(path) > at_most:
            continue
        try:
            state = checkpoint.load(path)
        except CheckpointError as err:
            skipped.append((path, _reason(err, path)))
            continue
        reason = foreign_reason(state, identity)
        if reason is not None:
            skipped.append((path, reason))
            continue
        return path, state, skipped
    listed = "; ".join(f"{p.name}: {why}" for p, why in skipped) or "none of an iteration up to the others'"
    raise CheckpointError(f"cannot resume {run_dir}: no usable checkpoint in {checkpoint.checkpoint_dir(run_dir)} "
                          f"({listed})")


UNUSABLE_SUFFIX = ".unusable"


def set_aside(skipped: list[tuple[Path, str]], chosen: Path) -> None:
    """Once the checkpoint is chosen: one warning line naming the files passed over, which are
    renamed ``<name>.unusable`` (kept for inspection; no longer taken for checkpoints, so they
    neither shadow the run's own newer ones nor count against ``checkpoint.keep``)."""
    if not skipped:
        return
    listed = "; ".join(f"{p.name} ({why})" for p, why in skipped)
    moved = True
    for path, _ in skipped:
        try:
            path.rename(path.with_name(path.name + UNUSABLE_SUFFIX))
        except OSError:
            moved = False
    aside = f"set aside as *{UNUSABLE_SUFFIX}" if moved else "left in place"
    write_line(f"warning: skipped {len(skipped)} newer checkpoint(s) that cannot be used, {aside}: {listed}; resuming "
          f"from {chosen.name}")


# ---------------------------------------------------------------------------------------------
# continuing a job's run in place (a requeued SLURM job, a population multirun run again)

#: The files of an attempt that wrote no checkpoint (run/rundir/owner.py RUN_FILES without summary.json,
#: which only a finished run has): set aside before the run starts over.
UNFINISHED_SUFFIX = ".earlier_attempt"


def continue_in_place(run_dir: Path, why: str, announce: bool = True) -> bool:
    """Whether the job continues the run in ``run_dir`` (``why``: what makes it a continuation,
    for the line it prints). A directory holding no run: False. One whose run wrote no
    checkpoint (killed early): its files are set aside as ``*.earlier_attempt`` and the run starts
    over (False). Otherwise True: the job resumes from the newest checkpoint (said in a line
    unless ``announce`` is false: the caller says it once the resume is accepted)."""

    run_dir = Path(run_dir)
    if not holds_a_run(run_dir):
        return False
    if checkpoint.latest(run_dir) is None:
        for name in ("run.json", "metrics.jsonl"):
            path = run_dir / name
            if path.exists():
                path.replace(path.with_name(name + UNFINISHED_SUFFIX))
        write_line(f"{why}; its earlier attempt wrote no checkpoint: starting {run_dir} over (the earlier files are "
              f"kept as *{UNFINISHED_SUFFIX})")
        return False
    if announce:
        write_line(f"{why}: resuming {run_dir} in place from its newest checkpoint")
    return True


def finished_summary(run_dir: Path, resolved: dict) -> Optional[dict]:
    """``run_dir``'s summary if it holds this very run (``resolved``: the job's resolved config),
    finished at the job's budget; None if it holds no such run (a resume decides the rest)."""
    run_dir = Path(run_dir)
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    identity = run_identity(run_dir)
    if not isinstance(summary, dict) or identity.config is None or config_difference(resolved, identity.config):
        return None
    try:
        needed = iterations_for(resolved["total_timesteps"], resolved["algo"]["num_envs"] * resolved["algo"]["num_steps"])
    except (KeyError, TypeError, ValueError):
        return None
    done = summary.get("iterations")
    # more iterations than the budget needs is not this job's run finished: a resume refuses it in one line
    return summary if isinstance(done, int) and not isinstance(done, bool) and done == needed else None


# ---------------------------------------------------------------------------------------------
# which config

def iterations_for(total_timesteps: int, batch: int) -> int:
    return -(-int(total_timesteps) // int(batch))  # as the trainer counts: at least total_timesteps


def resume_config(composed: DictConfig, run_dir: Path, overrides: list[str],
                  composed_choices: dict[str, str]) -> tuple[DictConfig, dict[str, str], Path, dict]:
    """The config to continue ``run_dir`` with: the chosen checkpoint's resolved config, with
    the command line's overrides of RESUME_MAY_CHANGE applied. Any other override must agree
    with the run being resumed; one that does not is an error, not silently ignored. Returns
    (config, choices, checkpoint path, checkpoint state)."""

    resume_checkpoint(run_dir)
    path, state, skipped = choose_checkpoint(run_dir)
    saved = OmegaConf.create(state["config"])
    choices = dict(state["choices"])
    may_change = ", ".join(RESUME_MAY_CHANGE)
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        root = key.split(".")[0].split("/")[0]
        if root in ("resume", "hydra"):
            continue
        if root == "logger":
            with open_dict(saved):
                saved.logger = composed.logger
            if "logger" in composed_choices:
                choices["logger"] = composed_choices["logger"]
        elif root in RESUME_MAY_CHANGE:
            OmegaConf.update(saved, key, OmegaConf.select(composed, key), force_add=True)
        elif key in GROUPS:
            if composed_choices.get(key) != choices.get(key):
                raise ConfigError(key, composed_choices.get(key), f"{choices.get(key)!r} as in the run being resumed "
                                                                  f"(a resume may change only {may_change})")
        else:
            new, old = OmegaConf.select(composed, key, default=None), OmegaConf.select(saved, key, default=None)
            if isinstance(new, DictConfig) or isinstance(old, DictConfig) or new != old:
                raise ConfigError(key, new, f"{old!r} as in the run being resumed (a resume may change only "
                                            f"{may_change})")
    done, iteration = int(state.get("global_step", 0)), int(state.get("iteration", 0))
    total = saved.total_timesteps
    batch = saved.algo.num_envs * saved.algo.num_steps
    if not isinstance(total, int) or isinstance(total, bool) or iterations_for(total, batch) < iteration:
        # the last iteration may overshoot total_timesteps: a finished run resumes as finished
        least = done - batch + 1 if iteration > 0 else 1
        raise ConfigError("total_timesteps", total, f"at least {least}: the run being resumed has done {iteration} "
                                                    f"iteration(s) of {batch} steps ({done} steps)")
    set_aside(skipped, path)
    with open_dict(saved):
        saved.resume = _literal(str(run_dir))
    return saved, choices, path, state


# ---------------------------------------------------------------------------------------------
# the command line

def resume_target(argv: list[str]) -> Optional[str]:
    """The raw path of the last ``resume=<path>`` argument, or None."""
    resume = [a for a in argv if a.startswith("resume=") and a not in ("resume=", "resume=null")]
    return resume[-1].partition("=")[2] if resume else None


def _literal(text: str) -> str:
    """``text`` as a config value OmegaConf reads back literally (``${`` escaped)."""
    return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", text)


def _quote(path: str) -> str:
    """``path`` as a quoted Hydra override value that OmegaConf will not interpolate."""
    # Hydra's quoted strings take a backslash as an escape only before a quote (or the closing
    # quote); OmegaConf's is ``\\${`` for a literal ``${``.
    out = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", path)
    out = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, out)
    out = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", out)
    return f"'{out}'"


def resume_arguments(argv: list[str]) -> list[str]:
    """``resume=<run dir>`` continues in place: Hydra's run dir becomes that directory and it
    does not rewrite the run's .hydra/ (the checkpoint's config is the one that counts). The
    path is taken literally: ``${...}`` in it is not interpolated."""
    raw = resume_target(argv)
    if raw is None:
        return argv
    if any(a in ("-m", "--multirun") for a in argv):
        raise ConfigError("resume", raw, "a single run, not combined with --multirun")
    run_dir = Path(raw).expanduser().resolve()
    resume_checkpoint(run_dir)  # missing or foreign directory: fail before Hydra creates anything
    quoted = _quote(str(run_dir))
    # Hydra stores the run dir into hydra.runtime.output_dir unescaped: its job log's file name,
    # which refers to it, is given literally too
    log = _quote(str(run_dir / "app.log"))
    return [a for a in argv if not a.startswith("resume=")] + [
        f"resume={quoted}", f"hydra.run.dir={quoted}", "hydra.output_subdir=null",
        f"hydra.job_logging.handlers.file.filename={log}"]
