"""Fixtures of the cluster tests: the SLURM partition to submit to, a throwaway PostgreSQL server,
sweep workers cleaned up after."""
from __future__ import annotations

import os

import pytest
from helpers import pg_server, slurm
from helpers.postgres import Worker


def require_or_skip(reason: str) -> None:
    """Skip, or fail where CI requires the services (PPO_RESEARCH_REQUIRE_CLUSTER=1)."""
    if os.environ.get("PPO_RESEARCH_REQUIRE_CLUSTER"):
        pytest.fail(f"required here: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def partition() -> str:
    """The default SLURM partition, when it has a node that can run jobs."""
    name, why = slurm.default_partition()
    if name is None:
        require_or_skip(why)
    return name


@pytest.fixture(scope="module")
def pg():
    reason = pg_server.unavailable_reason()
    if reason:
        require_or_skip(f"PostgreSQL: {reason}")
    with pg_server.PostgresServer() as server:
        yield server


@pytest.fixture
def workers():
    started: list[Worker] = []
    yield started
    for w in started:  # a failed test leaves no worker behind
        w.stop()
