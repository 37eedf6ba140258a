"""One run's life: build its parts, check its directory, train (or resume), always close.

``train_from_config`` raises (the sweep driver calls it per trial and records failures); only
the command line (``app``) turns failures into one line on stderr and an exit status.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from omegaconf import DictConfig

from ..errors import CheckpointError, RunDirError
from . import checkpoint
from .build import build
from .console import print_end_line
from .loggers import write_json_atomic

#: Written into every run directory at the start of each run segment: the run describes itself
#: (resolved config, group choices, overrides), whoever started it.
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


def check_free_space(run_dir: Path, trainer) -> None:
    """Room for ``keep`` + 1 checkpoints (one is written before the oldest is pruned) plus 1 MB
    of metrics; measured from this run's checkpoint, plus Adam's two moments per parameter,
    which a fresh optimizer has not allocated yet."""
    moments = 2 * sum(p.numel() * p.element_size() for p in trainer.policy.parameters())
    size = checkpoint.serialized_size(trainer.state_dict()) + moments
    need = size * (trainer.cfg.checkpoint.keep + 1) + 2**20
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise RunDirError(f"output directory {run_dir} has {free / 2**20:.1f} MB free; this run needs about "
                          f"{need / 2**20:.1f} MB (checkpoints of {size / 2**10:.0f} KB, "
                          f"checkpoint.keep={trainer.cfg.checkpoint.keep})")


def describe_run(run_dir: Path, resolved: dict, choices: dict[str, str], overrides: Sequence[str] = ()) -> None:
    write_json_atomic(Path(run_dir) / RUN_FILE, {"config": resolved, "choices": dict(choices),
                                                 "overrides": list(overrides)})


def train_from_config(cfg: DictConfig, run_dir: Path, choices: dict[str, str],
                      on_evaluation: Optional[Callable[[int, int, float], None]] = None,
                      resume_from: Optional[Path] = None, overrides: Sequence[str] = ()) -> dict:
    """Build the run of ``cfg``, train it in ``run_dir`` and return the summary. Usable without
    Hydra's runtime (the sweep driver calls it per trial with an ``on_evaluation`` pruning hook).

    ``resume_from``: a checkpoint of this run to continue from (rows of ``metrics.jsonl`` past
    it are dropped first). Failures raise: ConfigError, RunDirError, CheckpointError before
    training; NonFiniteError, TrainingInterrupted (a KeyboardInterrupt) during it.
    """
    from .stops import TrainingInterrupted
    from .trainer import Trainer  # imported here so `--help` and config errors stay fast

    parts = build(cfg, choices)
    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    state = checkpoint.load(resume_from) if resume_from is not None else None
    trainer = Trainer(parts, run_dir, on_evaluation=on_evaluation)
    logger, exit_code = parts.logger, 1
    try:
        check_free_space(run_dir, trainer)
        describe_run(run_dir, parts.resolved, choices, overrides)
        # The tracker starts before the state (RNGs included) is restored, as in a fresh run, so
        # whatever it does at start-up cannot shift a resumed run off the uninterrupted one.
        logger.start(run_dir, parts.resolved, choices,
                     resume_id=state.get("logger_run_id") if state is not None else None)
        if state is not None:
            resume_trainer(trainer, state, resume_from)
        summary = trainer.train()
        exit_code = 0

        print_end_line(run_dir, summary, logger)  # run/console.py: the run's one-line end report

        return summary
    except TrainingInterrupted as err:
        exit_code = 128 + err.signum
        raise
    finally:
        trainer.close()
        logger.finish(exit_code)


def resume_trainer(trainer, state: dict, path: Path) -> None:
    try:
        exact = trainer.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError, TypeError) as err:  # e.g. a network of another size
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} does not fit this run's config: {first}") from None
    dropped = checkpoint.truncate_metrics(trainer.run_dir / "metrics.jsonl", trainer.iteration)
    print(f"resuming {trainer.run_dir} from iteration {trainer.iteration} (global step {trainer.global_step}); "
          f"{dropped} metrics row(s) past the checkpoint dropped", file=sys.stderr, flush=True)
    if not exact:
        print(f"warning: the envs of {trainer.cfg.env.id} ({trainer.cfg.env.vectorization}) cannot be restored "
              "exactly; they restart with fresh episodes, so the continuation is correct but not bit-identical "
              "to an uninterrupted run", file=sys.stderr, flush=True)
