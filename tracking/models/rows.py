"""The rows the registry returns, typed and frozen: :class:`Entry` (a tracker's entry;
:class:`Found`, what ``lookup`` reads of one), :class:`Event` (its history), :class:`Message` (a
queued cast or call), :class:`Reply` (a call's answer) and
:class:`Sweep` (a supervisor's last sweep). Each is built from a row the registry read by its
``from_mapping``, the one place that maps that table's columns to fields.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import RowMapping

from tracking.models.tables import MessageStatus, MessageType, Status, WorkerStatus


def aware(value: datetime | str | None) -> datetime | None:
    """A timestamp as the database returned it, made timezone-aware (SQLite returns naive
    datetimes, or text when the value was computed in SQL)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _at(value: datetime | str) -> datetime:
    """A timestamp of a NOT NULL column, made timezone-aware."""
    at = aware(value)
    assert at is not None
    return at


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """A registry entry (a row of ``tracking_trackers``, its columns documented with the table in
    :mod:`tracking.models.tables`) as it was read: what the registry's operations on entries return."""

    id: int
    kind: str
    transaction_id: str
    status: Status
    #: the fencing token of the incarnation
    epoch: int
    task_id: str
    worker: str | None
    worker_id: str | None
    args: dict[str, Any]
    state: dict[str, Any] | None
    #: a RestartPolicy's JSON
    policy: dict[str, Any]
    restarts: int
    #: the ISO 8601 times of the restarts the restart intensity counts
    restart_times: list[str]
    backoff_step: int
    stop_reason: str | None
    last_error: str | None
    started_at: datetime
    claimed_at: datetime | None
    checkpoint_at: datetime | None
    due_at: datetime | None
    tick_at: datetime | None
    last_message_id: int
    handled_message_id: int
    republished: int
    #: the last renewal of the lease of the worker it runs under (None: no lease, or not read)
    heartbeat_at: datetime | None = None
    #: the database's time of the read (``claim`` returns it; None elsewhere)
    db_now: datetime | None = None

    @classmethod
    def from_mapping(cls, row: RowMapping) -> Entry:
        """The entry of a ``tracking_trackers`` row, with ``heartbeat_at`` and ``db_now`` if selected."""
        return cls(
            id=row["id"],
            kind=row["kind"],
            transaction_id=row["transaction_id"],
            status=Status(row["status"]),
            epoch=row["epoch"],
            task_id=row["task_id"],
            worker=row["worker"],
            worker_id=row["worker_id"],
            args=row["args"],
            state=row["state"],
            policy=row["policy"],
            restarts=row["restarts"],
            restart_times=row["restart_times"],
            backoff_step=row["backoff_step"],
            stop_reason=row["stop_reason"],
            last_error=row["last_error"],
            started_at=_at(row["started_at"]),
            claimed_at=aware(row["claimed_at"]),
            checkpoint_at=aware(row["checkpoint_at"]),
            due_at=aware(row["due_at"]),
            tick_at=aware(row["tick_at"]),
            last_message_id=row["last_message_id"],
            handled_message_id=row["handled_message_id"],
            republished=row["republished"],
            # ``in``, not ``get``: a row's get of a key it lacks costs ten times as much (a lookup
            # that fails into SQLAlchemy's key fallback), and most rows lack these two
            heartbeat_at=aware(row["heartbeat_at"]) if "heartbeat_at" in row else None,
            db_now=aware(row["db_now"]) if "db_now" in row else None,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Found:
    """What ``lookup`` reads of an entry: what a tracker's reference shows, not its state,
    arguments or policy (a state may be 64 KiB: a lookup neither fetches nor decodes it). Its
    fields are the first of :class:`Entry`'s, in the order ``registry.lookups`` selects them."""

    kind: str
    transaction_id: str
    status: Status
    epoch: int
    task_id: str
    worker: str | None
    restarts: int
    last_error: str | None
    started_at: datetime
    #: the last renewal of the lease of the worker it runs under (None: no lease)
    heartbeat_at: datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class Woken:
    """An entry just woken (``pending`` under ``epoch``), as its waker needs it to publish it: no
    state, arguments or policy read, let alone decoded (most of a waker's time when it read whole
    entries)."""

    id: int
    kind: str
    transaction_id: str
    epoch: int
    task_id: str
    #: the tick it woke for (None: a failed entry's restart)
    tick_at: datetime | None
    #: a message waits (it woke for mail, or got some since its tick came due)
    mail_waiting: bool
    #: its state was ever written (``init`` completed)
    initialised: bool
    #: always None (a woken entry runs under no worker); for the event a restart records
    worker: str | None = None

    @classmethod
    def from_mapping(cls, row: RowMapping) -> Woken:
        return cls(
            id=row["id"],
            kind=row["kind"],
            transaction_id=row["transaction_id"],
            epoch=row["epoch"],
            task_id=row["task_id"],
            tick_at=aware(row["tick_at"]),
            mail_waiting=bool(row["mail_waiting"]),
            initialised=bool(row["initialised"]),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One event of a tracker's history (a row of ``tracking_events``): ``event`` says what
    happened to incarnation ``epoch`` ("started", "running", "crashed", "restarting", ...)."""

    id: int
    kind: str
    transaction_id: str
    epoch: int
    at: datetime
    event: str
    worker: str | None
    detail: str | None

    @classmethod
    def from_mapping(cls, row: RowMapping) -> Event:
        return cls(
            id=row["id"],
            kind=row["kind"],
            transaction_id=row["transaction_id"],
            epoch=row["epoch"],
            at=_at(row["at"]),
            event=row["event"],
            worker=row["worker"],
            detail=row["detail"],
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """A queued message of a tracker's mailbox, as its incarnation reads it (the ``id``, ``type``
    and ``body`` of a ``tracking_messages`` row)."""

    id: int
    type: MessageType
    #: the message, a JSON value as loaded
    body: Any

    @classmethod
    def from_mapping(cls, row: RowMapping) -> Message:
        return cls(id=row["id"], type=MessageType(row["type"]), body=row["body"])


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """Where a call stands, as its caller reads it: queued while it waits, else its reply (a JSON
    value as loaded) or the error its handler crashed with."""

    status: MessageStatus
    reply: Any
    error: str | None

    @classmethod
    def from_mapping(cls, row: RowMapping) -> Reply:
        return cls(status=MessageStatus(row["status"]), reply=row["reply"], error=row["error"])


@dataclasses.dataclass(frozen=True, slots=True)
class Sweep:
    """A supervisor's last sweep (a row of ``tracking_supervisors``): when, and what it counted."""

    name: str
    last_sweep_at: datetime
    last_counts: dict[str, int]

    @classmethod
    def from_mapping(cls, row: RowMapping) -> Sweep:
        return cls(name=row["name"], last_sweep_at=_at(row["last_sweep_at"]), last_counts=row["last_counts"])


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker process with a row in ``tracking_workers``, as an operator sees it."""

    id: str
    hostname: str
    pid: int
    status: WorkerStatus
    started_at: datetime
    heartbeat_at: datetime
    #: seconds since its lease was last renewed, by the database clock
    lease_age: float
    #: the entries it runs now
    running: int

    @classmethod
    def from_mapping(cls, row: RowMapping, now: datetime) -> WorkerInfo:
        heartbeat_at = _at(row["heartbeat_at"])
        return cls(
            id=row["id"],
            hostname=row["hostname"],
            pid=row["pid"],
            status=WorkerStatus(row["status"]),
            started_at=_at(row["started_at"]),
            heartbeat_at=heartbeat_at,
            lease_age=(now - heartbeat_at).total_seconds(),
            running=int(row["running"]),
        )
