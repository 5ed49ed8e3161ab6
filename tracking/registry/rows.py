"""The statements and row helpers below every operation: an entry read with its lease (an
:class:`~tracking.models.Entry`), events, wake-ups and dropped mailboxes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tracking.exceptions import RegistryUnavailable
from tracking.models import Entry, aware, events, messages, trackers, workers
from tracking.registry.core import _translated, db_now, engine
from tracking.settings import Settings

T = TypeVar("T")

# -- entries and rows ------------------------------------------------------------------------------

_tracker_with_lease = sa.select(trackers, workers.c.heartbeat_at).select_from(
    trackers.outerjoin(workers, workers.c.id == trackers.c.worker_id)
)


def _one(conn: sa.Connection, *where: Any, lock: bool = False) -> Entry | None:
    """One entry with its lease. ``lock``: hold its row until the transaction ends (PostgreSQL
    ``FOR UPDATE``; SQLite's write transaction already excludes every other writer), so that a
    concurrent writer waits and then sees the new version instead of acting on a stale read."""
    stmt = _tracker_with_lease.where(*where)
    if lock:
        stmt = stmt.with_for_update(of=trackers)
    row = conn.execute(stmt).mappings().first()
    return Entry.from_mapping(row) if row is not None else None


def _entries(conn: sa.Connection, stmt: Any) -> list[Entry]:
    """The entries a statement selects (every column of ``tracking_trackers``, and the lease's
    ``heartbeat_at`` when it joins it)."""
    return [Entry.from_mapping(m) for m in conn.execute(stmt).mappings()]


def _postgres(settings: Settings) -> bool:
    return engine(settings).dialect.name == "postgresql"


def _autocommit(settings: Settings, run: Callable[[sa.Connection], T]) -> T:
    """One statement on PostgreSQL in autocommit: its own transaction, no BEGIN or COMMIT round
    trips. Never retried here: a write whose answer was lost may have committed."""
    with _translated(settings), engine(settings).connect() as conn:
        return run(conn.execution_options(isolation_level="AUTOCOMMIT"))


def _now(conn: sa.Connection) -> datetime:
    value = conn.execute(sa.select(db_now())).scalar_one()
    now = aware(value)
    assert now is not None
    return now


def _insert(conn: sa.Connection) -> Any:
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise RegistryUnavailable(f"unsupported registry database {name!r} (use PostgreSQL or SQLite)")


def _event(
    conn: sa.Connection, row: Entry, event: str, detail: str | None = None, epoch: int | None = None
) -> None:
    conn.execute(
        events.insert().values(
            kind=row.kind,
            transaction_id=row.transaction_id,
            epoch=row.epoch if epoch is None else epoch,
            at=db_now(),
            event=event,
            worker=row.worker,
            detail=detail,
        )
    )


class _Named(Protocol):
    """What an event names of its entry (an :class:`Entry`, or a :class:`Woken` one)."""

    @property
    def kind(self) -> str: ...
    @property
    def transaction_id(self) -> str: ...
    @property
    def epoch(self) -> int: ...
    @property
    def worker(self) -> str | None: ...


def _events(conn: sa.Connection, entries: Sequence[tuple[_Named, str, str | None]]) -> None:
    """Record ``(row, event, detail)`` for many entries in one statement (one executemany)."""
    if entries:
        conn.execute(
            events.insert().values(at=db_now()),
            [
                {
                    "kind": row.kind,
                    "transaction_id": row.transaction_id,
                    "epoch": row.epoch,
                    "worker": row.worker,
                    "event": event,
                    "detail": detail,
                }
                for row, event, detail in entries
            ],
        )


def _entries_by_id(conn: sa.Connection, ids: Sequence[int]) -> list[Entry]:
    """The entries with these IDs, with their leases (read in chunks: IN lists stay short)."""
    found: list[Entry] = []
    for begin in range(0, len(ids), 1000):
        found += _entries(conn, _tracker_with_lease.where(trackers.c.id.in_(list(ids[begin : begin + 1000]))))
    return found


# -- wake-ups and mail ------------------------------------------------------------------------------


#: the PostgreSQL channel a cast, call or stop notifies, so that the tracker wakes at once
WAKE_CHANNEL = "tracking_wakeup"


def _wake(conn: sa.Connection, row_id: int, why: str) -> None:
    """Wake the tracker of entry ``row_id`` when this transaction commits (PostgreSQL NOTIFY;
    elsewhere its worker finds out on its next control poll). ``why``: "mail" or "stop" for a
    running tracker (its worker wakes it), "wake" for a parked one (every waker looks for it)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_notify(WAKE_CHANNEL, f"{row_id}:{why}")))


def _forget_mail(conn: sa.Connection, row: Entry) -> None:
    """Drop the mailbox of an entry that leaves the registry (a waiting caller sees NotFound)."""
    conn.execute(
        messages.delete().where(messages.c.kind == row.kind, messages.c.transaction_id == row.transaction_id)
    )
