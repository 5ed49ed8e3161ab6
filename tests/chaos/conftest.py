"""Chaos runs: real signals against real workers. Each test gets its own cluster to break."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import build_stack
from tests.integration.harness import Cluster, Stack
from tests.integration.trackers import create_ticks_table
from tracking import registry


@pytest.fixture(scope="module", params=["postgres-redis", "postgres-rabbitmq", "sqlite-embedded"])
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    for stack in build_stack(request, request.param):
        create_ticks_table(registry.engine(stack.settings()))
        yield stack


@pytest.fixture
def cluster(stack: Stack) -> Iterator[Cluster]:
    cluster = Cluster(stack)
    try:
        yield cluster
    finally:
        cluster.close()
