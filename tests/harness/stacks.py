"""Stacks: a registry database and a broker, isolated per test module, that workers and the test
process share.

A stack is chosen by name (``STACKS``) and built from the session's shared servers (the fixtures in
tests/conftest.py), or made on servers of a test's own (``stack_on``). Its registry is migrated and
it is installed in the test process (``tracking.install`` on a Celery app of its own), so that
``Tracker.start`` and ``lookup`` in a test use it; its environment (``Stack.env``) is what its
worker, beat and command-line processes get.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from celery import Celery

import tracking
from tracking import registry
from tracking.celery import recommended_config
from tracking.models import events, supervisors, trackers, workers
from tracking.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
#: the shared Redis (each session's keys under a prefix of its own) and RabbitMQ (a vhost of its own)
REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_HOST = "127.0.0.1:5672"
#: the stacks a module runs on unless it names others (``pytest.mark.stacks``)
STACKS = ("sqlite-embedded", "postgres-redis", "postgres-rabbitmq")
#: the trackers the test workers import (tests/integration/trackers.py)
TEST_TRACKERS = "tests.integration.trackers"
#: short lease timings, so that a lost worker's trackers restart within seconds
TIMINGS = {
    "heartbeat_seconds": 0.5,
    "lease_seconds": 3.0,
    "sweep_seconds": 1.0,
    "start_grace_seconds": 3.0,
    "control_poll_seconds": 0.1,
}


def new_queue() -> str:
    return f"tracking-test-{uuid.uuid4().hex[:8]}"


@dataclasses.dataclass
class Stack:
    """A registry database and a broker, with the settings and Celery app the test process uses
    and the environment its worker processes get."""

    name: str
    database_url: str
    broker_url: str
    folder: Path
    redis_prefix: str | None = None
    queue: str = dataclasses.field(default_factory=new_queue)
    #: the trackers the workers import (TRACKING_IMPORTS); the test process imports TEST_TRACKERS
    worker_imports: str = TEST_TRACKERS
    #: folders on the workers' PYTHONPATH before the repository's
    pythonpath: tuple[str, ...] = ()
    #: more variables in the processes' environment, over the stack's own
    extra_env: dict[str, str] = dataclasses.field(default_factory=dict)
    #: the side tables of SIDE_TABLES its registry holds (emptied with it, ``empty_registry``)
    side_tables: tuple[str, ...] = ()

    def settings(self) -> Settings:
        return Settings(
            database_url=self.database_url,
            broker_url=self.broker_url,
            broker_folder=str(self.folder / "broker"),
            queue=self.queue,
            imports=(TEST_TRACKERS,),
            **TIMINGS,  # type: ignore[arg-type]
        )

    def transport_options(self) -> dict[str, Any]:
        if self.redis_prefix:
            return {"global_keyprefix": self.redis_prefix}
        return {}

    def app(self) -> Celery:
        """A Celery app of the stack's own, with ``tracking`` installed: the test process's."""
        settings = self.settings()
        app = Celery(f"tests-{self.name}", set_as_current=False)
        conf = recommended_config(settings)
        conf["broker_transport_options"] = {
            **conf.get("broker_transport_options", {}),
            **self.transport_options(),
        }
        app.conf.update(conf)
        tracking.install(app, settings)
        return app

    def env(self) -> dict[str, str]:
        """The environment of the stack's worker, beat and command-line processes."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKING_", "CELERY_"))}
        env.update(
            PYTHONPATH=os.pathsep.join([*self.pythonpath, str(ROOT)]),
            TRACKING_DATABASE_URL=self.database_url,
            CELERY_BROKER_URL=self.broker_url,
            TRACKING_BROKER_FOLDER=str(self.folder / "broker"),
            TRACKING_QUEUE=self.queue,
            TRACKING_IMPORTS=self.worker_imports,
            CELERY_CONFIG_MODULE="tests.integration.worker_config",
            TEST_REDIS_PREFIX=self.redis_prefix or "",
        )
        for key, value in TIMINGS.items():
            env[f"TRACKING_{key.upper()}"] = str(value)
        env.update(self.extra_env)
        return env

    def web_env(self) -> dict[str, str]:
        """What a web process (an example app) needs in its environment to use this stack."""
        return {k: v for k, v in self.env().items() if k.startswith("TRACKING_") or k == "CELERY_BROKER_URL"}


def side_tables(stack: Stack) -> list[tuple[Callable[[sa.Engine], None], tuple[str, ...]]]:
    """How to create each of the stack's side tables, and the tables it makes."""
    # Imported here, not above: the test trackers are defined in this process only where needed.
    from tests.integration.trackers import SIDE_TABLES

    return [SIDE_TABLES[name] for name in stack.side_tables]


@contextlib.contextmanager
def stack_on(stack: Stack) -> Iterator[Stack]:
    """The stack made ready: its registry migrated, with its side tables, and installed in this
    process. This process's connections to it are closed at the end."""
    stack.folder.mkdir(parents=True, exist_ok=True)
    settings = stack.settings()
    registry.migrate(settings)
    for create, _ in side_tables(stack):
        create(registry.engine(settings))
    stack.app()
    try:
        yield stack
    finally:
        registry.dispose(settings)


@dataclasses.dataclass(frozen=True)
class StackSpec:
    """A stack as a module asks for it: ``pytest.mark.stacks(*names, **options)``."""

    name: str
    #: side tables (keys of SIDE_TABLES) to create in its registry
    tables: tuple[str, ...] = ()
    #: the trackers its workers import
    imports: str = TEST_TRACKERS
    #: folders on its workers' PYTHONPATH
    pythonpath: tuple[str, ...] = ()
    #: a password the database URL carries (a login role of the module's own): it must never be
    #: printed or logged (``Cluster`` checks its processes' logs)
    password: str | None = None
    #: a stack of each test's own instead of one the module's tests share
    each_test: bool = False


def stack_specs(node: pytest.Item | pytest.Collector) -> list[StackSpec]:
    """The stacks the closest ``stacks`` marker of ``node`` names (by default ``STACKS``), with the
    options of all its ``stacks`` markers: a test's own marker may narrow its module's stacks."""
    markers = list(node.iter_markers("stacks"))  # the closest first
    if not markers:
        return [StackSpec(name) for name in STACKS]
    options: dict[str, Any] = {}
    for marker in reversed(markers):
        options.update(marker.kwargs)
    return [StackSpec(name, **options) for name in markers[0].args]


@contextlib.contextmanager
def build_stack(request: pytest.FixtureRequest, spec: StackSpec) -> Iterator[Stack]:
    """The stack ``spec`` names, on the session's shared servers: a database of its own (a fresh
    PostgreSQL database, or a SQLite file), and a queue of its own on the broker."""
    folder: Path = request.getfixturevalue("tmp_path_factory").mktemp(spec.name)
    options: dict[str, Any] = {
        "worker_imports": spec.imports,
        "pythonpath": spec.pythonpath,
        "side_tables": spec.tables,
    }
    if spec.name == "sqlite-embedded":
        stack = Stack(
            spec.name, f"sqlite:///{folder}/registry.sqlite3", "embedded://localhost//", folder, **options
        )
    else:
        pg_databases: Callable[[], str] = request.getfixturevalue("pg_databases")
        if spec.name == "postgres-redis":
            prefix: str = request.getfixturevalue("redis_prefix")
            stack = Stack(spec.name, pg_databases(), REDIS_URL, folder, redis_prefix=prefix, **options)
        elif spec.name == "postgres-rabbitmq":
            stack = Stack(spec.name, pg_databases(), request.getfixturevalue("amqp_url"), folder, **options)
        else:
            raise ValueError(f"no stack is called {spec.name!r} (there are {', '.join(STACKS)})")
    with stack_on(stack) as ready:
        if spec.password is None:
            yield ready
            return
        with (
            role_with_password(ready.database_url, spec.password) as url,
            stack_on(dataclasses.replace(ready, database_url=url)) as secret,
        ):
            yield secret


@contextlib.contextmanager
def role_with_password(database_url: str, password: str) -> Iterator[str]:
    """A login role with ``password`` and every right on the database's tables; yields the database
    URL with that role and password. The role is dropped at the end.

    PostgreSQL trusts loopback, so the password is accepted and ignored: the point is that it is in
    the URL everywhere the URL goes."""
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


def empty_registry(stack: Stack) -> None:
    """Every tracker, worker, event and supervisor row gone, and the stack's side tables emptied:
    nothing of one test is left for the next one's workers to restart or count."""
    with registry.engine(stack.settings()).begin() as conn:
        for table in (trackers, workers, events, supervisors):
            conn.execute(table.delete())
        for _, tables in side_tables(stack):
            for table_name in tables:
                conn.exec_driver_sql(f"DELETE FROM {table_name}")


@contextlib.contextmanager
def migrated(settings: Settings) -> Iterator[Settings]:
    """The registry of ``settings`` migrated, for a test that runs no worker; this process's
    connections to it are closed at the end."""
    registry.migrate(settings)
    try:
        yield settings
    finally:
        registry.dispose(settings)


@contextlib.contextmanager
def current_celery_app_restored() -> Iterator[None]:
    """Installing a framework's Celery app makes it the process's current one (and its client
    the current client): this puts back the ones that were current before."""
    from tracking import client
    from tracking.celery import state

    with state.lock:
        before, current = list(state.installed), client.installed()
    yield
    with state.lock:
        state.installed[:] = before
        if current is not None:
            client.use(current)
