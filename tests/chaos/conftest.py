"""Chaos runs: real signals against real workers. Each test gets its own cluster to break."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.integration.conftest import build_stack
from tests.integration.harness import Cluster, Stack
from tests.integration.trackers import TICKS_TABLE, create_ticks_table
from tracking import registry
from tracking.models import events, supervisors, trackers, workers


@pytest.fixture(scope="module", params=["postgres-redis", "postgres-rabbitmq", "sqlite-embedded"])
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    for stack in build_stack(request, request.param):
        create_ticks_table(registry.engine(stack.settings()))
        yield stack


@pytest.fixture
def cluster(stack: Stack) -> Iterator[Cluster]:
    """A cluster of this test's own; the registry is emptied after it, so that no orphan of one
    test is restarted on the next test's workers."""
    cluster = Cluster(stack)
    try:
        yield cluster
    finally:
        cluster.close()
        empty_registry(stack)


def empty_registry(stack: Stack) -> None:
    with registry.engine(stack.settings()).begin() as conn:
        for table in (trackers, workers, events, supervisors):
            conn.execute(table.delete())
        conn.exec_driver_sql(f"DELETE FROM {TICKS_TABLE}")


@pytest.fixture
def txid() -> str:
    return f"txn_{uuid.uuid4().hex}"
