"""Root fixtures: a clean environment, the real services (each isolated per test session), and the
stacks and clusters of tests/harness, which modules configure with markers (see tests/harness).

Services are never skipped: a missing PostgreSQL, Redis or RabbitMQ is a failure (``.ci/run``
starts any that is down before pytest runs).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Literal

import pytest

from tests.harness import (
    AMQP_HOST,
    REDIS_URL,
    Cluster,
    ClusterSpec,
    Stack,
    StackSpec,
    build_stack,
    empty_registry,
    stack_specs,
)

# Nothing from the caller's environment may leak into the settings under test.
for _key in list(os.environ):
    if _key.startswith(("TRACKING_", "CELERY_")):
        del os.environ[_key]

RUN_ID = uuid.uuid4().hex[:8]


def _pg_admin() -> object:
    import psycopg

    for user in ("postgres", "root"):
        try:
            return psycopg.connect(f"postgresql://{user}@127.0.0.1:5432/postgres", autocommit=True)
        except psycopg.OperationalError:
            continue
    raise RuntimeError("PostgreSQL on 127.0.0.1:5432 is not reachable (run .ci/run, which starts it)")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A database of this test session's own on the shared PostgreSQL; dropped at the end."""
    import psycopg

    name = f"tracking_test_{RUN_ID}"
    admin = _pg_admin()
    assert isinstance(admin, psycopg.Connection)
    user = admin.info.user
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@127.0.0.1:5432/{name}"
    finally:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture(scope="session")
def pg_databases(pg_server: str) -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty databases on the shared PostgreSQL; all dropped at the end."""
    import psycopg

    from tracking import registry
    from tracking.settings import Settings

    admin = _pg_admin()
    assert isinstance(admin, psycopg.Connection)
    base = pg_server.rsplit("/", 1)[0]
    made: list[str] = []

    def make() -> str:
        name = f"tracking_test_{RUN_ID}_{len(made)}"
        admin.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"{base}/{name}"

    try:
        yield make
    finally:
        for name in made:
            registry.dispose(Settings(database_url=f"{base}/{name}"))
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture
def pg_database(pg_databases: Callable[[], str]) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return pg_databases()


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    """A key prefix of this session's own on the shared Redis; its keys are deleted at the end."""
    import redis

    prefix = f"tracking-test-{RUN_ID}:"
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    try:
        yield prefix
    finally:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        client.close()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A RabbitMQ vhost of this session's own; deleted at the end. Yields the broker URL."""
    vhost = f"tracking-test-{RUN_ID}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{AMQP_HOST}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


# -- stacks and clusters (tests/harness), chosen by markers -------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "stacks(*names, **options): the stacks (tests/harness/stacks.py STACKS) the module's `stack` "
        "fixture runs on, all of them by default; options as tests.harness.StackSpec",
    )
    config.addinivalue_line(
        "markers",
        "cluster(**options): the workers and beat of the module's `cluster` fixture (w1, w2 and beat "
        "by default), or each_test=True for a cluster of each test's own; as tests.harness.ClusterSpec",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module that runs on several stacks runs each of its tests on each, module by module (test
    by test where each test has a stack of its own); a test with a ``stacks`` marker of its own runs
    on the stacks it names (of its module's)."""
    if "stack" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("cluster") is not _module_marker(metafunc, "cluster"):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: set the cluster marker in pytestmark")
    specs = stack_specs(metafunc.definition)
    each_test = any(spec.each_test for spec in specs)
    narrowed = metafunc.definition.get_closest_marker("stacks") is not _module_marker(metafunc, "stacks")
    if len(specs) > 1 or each_test or narrowed:
        ids = [spec.name for spec in specs]
        scope: Literal["function", "module"] = "function" if each_test else "module"
        metafunc.parametrize("stack", specs, indirect=True, ids=ids, scope=scope)


def _module_marker(metafunc: pytest.Metafunc, name: str) -> pytest.Mark | None:
    module = metafunc.definition.getparent(pytest.Module)
    return module.get_closest_marker(name) if module is not None else None


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The module's stack: a migrated registry and a broker queue of its own, installed in this
    process (one stack after the other where the module runs on several, and one per test where
    ``pytest.mark.stacks(..., each_test=True)``)."""
    spec: StackSpec = request.param if hasattr(request, "param") else stack_specs(request.node)[0]
    with build_stack(request, spec) as stack:
        yield stack


@pytest.fixture(scope="module")
def shared_cluster(request: pytest.FixtureRequest, stack: Stack) -> Iterator[Cluster]:
    """The cluster the tests of a module share (see ``cluster``)."""
    spec = ClusterSpec.of(request.node)
    with Cluster(stack, concurrency=spec.concurrency) as cluster:
        yield cluster.start(*spec.workers, beat=spec.beat)


@pytest.fixture
def cluster(request: pytest.FixtureRequest, stack: Stack) -> Iterator[Cluster]:
    """Workers and beat on the stack, as the module's ``cluster`` marker says: by default w1, w2
    and beat, shared by the module's tests; with ``each_test=True`` a cluster of this test's own,
    after which the registry is emptied."""
    spec = ClusterSpec.of(request.node)
    if not spec.each_test:
        yield request.getfixturevalue("shared_cluster")
        return
    try:
        with Cluster(stack, concurrency=spec.concurrency) as cluster:
            yield cluster.start(*spec.workers, beat=spec.beat)
    finally:
        empty_registry(stack)


@pytest.fixture
def txid() -> str:
    """A transaction ID no other test uses."""
    return f"txn_{uuid.uuid4().hex}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty database for a registry: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('registry')}/registry.sqlite3"
    url: str = request.getfixturevalue("pg_database")
    return url
