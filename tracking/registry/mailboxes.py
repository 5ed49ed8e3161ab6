"""Mailboxes, the tracker's side: its casts and calls read, each handled and answered, and the stop
and mail signals of a worker's trackers (the caller's side: :mod:`.calls`).

On PostgreSQL each operation on a call's path is one statement in autocommit, one round trip: the
message queued with its entry's wake-up, the message handled with its reply (or a cast's removal),
the checkpoint and the reply's notification, and the reply taken. On SQLite (no data-modifying
WITH, no round trips to save) each is one transaction of several statements.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa

from tracking.exceptions import Fenced
from tracking.models import Message, MessageStatus, MessageType, Status, messages, trackers
from tracking.registry.core import _read, _write, db_now
from tracking.registry.rows import _autocommit, _postgres
from tracking.registry.transitions import Op, guard
from tracking.settings import Settings

#: the channel a call's answer is announced on (PostgreSQL), as ``"<message id>:reply"``
REPLY_CHANNEL = "tracking_reply"


# -- the tracker's side ----------------------------------------------------------------------------

MAILBOX = (
    sa.select(messages.c.id, messages.c.type, messages.c.body)
    .where(messages.c.kind == sa.bindparam("to_kind"), messages.c.transaction_id == sa.bindparam("to_id"))
    .where(messages.c.id > sa.bindparam("after"), messages.c.status == MessageStatus.QUEUED.value)
    .order_by(messages.c.id)
    .limit(sa.bindparam("limit"))
)


def mailbox(
    settings: Settings, kind: str, transaction_id: str, after: int, limit: int = 100
) -> list[Message]:
    """Queued messages of a tracker after message ``after``, oldest first."""
    params = {"to_kind": kind, "to_id": transaction_id, "after": after, "limit": limit}
    return _read(
        settings, lambda conn: [Message.from_mapping(m) for m in conn.execute(MAILBOX, params).mappings()]
    )


@functools.cache
def _marking(checkpoint: bool) -> sa.Update:
    """handled's write to the entry: the handled mark (and the new state, with ``checkpoint``),
    fenced by epoch, in order. Built once: its parameters are named apart from the columns (an
    UPDATE would take those as its values)."""
    message_id = sa.bindparam("h_message", type_=messages.c.id.type)
    values: dict[str, Any] = {"handled_message_id": message_id}
    if checkpoint:
        values.update(state=sa.bindparam("h_state", type_=trackers.c.state.type), checkpoint_at=db_now())
    return (
        trackers.update()
        .where(trackers.c.id == sa.bindparam("h_row"), *guard(Op.CHECKPOINT, epoch=sa.bindparam("h_epoch")))
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


#: a call's answer, and the message handled
_ANSWER = {
    "status": sa.bindparam("h_status", type_=messages.c.status.type),
    "reply": sa.bindparam("h_reply", type_=messages.c.reply.type),
    "error": sa.bindparam("h_error", type_=messages.c.error.type),
}
_MESSAGE = messages.c.id == sa.bindparam("h_message", type_=messages.c.id.type)


@functools.cache
def _handling(checkpoint: bool) -> sa.Select[tuple[int, Any]]:
    """handled's statement on PostgreSQL: the entry marked (see ``_marking``), and only if it was,
    a call answered and its answer announced, or a cast removed; returns how many entries it
    marked (1, or 0 if fenced or out of order)."""
    marked = _marking(checkpoint).returning(trackers.c.id).cte("marked")
    held = sa.exists(sa.select(marked.c.id))
    call, cast = messages.c.type == MessageType.CALL.value, messages.c.type == MessageType.CAST.value
    answered = messages.update().where(_MESSAGE, call, held).values(_ANSWER).returning(messages.c.id)
    answers = answered.cte("answered")
    dropped = messages.delete().where(_MESSAGE, cast, held).returning(messages.c.id).cte("dropped")
    announced = sa.func.pg_notify(REPLY_CHANNEL, sa.cast(answers.c.id, sa.String) + ":reply")
    return sa.select(
        sa.select(sa.func.count()).select_from(marked).scalar_subquery(),
        sa.select(announced).scalar_subquery(),
    ).add_cte(dropped)


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
    crashed changes no state), the handled mark, and the reply or error of a call (announced to
    its caller on PostgreSQL), or the removal of a cast. Atomicity: one transaction, fenced by
    epoch, so each message is handled exactly once; on PostgreSQL one statement.
    """
    status = MessageStatus.FAILED if error is not None else MessageStatus.REPLIED
    params = {
        "h_row": row_id,
        "h_epoch": epoch,
        "h_message": message_id,
        "h_state": state,
        "h_status": status.value,
        "h_reply": reply,
        "h_error": error,
    }
    checkpoint = state is not None
    if _postgres(settings):

        def record(conn: sa.Connection) -> None:
            marked = conn.execute(_handling(checkpoint), params).scalar_one()
            if marked != 1 and not _handled_already(conn, row_id, epoch, message_id):
                raise Fenced()

        return _autocommit(settings, record)
    with _write(settings) as conn:
        if conn.execute(_marking(checkpoint), params).rowcount != 1:
            if _handled_already(conn, row_id, epoch, message_id):
                return  # a retry of this write, whose commit landed but whose answer was lost
            raise Fenced()
        kind = conn.execute(sa.select(messages.c.type).where(_MESSAGE), params).scalar_one_or_none()
        if kind == MessageType.CALL:
            conn.execute(messages.update().where(_MESSAGE).values(_ANSWER), params)
        else:
            conn.execute(messages.delete().where(_MESSAGE), params)
        return None


def _handled_already(conn: sa.Connection, row_id: int, epoch: int, message_id: int) -> bool:
    """Incarnation ``epoch`` still holds the entry and its last handled message is this one (a
    retry of ``handled`` whose commit landed but whose answer was lost)."""
    mark = conn.execute(
        sa.select(trackers.c.handled_message_id).where(
            trackers.c.id == row_id, *guard(Op.CHECKPOINT, epoch=epoch)
        )
    ).scalar_one_or_none()
    return mark == message_id


#: take_reply's statement on PostgreSQL: the answered call removed and its answer returned, or the
#: status of one still queued. The removal is committed without waiting for the disk
#: (``synchronous_commit`` off for this transaction alone): a crash of the database may undo it,
#: which leaves an answered message nobody reads, removed with the mailbox when its tracker leaves
#: the registry; the answer itself was made durable by ``handled``.
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
