"""One run's life: build its parts, check its directory, train (or resume), always close.

``train_from_config`` raises (the sweep driver calls it per trial and records failures); only
the command line (``app``) turns failures into one line on stderr and an exit status.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional, Sequence

from omegaconf import DictConfig

from ..errors import CheckpointError, RunDirError
from . import checkpoint, owner
from .build import build
from .console import print_end_line, write_line
from .loggers import write_json_atomic

#: Written into every run directory at the start of each run segment: the run describes itself
#: (its run id, resolved config, group choices, overrides), whoever started it.
RUN_FILE = "run.json"


def check_run_dir(run_dir: Path) -> None:
    """The run directory and its checkpoints/ must take a file: found out now, not at the first
    checkpoint an hour in."""
    probe_dir = checkpoint.checkpoint_dir(run_dir)
    try:
        probe_dir.mkdir(parents=True, exist_ok=True)
        probe = probe_dir / f".write_probe_{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as err:
        raise RunDirError(f"output directory {run_dir} is not writable: {err.strerror or err}"
                          f"{f' ({err.filename})' if err.filename else ''}") from None


def check_free_space(run_dir: Path, trainer, member: int = 0) -> None:
    """Room for ``keep`` + 1 checkpoints (one is written before the oldest is pruned) plus 1 MB
    of metrics; measured from this run's (the trainer's ``member``'s) checkpoint."""
    size = checkpoint.serialized_size(trainer.member_state(member))
    keep = trainer.members[member].cfg.checkpoint.keep
    need = size * (keep + 1) + 2**20
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise RunDirError(f"output directory {run_dir} has {free / 2**20:.1f} MB free; this run needs about "
                          f"{need / 2**20:.1f} MB (checkpoints of {size / 2**10:.0f} KB, "
                          f"checkpoint.keep={keep})")


def write_json_durable(path: Path, data: dict) -> None:
    """Write ``path`` atomically and durably (temp file, fsync, rename, directory fsync)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    checkpoint.fsync_file(path.parent)


def describe_run(run_dir: Path, resolved: dict, choices: dict[str, str], overrides: Sequence[str] = (),
                 run_id: Optional[str] = None) -> None:
    """run.json: the run's identity (``run_id``, kept by every resume; checkpoints carry it too),
    resolved config, group choices and this segment's overrides."""
    data = {"run_id": run_id, "config": resolved, "choices": dict(choices), "overrides": list(overrides)}
    try:
        write_json_durable(Path(run_dir) / RUN_FILE, data)
    except OSError:  # e.g. a value json cannot hold: the plain writer's behaviour
        write_json_atomic(Path(run_dir) / RUN_FILE, data)


def train_from_config(cfg: DictConfig, run_dir: Path, choices: dict[str, str],
                      on_evaluation: Optional[Callable[[int, int, float], None]] = None,
                      resume_from: Optional[Path] = None, overrides: Sequence[str] = (),
                      resume_state: Optional[dict] = None) -> dict:
    """Build the run of ``cfg``, train it in ``run_dir`` and return the summary. Usable without
    Hydra's runtime (the sweep driver calls it per trial with an ``on_evaluation`` pruning hook).
    A run is a population of one (run/population.py): this is ``train_members`` of one job.

    The run owns ``run_dir`` while it lives (run/owner.py): a second writer is refused.

    ``resume_from``: a checkpoint of this run to continue from (``resume_state``: its loaded
    state, if the caller has it). The state is loaded into the trainer before anything in the
    directory is written; then rows of ``metrics.jsonl`` past it are dropped and a gap before it
    is reported. Failures raise: ConfigError, RunDirError, CheckpointError before training;
    NonFiniteError, TrainingInterrupted (a KeyboardInterrupt) during it.
    """
    from .population import MemberJob, train_members

    result = train_members([MemberJob(cfg, Path(run_dir), choices, overrides, resume_from, on_evaluation,
                                      resume_state)])[0]
    if isinstance(result, BaseException):
        raise result
    return result


def described_run_id(run_dir: Path) -> Optional[str]:
    """The run id run.json holds, if any."""
    try:
        run_id = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None
    return run_id if isinstance(run_id, str) else None


def load_into(trainer, state: dict, path: Path) -> bool:
    """Load ``state`` into the trainer (nothing is written); returns whether the envs are exact."""
    try:
        return trainer.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as err:  # e.g. a network of another size
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} does not fit this run's config: {first}") from None


def _ranges(numbers: list[int]) -> str:
    spans, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            spans.append(f"{start}" if start == n else f"{start}-{n}")
            start = None
    return ", ".join(spans)


def continue_metrics(trainer, exact: bool, member=None) -> None:
    """Drop the rows past the checkpoint; report rows missing before it (one line).
    ``member``: which of the trainer's runs (default its first)."""
    member = member or trainer.members[0]
    path = member.run_dir / checkpoint.METRICS_FILE
    dropped = checkpoint.truncate_metrics(path, trainer.iteration)
    write_line(f"resuming {member.run_dir} from iteration {trainer.iteration} (global step {trainer.global_step}); "
          f"{dropped} metrics row(s) past the checkpoint dropped")
    held = checkpoint.metrics_iterations(path)
    missing = sorted(set(range(1, trainer.iteration + 1)) - set(held or ()))
    if missing:
        what = f"{path} is missing" if held is None else \
            f"{path} lacks the rows of iteration(s) {_ranges(missing)}"
        write_line(f"warning: {what}: {len(missing)} of the {trainer.iteration} iteration(s) before the checkpoint have no "
              f"metrics row (lost before this resume); the run goes on from the checkpoint")
    if not exact:
        write_line(f"warning: the envs of {member.cfg.env.id} ({member.cfg.env.vectorization}) cannot be restored "
              "exactly; they restart with fresh episodes, so the continuation is correct but not bit-identical "
              "to an uninterrupted run")
