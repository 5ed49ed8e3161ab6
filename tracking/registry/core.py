"""The registry's engines and connections: transactions, driver errors translated at the boundary,
and the schema's migration (the database clock is :mod:`tracking.registry.clock`)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from tracking.exceptions import RegistryNotMigrated, RegistryRefused, RegistryUnavailable
from tracking.redact import redact_url

# the clock, re-exported: the other rooms import it from here with the transactions
from tracking.registry.clock import db_now as db_now
from tracking.registry.clock import greatest as greatest
from tracking.registry.clock import later as later
from tracking.settings import Settings

log = logging.getLogger("tracking.registry")
T = TypeVar("T")


# -- engines -------------------------------------------------------------------------------------

_engines: dict[str, sa.Engine] = {}
#: one connection per process for the lease renewal alone (see lease_engine)
_lease_engines: dict[str, sa.Engine] = {}
_engines_lock = threading.Lock()
_migrated: set[str] = set()


def _reset_after_fork() -> None:
    # A forked child must not share its parent's connections.
    for engines in (_engines, _lease_engines):
        for engine in engines.values():
            engine.dispose(close=False)
        engines.clear()


os.register_at_fork(after_in_child=_reset_after_fork)


def engine(settings: Settings) -> sa.Engine:
    """The process-wide engine for the registry database (created on first use)."""
    url = settings.database_url
    eng = _engines.get(url)
    if eng is None:
        with _engines_lock:
            eng = _engines.get(url)
            if eng is None:
                eng = _engines[url] = create_engine(url, lock_seconds=settings.lock_timeout_seconds)
    if settings.migrates_itself and url not in _migrated:
        with _engines_lock:
            if url not in _migrated:
                if not _at_head(settings, eng):
                    migrate(settings)
                _migrated.add(url)
    return eng


def _at_head(settings: Settings, eng: sa.Engine) -> bool:
    """Whether the schema is at the newest revision already, found by a read: an upgrade takes
    the write lock, which on SQLite an application's open transaction may hold (a lookup inside
    a Django atomic block would wait for it, and fail)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from tracking.migrations import alembic_config

    cfg = alembic_config(settings.database_url)
    heads = set(ScriptDirectory.from_config(cfg).get_heads())
    table = cfg.get_main_option("version_table")  # set by alembic_config, read so by env.py
    with _translated(settings), eng.connect() as conn:
        conn = conn.execution_options(tracking_write=False)  # SQLite: a deferred transaction
        current = set(MigrationContext.configure(conn, opts={"version_table": table}).get_current_heads())
        conn.rollback()
    return current == heads


def lease_engine(settings: Settings) -> sa.Engine:
    """The engine the lease renewal uses: one connection of its own, so that the renewal never
    queues behind the writes of thousands of trackers for the main pool's connections (a lease
    that waits too long is declared lost, and every tracker of the process restarted)."""
    url = settings.database_url
    with _engines_lock:
        eng = _lease_engines.get(url)
        if eng is None:
            eng = _lease_engines[url] = create_engine(
                url, pool_size=1, max_overflow=0, lock_seconds=settings.lock_timeout_seconds
            )
    return eng


def create_engine(
    url: str, pool_size: int = 10, max_overflow: int = 20, lock_seconds: float = 10.0
) -> sa.Engine:
    """An engine with the registry's connection settings for that database.

    ``lock_seconds`` (PostgreSQL): how long a session may sit idle inside a transaction, and a
    statement wait for a lock (``Settings.lock_timeout_seconds``: half a lease).
    """
    sa_url = sa.make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        eng = sa.create_engine(
            sa_url, connect_args={"timeout": 30, "isolation_level": None}, pool_pre_ping=False
        )

        @sa.event.listens_for(eng, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @sa.event.listens_for(eng, "begin")
        def _sqlite_begin(conn: sa.Connection) -> None:
            mode = "IMMEDIATE" if conn.get_execution_options().get("tracking_write", True) else ""
            conn.exec_driver_sql(f"BEGIN {mode}")

        return eng
    connect_args: dict[str, Any] = {}
    if sa_url.get_backend_name() == "postgresql":
        # A process paused (or cut off) inside a transaction must not hold its row locks, and so
        # the takeover of its trackers, past its lease: the server ends such a session, and a
        # statement waits at most this long for a lock (then the caller retries).
        millis = max(1, round(lock_seconds * 1000))
        connect_args = {
            "application_name": f"tracking-{os.getpid()}",
            "connect_timeout": 5,
            "options": f"-c idle_in_transaction_session_timeout={millis} -c lock_timeout={millis}",
        }
    return sa.create_engine(
        # No pre-ping (a round trip per checkout): reads retry once on a dead connection, and a
        # failed write is retried by its caller.
        sa_url,
        pool_pre_ping=False,
        pool_size=pool_size,
        max_overflow=max_overflow,
        connect_args=connect_args,
    )


#: driver errors that can heal by themselves (a lost connection, a restarting server, a lock or
#: serialization conflict, a timeout): the operation is retried. Any other (a value the database
#: cannot store, a constraint) would fail the same way again: it is refused, never retried.
_HEALING = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.InternalError)


@contextlib.contextmanager
def _translated(settings: Settings) -> Iterator[None]:
    try:
        yield
    except sa_exc.DBAPIError as exc:
        text = str(exc.orig)
        # A registry never migrated, or at an older schema than this code, never heals: PostgreSQL
        # reports it as a ProgrammingError (UndefinedTable, UndefinedColumn), SQLite as an
        # OperationalError like a lock or a full disk, but with the primary code SQLITE_ERROR (1),
        # as it does any statement it can never run (a syntax error). A driver without the code
        # is read by SQLite's messages.
        code = getattr(exc.orig, "sqlite_errorcode", None)
        schema = getattr(exc.orig, "sqlstate", None) in ("42P01", "42703") or (
            text.startswith(("no such table:", "no such column:"))
            or (text.startswith("table ") and " has no column named " in text)
        )
        never_heals = schema or (isinstance(code, int) and code & 0xFF == 1)
        what = (
            f"registry database {redact_url(settings.database_url)} failed: "
            f"{type(exc.orig).__name__}: {redact_url(text)}"
        )
        if schema:
            raise RegistryNotMigrated(
                f"not migrated: run `tracking migrate` (the registry's tables are missing or older "
                f"than this code; {what})"
            ) from exc
        if not never_heals and (isinstance(exc, _HEALING) or exc.connection_invalidated):
            raise RegistryUnavailable(what) from exc
        raise RegistryRefused(what) from exc
    except sa_exc.StatementError as exc:  # a value the driver could not even send
        raise RegistryRefused(f"registry database refused a value: {redact_url(str(exc.orig))}") from exc
    except UnicodeEncodeError as exc:  # a lone surrogate the driver could not encode
        raise RegistryRefused(f"registry database cannot store {exc.object[exc.start : exc.end]!r}") from exc
    except sa_exc.TimeoutError as exc:
        # No pooled connection came free in time (thousands of trackers in one gevent process
        # queue for its connections): retried by the caller like any other blip.
        raise RegistryUnavailable(
            f"registry database {redact_url(settings.database_url)}: no pooled connection free in time"
        ) from exc


@contextlib.contextmanager
def _write(settings: Settings) -> Iterator[sa.Connection]:
    """One write transaction, committed on success."""
    with _translated(settings), engine(settings).begin() as conn:
        yield conn


def _read(settings: Settings, query: Callable[[sa.Connection], T]) -> T:
    """Run a read-only query: in autocommit on PostgreSQL (no BEGIN/COMMIT round trips), in a
    deferred transaction on SQLite (never takes the write lock). A pooled connection found dead
    (the database restarted) is replaced and the query tried once more."""
    for attempt in (1, 2):
        try:
            with _translated(settings), engine(settings).connect() as conn:
                if conn.dialect.name == "postgresql":
                    return query(conn.execution_options(isolation_level="AUTOCOMMIT"))
                conn = conn.execution_options(tracking_write=False)
                with conn.begin():
                    return query(conn)
        except RegistryUnavailable as exc:
            cause = exc.__cause__
            if attempt == 1 and isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated:
                continue
            raise
    raise AssertionError("unreachable")


def migrate(settings: Settings, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with the Alembic history shipped in the package."""
    from alembic import command

    from tracking.migrations import alembic_config

    logging.getLogger("alembic").setLevel(logging.WARNING)

    cached = _engines.get(settings.database_url)
    eng = cached or create_engine(settings.database_url)
    try:
        with _translated(settings), eng.begin() as conn:
            cfg = alembic_config(settings.database_url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        if cached is None:
            eng.dispose()


def dispose(settings: Settings) -> None:
    """Close this process's connections to the registry (tests, shutdown)."""
    with _engines_lock:
        found = [_engines.pop(settings.database_url, None), _lease_engines.pop(settings.database_url, None)]
        _migrated.discard(settings.database_url)
    for eng in found:
        if eng is not None:
            eng.dispose()
