"""The three stacks every lifecycle test runs on, each with two real workers and beat."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.integration.harness import Cluster, Stack
from tracking import registry

STACKS = ["sqlite-embedded", "postgres-redis", "postgres-rabbitmq"]


def build_stack(request: pytest.FixtureRequest, name: str) -> Iterator[Stack]:
    """A migrated registry and an isolated broker of the named kind, installed in this process."""
    folder = request.getfixturevalue("tmp_path_factory").mktemp(name)
    pg_databases: Callable[[], str] = request.getfixturevalue("pg_databases")
    queue = f"tracking-test-{uuid.uuid4().hex[:8]}"
    if name == "sqlite-embedded":
        database = f"sqlite:///{folder}/registry.sqlite3"
        stack = Stack(name, database, "embedded://localhost//", folder, queue=queue)
    elif name == "postgres-redis":
        prefix = request.getfixturevalue("redis_prefix")
        broker = "redis://127.0.0.1:6379/0"
        stack = Stack(name, pg_databases(), broker, folder, redis_prefix=prefix, queue=queue)
    elif name == "postgres-rabbitmq":
        stack = Stack(name, pg_databases(), request.getfixturevalue("amqp_url"), folder, queue=queue)
    else:
        raise ValueError(name)
    settings = stack.settings()
    registry.migrate(settings)
    stack.app()
    yield stack
    registry.dispose(settings)


@pytest.fixture(scope="module", params=STACKS)
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    yield from build_stack(request, request.param)


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
