"""A PostgreSQL + Redis stack whose database URL carries a password: a role of its own, created for
the module and dropped afterwards. PostgreSQL trusts loopback, so the password is accepted and
ignored: the point is that it is in the URL everywhere the URL goes, and must never be printed."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from tests.cli.runner import tracking_cli
from tests.integration.conftest import build_stack
from tests.integration.harness import Cluster, Stack
from tracking import registry

CANARY = f"canary-{uuid.uuid4().hex[:12]}"

Cli = Callable[..., subprocess.CompletedProcess[str]]


@contextlib.contextmanager
def role_with_password(database_url: str, password: str) -> Iterator[str]:
    """A login role with ``password`` and every right on the database's tables; yields the database
    URL with that role and password. The role is dropped at the end."""
    url = sa.make_url(database_url)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    role = f"tracking_canary_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {role}")
        conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        conn.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    try:
        yield url.set(username=role, password=password).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
            conn.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """PostgreSQL (as a role with the canary password) and Redis, installed in this process too."""
    for base in build_stack(request, "postgres-redis"):
        with role_with_password(base.database_url, CANARY) as url:
            stack = dataclasses.replace(base, database_url=url)
            stack.app()
            try:
                yield stack
            finally:
                registry.dispose(stack.settings())


@pytest.fixture(scope="module")
def cluster(stack: Stack) -> Iterator[Cluster]:
    """One worker (w1) on the stack; its log is checked for the password at the end."""
    cluster = Cluster(stack)
    try:
        cluster.worker("w1")
        yield cluster
    finally:
        cluster.close()
    assert CANARY not in cluster.log("w1"), "the database password reached the worker's log"


@pytest.fixture
def cli(stack: Stack) -> Cli:
    """``tracking ARGS...`` against the stack; fails the test if the password shows in its output."""

    def run(*args: str, **options: Any) -> subprocess.CompletedProcess[str]:
        result = tracking_cli(stack, *args, **options)
        assert CANARY not in result.stdout, f"the password reached stdout of tracking {args}"
        assert CANARY not in result.stderr, f"the password reached stderr of tracking {args}"
        return result

    return run


@pytest.fixture
def txid() -> str:
    return f"txn_{uuid.uuid4().hex}"
