"""The three stacks every lifecycle test runs on, each with two real workers and beat."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Cluster, Stack
from tracking import registry

STACKS = ["sqlite-filesystem", "postgres-redis", "postgres-rabbitmq"]


@pytest.fixture(scope="module", params=STACKS)
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pg_databases: Callable[[], str],
) -> Iterator[Stack]:
    name: str = request.param
    folder: Path = tmp_path_factory.mktemp(name)
    queue = f"tracking-test-{uuid.uuid4().hex[:8]}"
    if name == "sqlite-filesystem":
        stack = Stack(
            name, f"sqlite:///{folder}/registry.sqlite3", "filesystem://localhost//", folder, queue=queue
        )
    elif name == "postgres-redis":
        prefix = request.getfixturevalue("redis_prefix")
        stack = Stack(
            name, pg_databases(), "redis://127.0.0.1:6379/0", folder, redis_prefix=prefix, queue=queue
        )
    else:
        stack = Stack(name, pg_databases(), request.getfixturevalue("amqp_url"), folder, queue=queue)
    settings = stack.settings()
    registry.migrate(settings)
    stack.app()
    yield stack
    registry.dispose(settings)


@pytest.fixture(scope="module")
def cluster(stack: Stack) -> Iterator[Cluster]:
    """Two workers and beat, shared by the tests of a module on one stack."""
    cluster = Cluster(stack)
    try:
        cluster.worker("w1")
        cluster.worker("w2")
        cluster.beat()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def txid() -> str:
    return f"txn_{uuid.uuid4().hex}"
