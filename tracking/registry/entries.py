"""Registering, reading and listing entries: start (on the registry's own connection or the
application's), get, select, count, history."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from tracking.exceptions import Fenced
from tracking.models import Entry, Status, trackers
from tracking.policy import RestartPolicy
from tracking.registry import lookups, startbatches, starts
from tracking.registry.core import _translated, _write, db_now
from tracking.registry.rows import _event, _forget_mail, _one
from tracking.registry.transitions import Op, fresh_incarnation, guard, new_task_id
from tracking.settings import Settings

# -- start, lookup, list -------------------------------------------------------------------------


def start(
    settings: Settings, kind: str, transaction_id: str, args: dict[str, Any], policy: RestartPolicy
) -> tuple[Entry, bool]:
    """Register a tracker, or return the one registered. ``(row, created)``.

    Atomicity: one transaction (:func:`start_on` says what it guarantees)."""
    with _write(settings) as conn:
        return _start(settings, conn, kind, transaction_id, args, policy)


def start_on(
    settings: Settings,
    conn: sa.Connection,
    kind: str,
    transaction_id: str,
    args: dict[str, Any],
    policy: RestartPolicy,
) -> tuple[Entry, bool]:
    """:func:`start` on the application's own connection, inside its open transaction (the
    registry lives in the application's database): the entry commits or rolls back with the
    application's writes. Nothing here commits or rolls back; it begins only where SQLAlchemy's
    execute would (no transaction open yet: its autobegin).

    Atomicity: that of the caller's transaction. The insert relies on the unique (kind,
    transaction_id) key: two concurrent starts block on each other's uncommitted insert and
    exactly one creates the row; if that one rolls back, the other's insert goes through. A
    ``dead`` entry is started afresh (new epoch, args, no state, restarts reset) by an update
    conditional on it still being dead. A new life's epoch is above every epoch the ID had
    before (``transitions.first_epoch``): on PostgreSQL the entry and its ``started`` event are
    written in one statement, corrected by one or two more in the rare races its snapshot may have
    missed (:mod:`.recording` says which and why; it holds at READ COMMITTED, PostgreSQL's default, and
    SERIALIZABLE, not at REPEATABLE READ, whose one snapshot the correction would read again).
    """
    with _on(settings, conn) as on:
        return _start(settings, on, kind, transaction_id, args, policy)


def start_many(
    settings: Settings,
    kind: str,
    transaction_ids: Sequence[str],
    args: dict[str, Any],
    policy: RestartPolicy,
    conn: sa.Connection | None = None,
) -> dict[str, tuple[Entry, bool]]:
    """Register many trackers of one kind, or find those registered: ``{id: (row, created)}``.

    Atomicity: one transaction for the whole batch (on ``conn``, the application's, when given:
    then the caller's), so all are recorded or none. Each ID is started as :func:`start_on` says;
    the IDs are taken in sorted order, so two batches that share IDs wait for each other instead
    of deadlocking. A batch of new IDs is inserted in one statement with its events (on SQLite,
    its events in one more); one with IDs registered already goes ID by ID (on PostgreSQL the
    batch insert is undone first, to a savepoint, so that every lock is still taken in sorted
    order).
    """
    wanted = sorted(set(transaction_ids))
    with _on(settings, conn) as on:
        if not wanted:
            return {}
        found = _inserted(settings, on, kind, wanted, args, policy)
        created = {row.transaction_id: (row, True) for row in found}
        return {t: created.get(t) or _start(settings, on, kind, t, args, policy) for t in wanted}


def _inserted(
    settings: Settings,
    conn: sa.Connection,
    kind: str,
    wanted: list[str],
    args: dict[str, Any],
    policy: RestartPolicy,
) -> list[Entry]:
    """The entries of ``wanted`` inserted by one batch insert, their starts recorded; on
    PostgreSQL none unless all were new (see :func:`start_many`)."""
    as_json = policy.to_json()
    grace = settings.start_grace_seconds
    if conn.dialect.name != "postgresql":
        return startbatches.run_start_batch(conn, grace, kind, wanted, args, as_json)
    task_ids = [new_task_id() for _ in wanted]
    batch = {**_start_params(kind, "", args, as_json), "ts": wanted, "task_ids": task_ids}
    nested = conn.begin_nested()
    try:
        found = list(conn.execute(starts.statement(conn.dialect, "start batch", grace), batch).mappings())
    except BaseException:
        if nested.is_active:
            nested.rollback()
        raise
    if len(found) < len(wanted):
        nested.rollback()
        return []
    nested.commit()
    return _recorded(conn, [Entry.from_mapping(m) for m in found], [tuple(m.values())[-3:] for m in found])


@contextlib.contextmanager
def _on(settings: Settings, conn: sa.Connection | None) -> Iterator[sa.Connection]:
    """The caller's open transaction (``conn``: nothing here begins, commits or rolls it back),
    or else one of the registry's own, committed on success; driver errors translated."""
    if conn is None:
        with _write(settings) as own:
            yield own
    else:
        with _translated(settings):
            yield conn


def get_many(settings: Settings, kind: str, transaction_ids: Sequence[str]) -> list[Entry]:
    """The entries of ``kind`` for these transaction IDs, whatever their status (one query a
    thousand IDs, by the registry's key: :mod:`.lookups`)."""
    return lookups.get_many(settings, kind, transaction_ids)


def _start_params(kind: str, transaction_id: str, args: dict[str, Any], policy: Any) -> dict[str, Any]:
    """The values ``starts``' insert binds for one new entry (``policy`` as JSON)."""
    return {
        "k": kind,
        "t": transaction_id,
        "task_id": new_task_id(),
        "args": args,
        "policy": policy,
        "restart_times": [],
    }


def _start(
    settings: Settings,
    conn: sa.Connection,
    kind: str,
    transaction_id: str,
    args: dict[str, Any],
    policy: RestartPolicy,
) -> tuple[Entry, bool]:
    params = _start_params(kind, transaction_id, args, policy.to_json())
    postgres = conn.dialect.name == "postgresql"
    grace = settings.start_grace_seconds
    key: tuple[Any, ...] = ()
    while True:
        if postgres:
            inserted = starts.run_start(conn, grace, params)
            if inserted is not None:
                return _recorded(conn, [starts.new_entry(params, inserted)], [inserted[-3:]])[0], True
        else:
            found = conn.execute(starts.statement(conn.dialect, "insert", grace), params).mappings().first()
            if found is not None:
                return _started(conn, [Entry.from_mapping(found)])[0], True
        key = key or (trackers.c.kind == kind, trackers.c.transaction_id == transaction_id)
        row = _one(conn, *key, lock=True)
        if row is not None:
            break
        # The entry it conflicted with left between the two statements: insert again.
    if row.status is not Status.DEAD:
        return row, False
    return _started_afresh(settings, conn, row, key, args, policy), True


def _recorded(conn: sa.Connection, rows: list[Entry], checks: list[Sequence[Any]]) -> list[Entry]:
    """PostgreSQL: the entries ``starts``' "start" statements inserted and recorded (``rows``,
    and for each ``(started_id, seen, floor_moved)``), each corrected where its epoch may come from
    a stale snapshot (see :mod:`.starts`): its ``started`` event deleted, its epoch raised to
    ``first_epoch`` as of now if below it, and its start recorded again, under that epoch."""
    suspect = [
        (row, started)
        for row, (started, seen, floor_moved) in zip(rows, checks, strict=True)
        if seen or floor_moved or started is None
    ]
    if not suspect:
        return rows
    written = [started for _, started in suspect if started is not None]
    if written:
        conn.execute(starts.statement(conn.dialect, "unrecorded"), {"ids": written})
    if len(suspect) == 1:
        recorded = conn.execute(starts.statement(conn.dialect, "recorded one"), {"row_id": suspect[0][0].id})
    else:
        ids = [row.id for row, _ in suspect]
        recorded = conn.execute(starts.statement(conn.dialect, "recorded"), {"ids": ids})
    epochs: dict[str, int] = {t: epoch for t, epoch in recorded}
    return [dataclasses.replace(row, epoch=epochs.get(row.transaction_id, row.epoch)) for row in rows]


def _started(conn: sa.Connection, inserted: list[Entry]) -> list[Entry]:
    """SQLite: the rows ``start`` just inserted, their starts recorded as events in one statement
    (the write lock the transaction holds excludes PostgreSQL's races)."""
    if inserted:
        started = [{"k": row.kind, "t": row.transaction_id, "epoch": row.epoch} for row in inserted]
        conn.execute(starts.statement(conn.dialect, "started"), started)
    return inserted


def _started_afresh(
    settings: Settings,
    conn: sa.Connection,
    row: Entry,
    key: tuple[Any, ...],
    args: dict[str, Any],
    policy: RestartPolicy,
) -> Entry:
    """Start a ``dead`` entry, read under a lock in this transaction, as a new life."""
    fresh = {
        **fresh_incarnation(settings),
        "args": args,
        "state": None,
        "policy": policy.to_json(),
        "restarts": 0,
        "restart_times": [],
        "backoff_step": 0,
        "last_error": None,
        "started_at": db_now(),
        "checkpoint_at": None,
    }
    result = conn.execute(
        trackers.update()
        .where(trackers.c.id == row.id, trackers.c.epoch == row.epoch, *guard(Op.START))
        .values(fresh)
    )
    if result.rowcount != 1:  # pragma: no cover - the write lock makes this unreachable
        raise Fenced("the dead entry changed while it was being started afresh")
    _forget_mail(conn, row)
    afresh = _one(conn, *key)
    assert afresh is not None
    _event(conn, afresh, "started", "started afresh after dead")
    return afresh


def get(settings: Settings, kind: str, transaction_id: str) -> Entry | None:
    """The registry entry for (kind, transaction_id), whatever its status, or None (one read by
    the registry's key, off the general query path: :mod:`.lookups`)."""
    return lookups.get(settings, kind, transaction_id)
