"""``lookup``'s read of one entry by its key, off SQLAlchemy's general execution path.

``find`` (``lookup``, ``find_many`` for ``lookup_many``) reads only what a tracker's reference
shows, with its lease: not the state (up to 64 KiB), arguments or policy, which it would fetch and
decode for nothing; ``get`` and ``get_many`` read whole entries the same way.

A lookup is one primary-key-sized read, and the machinery around it (a Connection, the statement's
cache key, the result's metadata, a mapping per row) cost more than the query. So the statement,
built with SQLAlchemy Core like every other, is compiled once per engine; each lookup checks a
connection out of the engine's pool (and keeps up to ``SPARE`` of them between lookups, which
costs as much as the query otherwise), runs the compiled SQL on the driver (psycopg prepares it
after a few runs), in autocommit on PostgreSQL (no BEGIN or ROLLBACK round trips) and outside any
transaction on SQLite, and maps the one row it gets to an :class:`~tracking.models.Entry` by
position. A spare is closed when its engine is disposed (``registry.dispose``); a forked child
never touches its parent's. Driver errors are raised as SQLAlchemy's, translated at the registry's boundary as
everywhere else; a pooled connection found dead is replaced and the read tried once more.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.pool import PoolProxiedConnection

from tracking.models import Entry, Found, Status, aware, trackers, workers
from tracking.registry.core import _translated, engine
from tracking.registry.rows import _tracker_with_lease
from tracking.settings import Settings

#: what ``find`` reads of an entry (a Found's fields, in order), with its lease
_shown = (trackers.c[f.name] for f in dataclasses.fields(Found) if f.name != "heartbeat_at")
_found = sa.select(*_shown, workers.c.heartbeat_at).select_from(
    trackers.outerjoin(workers, workers.c.id == trackers.c.worker_id)
)
#: an entry by the registry's unique key
_key = (trackers.c.kind == sa.bindparam("kind"), trackers.c.transaction_id == sa.bindparam("transaction_id"))
#: the entries of many IDs: on PostgreSQL one array (one statement text whatever their number, so
#: prepared once); on SQLite one JSON array, read with json_each
_in_array = trackers.c.transaction_id == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.String())))
_each = sa.func.json_each(sa.bindparam("ids", type_=sa.String())).table_valued("value")
_in_json = trackers.c.transaction_id.in_(sa.select(_each.c.value))
_kind = trackers.c.kind == sa.bindparam("kind")
#: the statements, by (what, postgresql): an entry with its lease ("get") or what lookup shows of
#: it ("find"), by its key or for many IDs
STATEMENTS: dict[tuple[str, bool], sa.Select[Any]] = {
    ("get", True): _tracker_with_lease.where(*_key),
    ("get", False): _tracker_with_lease.where(*_key),
    ("get many", True): _tracker_with_lease.where(_kind, _in_array),
    ("get many", False): _tracker_with_lease.where(_kind, _in_json),
    ("find", True): _found.where(*_key),
    ("find", False): _found.where(*_key),
    ("find many", True): _found.where(_kind, _in_array),
    ("find many", False): _found.where(_kind, _in_json),
}
GET = STATEMENTS["get", True]
#: the columns of the entry GET selects, in order
_NAMES = tuple(c.key for c in GET.selected_columns)
if _NAMES != tuple(f.name for f in dataclasses.fields(Entry))[: len(_NAMES)]:  # pragma: no cover
    raise ImportError("Entry's fields are no longer in the order of GET's columns")
#: where GET's row has the status, the timestamps, and JSON (which SQLite returns as text)
_STATUS = _NAMES.index("status")
_TIMES = tuple(i for i, c in enumerate(GET.selected_columns) if isinstance(c.type, sa.DateTime))
_JSON = tuple(i for i, c in enumerate(GET.selected_columns) if isinstance(c.type, sa.JSON))
#: the same of a Found
_FOUND = STATEMENTS["find", True]
_FOUND_STATUS = tuple(c.key for c in _FOUND.selected_columns).index("status")
_FOUND_TIMES = tuple(i for i, c in enumerate(_FOUND.selected_columns) if isinstance(c.type, sa.DateTime))

_compiled: dict[tuple[sa.Engine, str], tuple[str, tuple[str, ...] | None]] = {}
_lock = threading.Lock()


def _sql(eng: sa.Engine, what: str) -> tuple[str, tuple[str, ...] | None]:
    """Statement ``what`` compiled for ``eng``'s database: its SQL, and the order of its parameters
    when the driver takes them by position (None: by name)."""
    found = _compiled.get((eng, what))
    if found is None:
        compiled = STATEMENTS[what, eng.dialect.name == "postgresql"].compile(dialect=eng.dialect)
        order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
        found = (str(compiled), order)
        with _lock:
            _compiled[(eng, what)] = found
    return found


def get(settings: Settings, kind: str, transaction_id: str) -> Entry | None:
    """The registry entry for (kind, transaction_id), whatever its status, or None."""
    eng = engine(settings)
    rows = _by_key(settings, eng, "get", kind, transaction_id)
    return _entry(rows[0], eng.dialect.name) if rows else None


def find(settings: Settings, kind: str, transaction_id: str) -> Found | None:
    """What ``lookup`` shows of the entry for (kind, transaction_id), whatever its status, or None:
    :func:`get` without the state, arguments and policy."""
    rows = _by_key(settings, engine(settings), "find", kind, transaction_id)
    return _found_row(rows[0]) if rows else None


def _by_key(
    settings: Settings, eng: sa.Engine, what: str, kind: str, transaction_id: str
) -> list[Sequence[Any]]:
    sql, order = _sql(eng, what)
    named = {"kind": kind, "transaction_id": transaction_id}
    params: Any = named if order is None else tuple(named[name] for name in order)
    return _read(settings, eng, sql, params)


def get_many(settings: Settings, kind: str, transaction_ids: Sequence[str]) -> list[Entry]:
    """The entries of ``kind`` for these transaction IDs, whatever their status, a thousand IDs a
    query, by the statement compiled once (the IDs one array: PostgreSQL's, or JSON on SQLite)."""
    dialect = engine(settings).dialect.name
    return [_entry(row, dialect) for row in _many(settings, "get many", kind, transaction_ids)]


def find_many(settings: Settings, kind: str, transaction_ids: Sequence[str]) -> list[Found]:
    """What ``lookup_many`` shows of these IDs' entries: :func:`get_many` as :func:`find` reads."""
    return [_found_row(row) for row in _many(settings, "find many", kind, transaction_ids)]


def _many(settings: Settings, what: str, kind: str, transaction_ids: Sequence[str]) -> list[Sequence[Any]]:
    wanted = sorted(set(transaction_ids))
    eng = engine(settings)
    postgres = eng.dialect.name == "postgresql"
    sql, order = _sql(eng, what)
    rows: list[Sequence[Any]] = []
    for i in range(0, len(wanted), 1000):
        chunk = wanted[i : i + 1000]
        named = {"kind": kind, "ids": chunk if postgres else json.dumps(chunk)}
        params: Any = named if order is None else tuple(named[name] for name in order)
        rows += _read(settings, eng, sql, params)
    return rows


def _read(settings: Settings, eng: sa.Engine, sql: str, params: Any) -> list[Sequence[Any]]:
    """The rows of ``sql``, driver errors translated; tried once more on a connection found dead."""
    for attempt in (1, 2):
        with _translated(settings):
            rows, dead = _fetch(eng, sql, params)
            if dead is None:
                return rows
            if attempt == 2:
                raise dead
    raise AssertionError("unreachable")


def _fetch(eng: sa.Engine, sql: str, params: Any) -> tuple[list[Sequence[Any]], sa_exc.StatementError | None]:
    """The rows, or ``([], error)`` when the pooled connection was found dead (it is replaced);
    any other driver error is raised as SQLAlchemy's."""
    dialect = eng.dialect
    raw = _checkout(eng)
    try:
        rows = raw.driver_connection.execute(sql, params).fetchall()  # type: ignore[union-attr]
    except dialect.loaded_dbapi.Error as exc:
        dead = dialect.is_disconnect(exc, raw.dbapi_connection, None)
        error = sa_exc.DBAPIError.instance(
            sql, params, exc, dialect.loaded_dbapi.Error, connection_invalidated=dead, dialect=dialect
        )
        if dead:
            raw.invalidate(exc)
            return [], error
        _checkin(eng, raw)
        raise error from exc
    except BaseException:
        raw.invalidate()
        raise
    _checkin(eng, raw)
    return rows, None


# -- spare connections ------------------------------------------------------------------------------

#: connections each engine's lookups keep between two lookups, out of its pool: a checkout from
#: SQLAlchemy's pool and its return cost as much as the query
SPARE = 2
#: per engine, its spare connections, each with the process that checked it out
_spares: dict[sa.Engine, list[tuple[int, PoolProxiedConnection]]] = {}
#: spares a forked child found: its parent's sockets, never used nor closed here
_orphans: list[PoolProxiedConnection] = []


def _checkout(eng: sa.Engine) -> PoolProxiedConnection:
    """A spare connection of this process, else one from the engine's pool (in autocommit on
    PostgreSQL, as long as lookups hold it)."""
    spares = _spares.get(eng)
    while spares:
        try:
            pid, raw = spares.pop()
        except IndexError:
            break
        if pid == os.getpid():
            return raw
        _orphans.append(raw)
    dialect = eng.dialect
    try:
        raw = eng.raw_connection()
    except dialect.loaded_dbapi.Error as exc:  # raised by the driver as is, unlike a statement's
        dead = dialect.is_disconnect(exc, None, None)
        raise sa_exc.DBAPIError.instance(
            None, None, exc, dialect.loaded_dbapi.Error, connection_invalidated=dead, dialect=dialect
        ) from exc
    if dialect.name == "postgresql":
        raw.driver_connection.autocommit = True  # type: ignore[union-attr]
    return raw


def _checkin(eng: sa.Engine, raw: PoolProxiedConnection) -> None:
    """Keep ``raw`` as a spare, or give it back to the engine's pool as it was checked out."""
    spares = _spares.get(eng)
    if spares is None:
        with _lock:
            spares = _spares.get(eng)
            if spares is None:
                spares = _spares[eng] = []
                sa.event.listen(eng, "engine_disposed", _forget)
    if len(spares) < SPARE:
        spares.append((os.getpid(), raw))
        return
    try:
        if eng.dialect.name == "postgresql":
            raw.driver_connection.autocommit = False  # type: ignore[union-attr]
    finally:
        raw.close()


def _forget(eng: sa.Engine) -> None:
    """The engine was disposed: close its spares (a forked child only drops its parent's)."""
    for pid, raw in _spares.pop(eng, []):
        if pid == os.getpid():
            raw.invalidate()
        else:
            _orphans.append(raw)


def _entry(row: Sequence[Any], dialect: str) -> Entry:
    """The entry of a row of GET, mapped by position (what ``Entry.from_mapping`` does, without
    building a mapping first)."""
    values = list(row)
    values[_STATUS] = Status(values[_STATUS])
    for at in _TIMES:
        values[at] = aware(values[at])
    if dialect != "postgresql":  # SQLite returns JSON as text
        for at in _JSON:
            if isinstance(values[at], str):
                values[at] = json.loads(values[at])
    return Entry(*values)


def _found_row(row: Sequence[Any]) -> Found:
    """The Found of a row of a "find" statement, mapped by position."""
    values = list(row)
    values[_FOUND_STATUS] = Status(values[_FOUND_STATUS])
    for at in _FOUND_TIMES:
        values[at] = aware(values[at])
    return Found(*values)
