"""What a client hands out and publishes: a reference to an entry, the message that starts an
incarnation, and a publish that warns instead of failing (the entry is recorded; the supervisor
publishes it again)."""

from __future__ import annotations

import contextvars
import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from tracking import signals
from tracking.models import Entry, Found, Status
from tracking.redact import redact_url

log = logging.getLogger("tracking")


class Publishable(Protocol):
    """What the message that starts an incarnation names: an :class:`~tracking.models.Entry`, or a
    :class:`Publication` where there is no entry at hand."""

    @property
    def kind(self) -> str: ...
    @property
    def transaction_id(self) -> str: ...
    @property
    def epoch(self) -> int: ...
    @property
    def task_id(self) -> str: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Publication:
    """The message that starts incarnation ``epoch`` of a tracker, as its task received it (a
    worker passing on a message it will not claim)."""

    kind: str
    transaction_id: str
    epoch: int
    task_id: str


#: sends the message that starts incarnation ``epoch`` of a tracker
Publish = Callable[[Publishable], None]
#: sends the messages of many (``start_many``), in order, or messages a worker turns into them
#: (the Celery adapter's batch messages); raises at the first it cannot send
PublishMany = Callable[[Sequence[Publishable]], None]
P = TypeVar("P", bound=Publishable)

#: the (kind, transaction ID) whose incarnation runs in this thread (set by the worker), so that
#: a tracker calling itself is told at once instead of waiting for ever
running_here: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "tracking_running_here", default=None
)


@dataclasses.dataclass(frozen=True)
class TrackerRef:
    """A registry entry as it was read: which incarnation runs a transaction's tracker, and where."""

    kind: str
    transaction_id: str
    task_id: str
    worker: str | None
    status: Status
    restarts: int
    started_at: datetime
    heartbeat_at: datetime | None
    #: the fencing token of the incarnation (grows with every restart or handoff)
    epoch: int
    last_error: str | None = None
    already_started: bool = False
    #: True: started inside an application transaction whose registry lives in another database,
    #: so nothing is recorded until that transaction commits (``task_id`` is empty and ``epoch``
    #: 0 until then; ``lookup`` after the commit finds the entry)
    on_commit: bool = False

    @classmethod
    def from_row(cls, entry: Entry | Found, already_started: bool = False) -> TrackerRef:
        """The reference to a registry entry (its worker and lease only while it runs)."""
        running = entry.status is Status.RUNNING
        return cls(
            kind=entry.kind,
            transaction_id=entry.transaction_id,
            task_id=entry.task_id,
            worker=entry.worker if running else None,
            status=entry.status,
            restarts=entry.restarts,
            started_at=entry.started_at,
            heartbeat_at=entry.heartbeat_at if running else None,
            epoch=entry.epoch,
            last_error=entry.last_error,
            already_started=already_started,
        )

    @classmethod
    def waiting_for_commit(cls, kind: str, transaction_id: str) -> TrackerRef:
        """The reference a ``start`` returns while it waits for the application's commit."""
        return cls(
            kind=kind,
            transaction_id=transaction_id,
            task_id="",
            worker=None,
            status=Status.PENDING,
            restarts=0,
            started_at=datetime.now(UTC),
            heartbeat_at=None,
            epoch=0,
            on_commit=True,
        )


def publish_or_warn(publish: Callable[[P], None], row: P, what: str = "published") -> bool:
    """Publish ``row``; if the broker cannot take it, log why and return False. The entry is
    recorded already, so the supervisor publishes it again after the start grace."""
    try:
        publish(row)
        return True
    except Exception as exc:
        log.warning("%s %s not %s yet: %s", row.kind, row.transaction_id, what, redact_url(str(exc)))
        return False


def announce(publish: Callable[[Entry], None], row: Entry, ref: TrackerRef) -> None:
    """A new entry recorded: publish its message (or leave it to the supervisor when the broker
    cannot take it) and send ``tracker_started``."""
    publish_or_warn(publish, row)
    signals.tracker_started.send(row.kind, transaction_id=row.transaction_id, epoch=row.epoch, ref=ref)


def announce_many(
    publish: Publish, publish_many: PublishMany | None, rows: Sequence[Entry], refs: Sequence[TrackerRef]
) -> None:
    """New entries recorded: publish their messages, with ``publish_many`` when there is one and
    more than one message (else one ``publish`` each), and send ``tracker_started`` for each, here,
    whichever way they were published. What the broker cannot take is logged and left to the
    supervisor, as :func:`announce` does."""
    if publish_many is None or len(rows) < 2:
        for row, ref in zip(rows, refs, strict=True):
            announce(publish, row, ref)
        return
    try:
        publish_many(rows)
    except Exception as exc:
        log.warning("%d %s trackers not all published yet: %s", len(rows), rows[0].kind, redact_url(str(exc)))
    for row, ref in zip(rows, refs, strict=True):
        signals.tracker_started.send(row.kind, transaction_id=row.transaction_id, epoch=row.epoch, ref=ref)
