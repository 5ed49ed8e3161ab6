"""``lookup``'s read of one entry by its key, off SQLAlchemy's general execution path.

A lookup is one primary-key-sized read, and the machinery around it (a Connection, the statement's
cache key, the result's metadata, a mapping per row) cost more than the query. So the statement,
built with SQLAlchemy Core like every other, is compiled once per engine; each lookup checks a
connection out of the engine's pool, runs the compiled SQL on the driver (psycopg prepares it
after a few runs), in autocommit on PostgreSQL (no BEGIN or ROLLBACK round trips) and outside any
transaction on SQLite, and maps the one row it gets to an :class:`~tracking.models.Entry` by
position. Driver errors are raised as SQLAlchemy's, translated at the registry's boundary as
everywhere else; a pooled connection found dead is replaced and the read tried once more.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from tracking.models import Entry, trackers
from tracking.registry.core import _translated, engine
from tracking.registry.rows import _tracker_with_lease
from tracking.settings import Settings

#: lookup's statement: an entry with its lease, by the registry's unique key
GET = _tracker_with_lease.where(
    trackers.c.kind == sa.bindparam("kind"), trackers.c.transaction_id == sa.bindparam("transaction_id")
)
#: the columns of the entry GET selects, in order
_NAMES = tuple(c.key for c in GET.selected_columns)
#: columns that SQLite returns as JSON text (PostgreSQL's driver decodes jsonb itself)
_JSON = frozenset(c.key for c in trackers.c if isinstance(c.type, sa.JSON))

_compiled: dict[sa.Engine, tuple[str, tuple[str, ...] | None]] = {}
_lock = threading.Lock()


def _sql(eng: sa.Engine) -> tuple[str, tuple[str, ...] | None]:
    """GET compiled for ``eng``'s database: its SQL, and the order of its parameters when the
    driver takes them by position (None: by name)."""
    found = _compiled.get(eng)
    if found is None:
        compiled = GET.compile(dialect=eng.dialect)
        order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
        found = (str(compiled), order)
        with _lock:
            _compiled[eng] = found
    return found


def get(settings: Settings, kind: str, transaction_id: str) -> Entry | None:
    """The registry entry for (kind, transaction_id), whatever its status, or None."""
    eng = engine(settings)
    sql, order = _sql(eng)
    named = {"kind": kind, "transaction_id": transaction_id}
    params: Any = named if order is None else tuple(named[name] for name in order)
    for attempt in (1, 2):
        with _translated(settings):
            row, dead = _fetch(eng, sql, params)
            if dead is None:
                return _entry(row, eng.dialect.name) if row is not None else None
            if attempt == 2:
                raise dead
    raise AssertionError("unreachable")


def _fetch(
    eng: sa.Engine, sql: str, params: Any
) -> tuple[Sequence[Any] | None, sa_exc.StatementError | None]:
    """The row, or ``(None, error)`` when the pooled connection was found dead (it is replaced);
    any other driver error is raised as SQLAlchemy's."""
    dialect = eng.dialect
    try:
        raw = eng.raw_connection()
    except dialect.loaded_dbapi.Error as exc:  # raised by the driver as is, unlike a statement's
        dead = dialect.is_disconnect(exc, None, None)
        raise sa_exc.DBAPIError.instance(
            None, None, exc, dialect.loaded_dbapi.Error, connection_invalidated=dead, dialect=dialect
        ) from exc
    try:
        driver: Any = raw.driver_connection
        postgres = dialect.name == "postgresql"
        try:
            if postgres:
                driver.autocommit = True
            try:
                return driver.execute(sql, params).fetchone(), None
            finally:
                if postgres and not driver.closed:
                    driver.autocommit = False
        except dialect.loaded_dbapi.Error as exc:
            dead = dialect.is_disconnect(exc, raw.dbapi_connection, None)
            error = sa_exc.DBAPIError.instance(
                sql, params, exc, dialect.loaded_dbapi.Error, connection_invalidated=dead, dialect=dialect
            )
            if not dead:
                raise error from exc
            raw.invalidate(exc)
            return None, error
    finally:
        raw.close()


def _entry(row: Sequence[Any], dialect: str) -> Entry:
    values = dict(zip(_NAMES, row, strict=True))
    if dialect != "postgresql":
        for name in _JSON:
            value = values[name]
            if isinstance(value, str):
                values[name] = json.loads(value)
    return Entry.from_mapping(values)  # type: ignore[arg-type]
