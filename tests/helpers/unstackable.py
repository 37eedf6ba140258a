"""A network with no stacked form, as a user's own network may be: the MLP actor-critic without
``stackable = True`` (algo/stacking.py). Named on the command line as
``network._target_=helpers.unstackable.UnstackableMLP`` with ``tests/`` on PYTHONPATH (``TESTS_ON_PATH``)."""
from __future__ import annotations

import os

from helpers import REPO
from ppo_research.algo.networks import MLPActorCritic

#: run_cli's ``env=`` for a subprocess that must import this module
TESTS_ON_PATH = {"PYTHONPATH": str(REPO / "tests") + os.pathsep + os.environ.get("PYTHONPATH", "")}
TARGET = "network._target_=helpers.unstackable.UnstackableMLP"


class UnstackableMLP(MLPActorCritic):
    stackable = False
