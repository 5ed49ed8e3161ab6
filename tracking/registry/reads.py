"""The registry's general reads: entries narrowed by kind, status and worker, counts, a tracker's
history, every kind's entry for an ID (an entry by its key: :mod:`.lookups`, off this path)."""

from __future__ import annotations

import sqlalchemy as sa

from tracking.models import Entry, Event, Status, events, trackers
from tracking.registry.core import _read
from tracking.registry.rows import _entries, _tracker_with_lease
from tracking.settings import Settings


def select(
    settings: Settings,
    kind: str | None = None,
    status: Status | str | None = None,
    worker: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[Entry]:
    """Registry entries, oldest first, narrowed by kind, status (a :class:`Status` or its value)
    and worker hostname; ``limit`` of them after the first ``offset``."""
    stmt = _tracker_with_lease.order_by(trackers.c.id)
    if kind is not None:
        stmt = stmt.where(trackers.c.kind == kind)
    if status is not None:
        stmt = stmt.where(trackers.c.status == Status(status).value)
    if worker is not None:
        stmt = stmt.where(trackers.c.worker == worker)
    if limit is not None:
        stmt = stmt.limit(limit)
    if offset:
        stmt = stmt.offset(offset)
    return _read(settings, lambda conn: _entries(conn, stmt))


def count(settings: Settings, kind: str | None = None, status: Status | str | None = None) -> int:
    stmt = sa.select(sa.func.count()).select_from(trackers)
    if kind is not None:
        stmt = stmt.where(trackers.c.kind == kind)
    if status is not None:
        stmt = stmt.where(trackers.c.status == Status(status).value)
    return _read(settings, lambda conn: int(conn.execute(stmt).scalar_one()))


def history(settings: Settings, kind: str, transaction_id: str, limit: int = 20) -> list[Event]:
    """The most recent events of a tracker, newest last."""
    stmt = (
        sa.select(events)
        .where(events.c.kind == kind, events.c.transaction_id == transaction_id)
        .order_by(events.c.id.desc())
        .limit(limit)
    )
    rows = _read(settings, lambda conn: [Event.from_mapping(m) for m in conn.execute(stmt).mappings()])
    return rows[::-1]


def entries_of(settings: Settings, transaction_id: str) -> list[Entry]:
    """Every kind's entry for a transaction ID (``tracking explain`` without ``--kind``).

    The unique key leads with the kind, so this reads the whole registry on databases that cannot
    skip-scan an index: an operator's query, not one for hot paths (pass the kind there).
    """
    stmt = _tracker_with_lease.where(trackers.c.transaction_id == transaction_id).order_by(trackers.c.kind)
    return _read(settings, lambda conn: _entries(conn, stmt))
