"""Fixtures of the cluster tests: a throwaway PostgreSQL server, sweep workers cleaned up after."""
from __future__ import annotations

import os

import pytest
from helpers import pg_server
from helpers.postgres import Worker


@pytest.fixture(scope="module")
def pg():
    reason = pg_server.unavailable_reason()
    if reason:
        if os.environ.get("PPO_RESEARCH_REQUIRE_CLUSTER"):
            pytest.fail(f"PostgreSQL required here: {reason}")
        pytest.skip(reason)
    with pg_server.PostgresServer() as server:
        yield server


@pytest.fixture
def workers():
    started: list[Worker] = []
    yield started
    for w in started:  # a failed test leaves no worker behind
        w.stop()
