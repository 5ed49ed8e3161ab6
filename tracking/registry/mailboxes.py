"""Mailboxes: casts and calls queued for a tracker, their replies, and wake-up notifications.

On PostgreSQL each operation on a call's path is one statement in autocommit, one round trip: the
message queued with its entry's wake-up, the message handled with its reply (or a cast's removal),
the checkpoint and the reply's notification, and the reply taken. On SQLite (no data-modifying
WITH, no round trips to save) each is one transaction of several statements.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from tracking.exceptions import Fenced, NotFound
from tracking.models import Message, MessageStatus, MessageType, Reply, Status, messages, trackers
from tracking.registry.core import _read, _translated, _write, db_now, engine
from tracking.registry.rows import WAKE_CHANNEL, _one, _wake
from tracking.registry.transitions import Op, guard
from tracking.settings import Settings

T = TypeVar("T")

#: the channel a call's answer is announced on (PostgreSQL), as ``"<message id>:reply"``
REPLY_CHANNEL = "tracking_reply"


def _postgres(settings: Settings) -> bool:
    return engine(settings).dialect.name == "postgresql"


def _autocommit(settings: Settings, run: Callable[[sa.Connection], T]) -> T:
    """One statement on PostgreSQL in autocommit: its own transaction, no BEGIN or COMMIT round
    trips. Never retried here: a write whose answer was lost may have committed."""
    with _translated(settings), engine(settings).connect() as conn:
        return run(conn.execution_options(isolation_level="AUTOCOMMIT"))


# -- mailboxes -----------------------------------------------------------------------------------

#: enqueue's statement on PostgreSQL: the entry locked, the message inserted with an ID taken after
#: the lock, the entry's last message (and a parked entry's due time) set, and its wake-up sent
_entry = (
    sa.select(trackers.c.id, trackers.c.kind, trackers.c.transaction_id, trackers.c.status)
    .where(
        trackers.c.kind == sa.bindparam("to_kind"),
        trackers.c.transaction_id == sa.bindparam("to_id"),
        trackers.c.status != Status.DEAD.value,
    )
    .with_for_update()
    .cte("entry")
)
_parked = _entry.c.status == Status.PARKED.value
_queued = (
    messages.insert()
    .from_select(
        ["kind", "transaction_id", "type", "status", "body", "created_at"],
        sa.select(
            _entry.c.kind,
            _entry.c.transaction_id,
            sa.bindparam("message_type", type_=messages.c.type.type),
            sa.literal(MessageStatus.QUEUED.value),
            sa.bindparam("message_body", type_=messages.c.body.type),
            db_now(),
        ),
    )
    .returning(messages.c.id)
    .cte("queued")
)
_noted = (
    trackers.update()
    .where(trackers.c.id == _entry.c.id)
    .values(
        last_message_id=sa.select(_queued.c.id).scalar_subquery(),
        due_at=sa.case((_parked, db_now()), else_=trackers.c.due_at),
    )
    .returning(trackers.c.id)
    .cte("noted")
)
ENQUEUE = (
    sa.select(
        _queued.c.id,
        sa.func.pg_notify(
            WAKE_CHANNEL,
            sa.cast(_entry.c.id, sa.String) + sa.case((_parked, ":wake"), else_=":mail"),
        ),
    )
    .select_from(_queued.join(_entry, sa.true()))
    .add_cte(_noted)
)


def enqueue(settings: Settings, kind: str, transaction_id: str, type_: MessageType, body: Any) -> int:
    """Queue a cast or call for a registered, not dead tracker; returns the message ID.

    Atomicity: one transaction that locks the entry first, so that the messages of one tracker get
    their IDs in the order they commit (the mailbox is read in ID order and never skips one). On
    PostgreSQL one statement (``ENQUEUE``), whose message ID is drawn after the entry's lock.
    """
    if _postgres(settings):
        # (parameters named apart from the columns: an UPDATE would take those as its values)
        params = {
            "to_kind": kind,
            "to_id": transaction_id,
            "message_type": MessageType(type_).value,
            "message_body": body,
        }
        found = _autocommit(settings, lambda conn: conn.execute(ENQUEUE, params).first())
        if found is None:
            raise NotFound(f"no live {kind} tracker for {transaction_id!r}")
        return int(found[0])
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


#: mailbox's statement, built once
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
_taken = (
    messages.delete()
    .where(messages.c.id == sa.bindparam("message_id"), messages.c.status != MessageStatus.QUEUED.value)
    .returning(messages.c.status, messages.c.reply, messages.c.error)
    .cte("taken")
)
_seen = messages.alias("seen")
TAKE_REPLY = (
    sa.select(
        sa.func.coalesce(_taken.c.status, _seen.c.status).label("status"),
        _taken.c.reply,
        _taken.c.error,
        sa.func.set_config("synchronous_commit", "off", sa.true()),
    )
    .select_from(_seen.outerjoin(_taken, sa.true()))
    .where(_seen.c.id == sa.bindparam("message_id"))
)


def take_reply(settings: Settings, message_id: int) -> Reply | None:
    """Where a call stands: its answer once it has one (removing it), else a reply whose status is
    queued; None if the message is gone (the tracker left the registry, or the call was
    withdrawn). On PostgreSQL one statement; on SQLite a read, then the removal once answered (a
    caller waiting reads without taking the write lock)."""
    if _postgres(settings):
        row = _autocommit(
            settings, lambda conn: conn.execute(TAKE_REPLY, {"message_id": message_id}).mappings().first()
        )
        return None if row is None else Reply.from_mapping(row)
    waiting = sa.select(messages.c.status).where(messages.c.id == message_id)
    status = _read(settings, lambda conn: conn.execute(waiting).scalar_one_or_none())
    if status is None:
        return None
    if status == MessageStatus.QUEUED:
        return Reply(MessageStatus.QUEUED, None, None)
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
        conn.execute(messages.delete().where(messages.c.id == message_id))
        return Reply.from_mapping(row)


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
