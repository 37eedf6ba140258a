"""Where a study lives: the optuna storage behind a URL, and the study created (or continued) in it.

``journal:<path>`` is an append-only journal file (fine on NFS); anything else is a SQLAlchemy
URL (``sqlite:///...``, ``postgresql+psycopg://...``: a bare ``postgresql://`` means psycopg2,
which is not installed). The study is created once, before any worker starts, and carries the
spec's fingerprint so a changed spec cannot continue it. A study is not created over a folder
whose ``trials/`` holds runs already (those of a removed study of the same name, or of another
storage used with the same --out and --study): its trial numbers would start again at 0 and
its runs would land in the old runs' directories.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import optuna

from .spec import Spec, SpecError


def make_storage(url: str) -> optuna.storages.BaseStorage:
    if url.startswith("journal:"):
        path = Path(url[len("journal:"):].removeprefix("//"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        # Workers write concurrently; wait for SQLite's file lock instead of failing at once.
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(url)


class StaleTrials(Exception):
    """The study folder holds trials of a study the storage does not have."""


def create_study(spec: Spec) -> optuna.Study:
    """Create (or load) the study once, before any worker starts, and check it is the same study.

    Exactly one process creates the study (the storage refuses a second study of the same name
    atomically); only that one records the spec and enqueues the spec's trials, so workers that
    start at the same moment on an empty storage enqueue them once, not once each."""
    trials = spec.study_dir / "trials"
    old_runs = trials.is_dir() and any(trials.iterdir())  # looked at before the storage: see below
    for attempt in range(3):  # two machines creating the same fresh storage may collide once
        try:  # the storage too: RDBStorage creates optuna's tables when it connects
            storage = make_storage(spec.storage)
            if old_runs and spec.study not in optuna.study.get_all_study_names(storage):
                # trials/ is written only after the study exists: runs there without the study
                # belong to another one (looking in this order, a study created meanwhile by
                # another machine is never mistaken for a missing one)
                raise StaleTrials(f"the study folder {spec.study_dir} holds trials/ of a study {spec.study!r} that "
                                  f"{spec.storage} does not have (removed, or made with another --storage): "
                                  f"expected a new folder for a new study: move {trials} away, or pass another "
                                  f"--study or --out")
            try:
                study = optuna.create_study(study_name=spec.study, storage=storage, direction=spec.direction)
                created = True
            except optuna.exceptions.DuplicatedStudyError:
                study, created = optuna.load_study(study_name=spec.study, storage=storage), False
            break
        except StaleTrials as err:
            raise SpecError(str(err)) from None
        except Exception as err:
            if attempt == 2:  # a bad URL, an unreachable server, a path that cannot be made
                first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
                raise SpecError(f"cannot open the study storage {spec.storage}: {type(err).__name__}: {first}") \
                    from None
            time.sleep(1 + attempt)
    if created:
        study.set_user_attr("spec", spec.fingerprint())
        for params in spec.enqueue:
            study.enqueue_trial(params)
    stored = study.user_attrs.get("spec")
    for _ in range(300):  # another process created it a moment ago: its spec is on the way
        if stored is not None:
            break
        time.sleep(0.1)
        stored = optuna.load_study(study_name=spec.study, storage=study._storage).user_attrs.get("spec")
    if stored is None:
        raise SpecError(f"study {spec.study!r} in {spec.storage} holds no spec (not made by ppo_research.sweep?); "
                        "pass --study NAME to start a new one")
    if json.dumps(stored, sort_keys=True) != json.dumps(spec.fingerprint(), sort_keys=True):
        raise SpecError(f"study {spec.study!r} in {spec.storage} was created with a different spec "
                        f"(overrides, search space, seeds or objective); pass --study NAME to start a new one")
    if study.direction.name.lower() != spec.direction:
        raise SpecError(f"study {spec.study!r} has direction {study.direction.name.lower()}, "
                        f"spec says {spec.direction}")
    return study


def load_study(spec: Spec) -> optuna.Study:
    return optuna.load_study(study_name=spec.study, storage=make_storage(spec.storage))
