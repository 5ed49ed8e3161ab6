"""Parked and failed entries made pending once due: the waker's two reads (when the next is due,
how many wait pending) and its one write (:func:`wake_due`, also the sweep's), and an operator's
"restart now" of a failed entry (:func:`hurry`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from tracking.exceptions import NotFound
from tracking.models import Entry, Status, Woken, aware, trackers
from tracking.registry.core import _read, _write, db_now
from tracking.registry.rows import _entries_by_id, _events, _one
from tracking.registry.transitions import RULES, Op, guard, new_task_id
from tracking.settings import Settings


def next_wake(settings: Settings) -> float | None:
    """Seconds until the earliest parked or failed entry is due (negative: overdue); None if none.

    One indexed probe per status (the ``(status, due_at)`` index gives each minimum at once; a
    minimum over both statuses in one condition made PostgreSQL scan the whole table: 226 ms at
    1,000,000 entries)."""
    soonest = [
        sa.select(sa.func.min(trackers.c.due_at)).where(trackers.c.status == status.value).scalar_subquery()
        for status in sorted(RULES[Op.WAKE].sources)
    ]

    def query(conn: sa.Connection) -> float | None:
        *dues, now = (aware(v) for v in conn.execute(sa.select(*soonest, db_now())).one())
        found = [due for due in dues if due is not None]
        return None if not found or now is None else (min(found) - now).total_seconds()

    return _read(settings, query)


def pending(settings: Settings, at_most: int) -> int:
    """How many entries are pending (woken or started, not yet claimed), counted up to ``at_most``
    (a read of at most that many index entries, whatever the registry's size)."""
    some = sa.select(trackers.c.id).where(trackers.c.status == Status.PENDING.value).limit(at_most)
    stmt = sa.select(sa.func.count()).select_from(some.subquery())
    return _read(settings, lambda conn: int(conn.execute(stmt).scalar_one()))


def wake_due(
    settings: Settings, limit: int = 500, overdue: float = 0.0, *, parked: bool = True
) -> list[Woken]:
    """Make due parked and failed entries pending; returns them to publish, earliest tick first.
    A parked entry gets a new epoch and task ID (a failed one got them when it failed); its
    wake-up records no event (it wakes at every tick), a failed one's restart does. ``overdue``:
    only entries due at least that many seconds ago (a sweep wakes what no worker's waker woke).
    ``parked=False``: the failed entries' restarts alone.

    Atomicity: one transaction; on PostgreSQL the due rows are locked with SKIP LOCKED, so
    concurrent wakers split the work, and each status's rows are woken by one statement that
    selects, locks and updates them (SQLite's write transaction excludes other wakers), every
    update conditional on the status, so no entry is woken twice.
    """
    with _write(settings) as conn:
        failed = _wake(conn, settings, Status.FAILED, limit, overdue)  # restarts first: they are few
        ticks = _wake(conn, settings, Status.PARKED, limit - len(failed), overdue) if parked else []
        _events(conn, [(r, "restarting", None) for r in failed])
    return failed + sorted(ticks, key=lambda r: r.tick_at or _NEVER)


def _wake(conn: sa.Connection, settings: Settings, status: Status, limit: int, overdue: float) -> list[Woken]:
    """Wake at most ``limit`` due entries of ``status``, in due order."""
    if limit <= 0:
        return []
    bump = status is Status.PARKED
    # One status at a time, in due order: the (status, due_at) index serves it (both statuses in
    # one condition made PostgreSQL scan and sort the whole table: 645 ms at 1,000,000).
    due = (
        sa.select(trackers.c.id, trackers.c.epoch)
        .where(*guard(Op.WAKE), trackers.c.status == status.value, trackers.c.due_at <= db_now(-overdue))
        .order_by(trackers.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    values: dict[str, Any] = {
        "status": Status.PENDING.value,
        "due_at": db_now(settings.start_grace_seconds),
        "republished": 0,
    }
    if conn.dialect.name == "postgresql":
        # Select, lock and wake in one statement (500 single-row updates were most of a tick's
        # cost at 1,000,000 entries); each task ID made by the database.
        chosen = due.cte("due")
        if bump:
            values.update(epoch=trackers.c.epoch + 1, task_id=sa.cast(sa.func.gen_random_uuid(), sa.String()))
        woken = conn.execute(
            trackers.update()
            .where(trackers.c.id == chosen.c.id, trackers.c.status == status.value)
            .values(values)
            .returning(*_WOKEN)
        )
        return [Woken.from_mapping(m) for m in woken.mappings()]
    rows = conn.execute(due).all()
    if not rows:
        return []
    if bump:
        values.update(epoch=trackers.c.epoch + 1, task_id=sa.bindparam("b_task"))
    conn.execute(
        trackers.update()
        .where(trackers.c.id == sa.bindparam("b_id"), trackers.c.epoch == sa.bindparam("b_epoch"))
        .where(trackers.c.status == status.value)
        .values(values),
        [{"b_id": r.id, "b_epoch": r.epoch, "b_task": new_task_id()} for r in rows],
    )
    read = sa.select(*_WOKEN).where(trackers.c.id.in_([r.id for r in rows]), trackers.c.status == "pending")
    return [Woken.from_mapping(m) for m in conn.execute(read).mappings()]


#: what a woken entry's row says of it (:class:`Woken`)
_WOKEN = (
    trackers.c.id,
    trackers.c.kind,
    trackers.c.transaction_id,
    trackers.c.epoch,
    trackers.c.task_id,
    trackers.c.tick_at,
    (trackers.c.last_message_id > trackers.c.handled_message_id).label("mail_waiting"),
    trackers.c.state.is_not(None).label("initialised"),
)
_NEVER = datetime.min.replace(tzinfo=UTC)


def hurry(settings: Settings, kind: str, transaction_id: str) -> Entry | None:
    """An operator's "restart now" of a failed entry: pending at once, the rest of its backoff
    skipped. Returns the row to publish, or None when the entry is not failed (any more). Raises
    NotFound when nothing is registered.

    Atomicity: one transaction; the update is conditional on the status and epoch read, so a
    restart that a waker or a sweep made meanwhile is not made twice.
    """
    with _write(settings) as conn:
        row = _one(conn, trackers.c.kind == kind, trackers.c.transaction_id == transaction_id, lock=True)
        if row is None:
            raise NotFound(f"no {kind} tracker is registered for {transaction_id!r}")
        changed = conn.execute(
            trackers.update()
            .where(trackers.c.id == row.id, *guard(Op.HURRY, epoch=row.epoch))
            .values(status=Status.PENDING.value, due_at=db_now(settings.start_grace_seconds), republished=0)
        ).rowcount
        if not changed:
            return None
        new = _entries_by_id(conn, [row.id])[0]
        _events(conn, [(new, "restarting", "restart now (an operator)")])
        return new
