"""The layer below the registry: its tables and what their rows are to the rest of ``tracking``.

``tables``  the tables as SQLAlchemy Core metadata (what Alembic migrates), and the values of their
            status columns: :class:`Status`, :class:`WorkerStatus`, :class:`MessageType`,
            :class:`MessageStatus`
``rows``    the typed, frozen rows the registry returns: :class:`Entry` (:class:`Found`), :class:`Event`,
            :class:`Message`, :class:`Reply`, :class:`Sweep`, :class:`WorkerInfo`
"""

from tracking.models.rows import Entry, Event, Found, Message, Reply, Sweep, Woken, WorkerInfo, aware
from tracking.models.tables import (
    NAMING_CONVENTION,
    BigId,
    Hostname,
    Json,
    MessageStatus,
    MessageType,
    Status,
    Timestamp,
    WorkerId,
    WorkerStatus,
    events,
    limits,
    messages,
    metadata,
    supervisors,
    token_floor,
    trackers,
    workers,
)

__all__ = [
    "NAMING_CONVENTION",
    "BigId",
    "Entry",
    "Found",
    "Event",
    "Hostname",
    "Json",
    "Message",
    "MessageStatus",
    "MessageType",
    "Reply",
    "Status",
    "Sweep",
    "Timestamp",
    "WorkerId",
    "WorkerInfo",
    "Woken",
    "WorkerStatus",
    "aware",
    "events",
    "limits",
    "messages",
    "metadata",
    "supervisors",
    "token_floor",
    "trackers",
    "workers",
]
