"""Which driver errors heal (RegistryUnavailable: retried) and which never do (RegistryRefused).

A registry that was never migrated, or is at an older schema (a column missing), fails the same way
on every try: it is refused, on SQLite ("no such table", "no such column": an OperationalError,
which was taken for a blip and retried forever) as on PostgreSQL (UndefinedTable, UndefinedColumn).
A locked or unreachable database heals: it is still retried.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from tracking import registry
from tracking.exceptions import RegistryNotMigrated, RegistryRefused, RegistryUnavailable
from tracking.policy import RestartPolicy
from tracking.registry import core
from tracking.settings import Settings

KIND = "ErrorProbe"
POLICY = RestartPolicy(max_restarts=10, max_seconds=60, backoff=1, backoff_max=10)

#: every operation a worker, the supervisor and a caller start with, on an entry that may not exist
OPERATIONS: dict[str, Callable[[Settings], Any]] = {
    "get": lambda s: registry.get(s, KIND, "t1"),
    "start": lambda s: registry.start(s, KIND, "t1", {}, POLICY),
    "claim": lambda s: registry.claim(s, KIND, "t1", 1, worker="w@here", worker_id="w1", policy=POLICY),
    "select": lambda s: registry.select(s, KIND),
}


def _sqlstate(exc: BaseException) -> str | None:
    cause = exc.__cause__
    return getattr(getattr(cause, "orig", None), "sqlstate", None)


@pytest.fixture
def unmigrated(database_url: str) -> Iterator[Settings]:
    """Settings on an empty database that nothing migrates (SQLite migrates itself by default)."""
    settings = Settings(database_url=database_url, auto_migrate=False)
    try:
        yield settings
    finally:
        registry.dispose(settings)


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
def test_an_unmigrated_registry_is_refused_not_retried(
    unmigrated: Settings, operation: Callable[[Settings], Any]
) -> None:
    with pytest.raises(RegistryNotMigrated) as refused:
        operation(unmigrated)
    assert isinstance(refused.value, RegistryRefused) and not isinstance(refused.value, RegistryUnavailable)
    message = str(refused.value)
    assert message.startswith("not migrated: run `tracking migrate`")
    if unmigrated.database_url.startswith("sqlite"):
        assert "no such table: tracking_" in message
    else:
        assert _sqlstate(refused.value) == "42P01", message  # undefined_table
        assert "UndefinedTable" in message


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
def test_a_registry_missing_a_column_is_refused_not_retried(
    registry_settings: Settings, operation: Callable[[Settings], Any]
) -> None:
    # A registry at an older schema than the code: a column added by a later migration is missing.
    with registry.engine(registry_settings).begin() as conn:
        conn.execute(sa.text("ALTER TABLE tracking_trackers DROP COLUMN republished"))
    registry.dispose(registry_settings)  # no pooled connection keeps the old schema cached
    with pytest.raises(RegistryRefused) as refused:
        operation(registry_settings)
    assert not isinstance(refused.value, RegistryUnavailable)
    message = str(refused.value)
    if registry_settings.database_url.startswith("sqlite"):
        assert "no such column" in message or "has no column named" in message, message
    else:
        assert _sqlstate(refused.value) == "42703", message  # undefined_column
        assert "UndefinedColumn" in message


# -- what heals is still retried -------------------------------------------------------------------


def test_a_locked_sqlite_database_is_still_retried(tmp_path: Path) -> None:
    path = tmp_path / "locked.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (a INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    waiter = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="database is locked") as locked:
            waiter.execute("INSERT INTO t VALUES (1)")
        settings = Settings(database_url=f"sqlite:///{path}", auto_migrate=False)
        with pytest.raises(RegistryUnavailable, match="database is locked"), core._translated(settings):
            raise sa_exc.OperationalError("INSERT INTO t VALUES (1)", {}, locked.value)
    finally:
        waiter.close()
        holder.close()


def test_a_sqlite_database_that_cannot_be_opened_is_still_retried(tmp_path: Path) -> None:
    # A volume not mounted yet: the folder of the file is missing.
    settings = Settings(database_url=f"sqlite:///{tmp_path}/missing/registry.sqlite3", auto_migrate=False)
    try:
        with pytest.raises(RegistryUnavailable, match="unable to open database file"):
            registry.get(settings, KIND, "t1")
    finally:
        registry.dispose(settings)


@pytest.mark.parametrize(
    "message", ["disk I/O error", "database is locked", "database table is locked", "unable to open database"]
)
def test_sqlite_errors_that_heal_are_retried_by_their_message_too(message: str) -> None:
    # A driver error without SQLite's error code (another SQLite driver) is read by its message.
    settings = Settings(database_url="sqlite:///unused.sqlite3", auto_migrate=False)
    with pytest.raises(RegistryUnavailable), core._translated(settings):
        raise sa_exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))


@pytest.mark.parametrize(
    "message",
    [
        "no such table: tracking_trackers",
        "no such column: tracking_trackers.republished",
        "table tracking_trackers has no column named republished",
    ],
)
def test_sqlite_schema_errors_are_refused_by_their_message_too(message: str) -> None:
    # (SQLite's own driver gives the code SQLITE_ERROR, which is what refuses them in the tests above.)
    settings = Settings(database_url="sqlite:///unused.sqlite3", auto_migrate=False)
    with pytest.raises(RegistryRefused), core._translated(settings):
        raise sa_exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))


def test_a_sqlite_statement_that_can_never_run_is_refused(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/registry.sqlite3", auto_migrate=False)
    try:
        with registry.engine(settings).connect() as conn:
            with pytest.raises(RegistryRefused, match="syntax error"), core._translated(settings):
                conn.execute(sa.text("SELEC 1"))
    finally:
        registry.dispose(settings)


def test_an_unreachable_postgresql_server_is_still_retried() -> None:
    settings = Settings(database_url="postgresql+psycopg://nobody:pw@127.0.0.1:1/none", auto_migrate=False)
    try:
        with pytest.raises(RegistryUnavailable) as unavailable:
            registry.get(settings, KIND, "t1")
        assert "pw@" not in str(unavailable.value)
    finally:
        registry.dispose(settings)
