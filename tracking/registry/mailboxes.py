"""Mailboxes: casts and calls queued for a tracker, their replies, and wake-up notifications."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tracking.exceptions import Fenced, NotFound
from tracking.models import Message, MessageStatus, MessageType, Reply, Status, messages, trackers
from tracking.registry.core import _read, _write, db_now
from tracking.registry.rows import _one, _wake
from tracking.registry.transitions import Op, guard
from tracking.settings import Settings

# -- mailboxes -----------------------------------------------------------------------------------


def enqueue(settings: Settings, kind: str, transaction_id: str, type_: MessageType, body: Any) -> int:
    """Queue a cast or call for a registered, not dead tracker; returns the message ID.

    Atomicity: one transaction that locks the entry first, so that the messages of one tracker get
    their IDs in the order they commit (the mailbox is read in ID order and never skips one).
    """
    with _write(settings) as conn:
        row = _one(conn, trackers.c.kind == kind, trackers.c.transaction_id == transaction_id, lock=True)
        if row is None or row.status is Status.DEAD:
            raise NotFound(f"no live {kind} tracker for {transaction_id!r}")
        message_id = conn.execute(
            messages.insert()
            .values(
                kind=kind,
                transaction_id=transaction_id,
                type=MessageType(type_).value,
                status=MessageStatus.QUEUED.value,
                body=body,
                created_at=db_now(),
            )
            .returning(messages.c.id)
        ).scalar_one()
        values: dict[str, Any] = {"last_message_id": message_id}
        parked = row.status is Status.PARKED
        if parked:  # due now: the message is handled before its next tick
            values["due_at"] = db_now()
        conn.execute(trackers.update().where(trackers.c.id == row.id).values(values))
        _wake(conn, row.id, "wake" if parked else "mail")
        return int(message_id)


def mailbox(
    settings: Settings, kind: str, transaction_id: str, after: int, limit: int = 100
) -> list[Message]:
    """Queued messages of a tracker after message ``after``, oldest first."""
    stmt = (
        sa.select(messages.c.id, messages.c.type, messages.c.body)
        .where(messages.c.kind == kind, messages.c.transaction_id == transaction_id)
        .where(messages.c.id > after, messages.c.status == MessageStatus.QUEUED.value)
        .order_by(messages.c.id)
        .limit(limit)
    )
    return _read(settings, lambda conn: [Message.from_mapping(m) for m in conn.execute(stmt).mappings()])


def handled(
    settings: Settings,
    row_id: int,
    epoch: int,
    message_id: int,
    state: dict[str, Any] | None,
    *,
    reply: Any = None,
    error: str | None = None,
) -> None:
    """Record that incarnation ``epoch`` handled a message: its new state (None: a handler that
    crashed changes no state), the handled mark, and the reply or error of a call, or the removal of
    a cast. Atomicity: one transaction, fenced by epoch, so each message is handled exactly once.
    """
    values: dict[str, Any] = {"handled_message_id": message_id}
    if state is not None:
        values.update(state=state, checkpoint_at=db_now())
    with _write(settings) as conn:
        result = conn.execute(
            trackers.update()
            .where(trackers.c.id == row_id, *guard(Op.CHECKPOINT, epoch=epoch))
            .where(trackers.c.handled_message_id < message_id)
            .where(
                ~sa.exists().where(  # in order: no earlier queued message of this tracker skipped
                    messages.c.kind == trackers.c.kind,
                    messages.c.transaction_id == trackers.c.transaction_id,
                    messages.c.id > trackers.c.handled_message_id,
                    messages.c.id < message_id,
                    messages.c.status == MessageStatus.QUEUED.value,
                )
            )
            .values(values)
        )
        if result.rowcount != 1:
            if _handled_already(conn, row_id, epoch, message_id):
                return  # a retry of this write, whose commit landed but whose answer was lost
            raise Fenced()
        message = messages.c.id == message_id
        if conn.execute(sa.select(messages.c.type).where(message)).scalar_one_or_none() == MessageType.CALL:
            status = MessageStatus.FAILED if error is not None else MessageStatus.REPLIED
            conn.execute(
                messages.update().where(message).values(status=status.value, reply=reply, error=error)
            )
        else:
            conn.execute(messages.delete().where(message))


def _handled_already(conn: sa.Connection, row_id: int, epoch: int, message_id: int) -> bool:
    """Incarnation ``epoch`` still holds the entry and its last handled message is this one."""
    mark = conn.execute(
        sa.select(trackers.c.handled_message_id).where(
            trackers.c.id == row_id, *guard(Op.CHECKPOINT, epoch=epoch)
        )
    ).scalar_one_or_none()
    return mark == message_id


def take_reply(settings: Settings, message_id: int) -> Reply | None:
    """The answer to a call once it has one, deleting it; a reply whose status is queued while it
    waits; None if the message is gone (the tracker left the registry)."""
    with _write(settings) as conn:
        row = (
            conn.execute(
                sa.select(messages.c.status, messages.c.reply, messages.c.error).where(
                    messages.c.id == message_id
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        reply = Reply.from_mapping(row)
        if reply.status is not MessageStatus.QUEUED:
            conn.execute(messages.delete().where(messages.c.id == message_id))
        return reply


def reply_ready(settings: Settings, message_id: int) -> bool:
    """Whether a call has been answered or is gone (a cheap read for the caller's wait)."""
    stmt = sa.select(messages.c.status).where(messages.c.id == message_id)
    return _read(settings, lambda conn: conn.execute(stmt).scalar_one_or_none()) != MessageStatus.QUEUED


def withdraw(settings: Settings, message_id: int) -> bool:
    """Take back a call nobody answered in time; False if it was handled meanwhile."""
    with _write(settings) as conn:
        deleted = conn.execute(
            messages.delete().where(
                messages.c.id == message_id, messages.c.status == MessageStatus.QUEUED.value
            )
        ).rowcount
        return deleted == 1


def signals(settings: Settings, worker_id: str) -> list[tuple[int, int, str | None, bool]]:
    """``(row id, epoch, stop reason, has mail)`` of this worker process's trackers that were asked
    to stop or have messages waiting."""
    stmt = sa.select(
        trackers.c.id,
        trackers.c.epoch,
        trackers.c.stop_reason,
        (trackers.c.last_message_id > trackers.c.handled_message_id).label("mail"),
    ).where(
        trackers.c.worker_id == worker_id,
        trackers.c.status == Status.RUNNING.value,
        sa.or_(
            trackers.c.stop_reason.is_not(None), trackers.c.last_message_id > trackers.c.handled_message_id
        ),
    )
    return _read(
        settings, lambda conn: [(r.id, r.epoch, r.stop_reason, bool(r.mail)) for r in conn.execute(stmt)]
    )
