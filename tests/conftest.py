"""Root fixtures: a clean environment and the real services, each isolated per test session.

Services are never skipped: a missing PostgreSQL, Redis or RabbitMQ is a failure (``.ci/run``
starts any that is down before pytest runs).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest

# Nothing from the caller's environment may leak into the settings under test.
for _key in list(os.environ):
    if _key.startswith(("TRACKING_", "CELERY_")):
        del os.environ[_key]

REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_HOST = "127.0.0.1:5672"
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
