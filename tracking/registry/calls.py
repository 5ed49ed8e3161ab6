"""The caller's side of a mailbox: a cast or call queued for a tracker (:func:`enqueue`), a call's
answer taken (:func:`take_reply`), a call nobody answered in time taken back (:func:`withdraw`).
The tracker's side (its mailbox read, a message handled and answered) is :mod:`.mailboxes`.

On PostgreSQL each is one statement in autocommit, one round trip; on SQLite one transaction.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tracking.exceptions import NotFound
from tracking.models import MessageStatus, MessageType, Reply, Status, messages, trackers
from tracking.registry.core import _read, _write, db_now
from tracking.registry.rows import WAKE_CHANNEL, _autocommit, _one, _postgres, _wake
from tracking.settings import Settings

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
