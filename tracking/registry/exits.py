"""Writing planned exits: an entry deregistered, dead, or restarted under a new epoch (at once or
after its backoff), for one entry or a batch of them in a few statements.

What each exit does is planned by :func:`tracking.registry.transitions.plan_exit`; here it is
written, conditional on the entry as it was read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from tracking.exceptions import Fenced
from tracking.models import Entry, Status, trackers
from tracking.policy import Action
from tracking.registry.core import db_now
from tracking.registry.rows import _entries_by_id, _event, _events, _forget_mail
from tracking.registry.transitions import Exit, fresh_incarnation, new_task_id
from tracking.settings import Settings


def apply_exits(settings: Settings, conn: sa.Connection, exits: Sequence[Exit]) -> list[Entry | None]:
    """Write planned exits, in a few statements whatever their number; returns each new row (a
    restart) or None (deregistered, dead).

    Each entry must have been read under a lock in this transaction; every write is conditional
    on the epoch and status read, and a mismatch raises Fenced (someone else moved it on).
    """
    if not exits:
        return []
    recorded = [(ex.row, event, detail) for ex in exits for event, detail in ex.events]
    written = 0
    gone = [ex.row for ex in exits if ex.decision.action is Action.DEREGISTER]
    for r in gone:
        written += conn.execute(trackers.delete().where(*_as_read(r))).rowcount
        _forget_mail(conn, r)
    dead = [ex for ex in exits if ex.decision.action is Action.DEAD]
    if dead:
        written += _update_each(
            conn,
            {"status": Status.DEAD.value, "worker_id": None, "due_at": None, "stop_reason": None},
            [{**_read_params(ex.row), "v_last_error": ex.last_error} for ex in dead],
        )
        for ex in dead:  # nobody will handle it: a waiting caller sees NotFound
            _forget_mail(conn, ex.row)
    restarts = [ex for ex in exits if ex.decision.action is Action.RESTART]
    for delay in sorted({ex.decision.delay for ex in restarts}):
        group = [ex for ex in restarts if ex.decision.delay == delay]
        shared = {**fresh_incarnation(settings), "restarts": trackers.c.restarts + 1}
        shared.pop("task_id")
        if delay > 0:
            shared.update(status=Status.FAILED.value, due_at=db_now(delay))
        written += _update_each(
            conn,
            shared,
            [
                {
                    **_read_params(ex.row),
                    "v_task_id": new_task_id(),
                    "v_restart_times": list(ex.decision.restart_times),
                    "v_backoff_step": ex.decision.backoff_step,
                    "v_last_error": ex.last_error,
                }
                for ex in group
            ],
        )
    if written != len(exits):
        raise Fenced("an entry changed while its exit was being recorded")
    new = {r.id: r for r in _entries_by_id(conn, [ex.row.id for ex in restarts])}
    for ex in restarts:
        delay = ex.decision.delay
        recorded.append(
            (
                new[ex.row.id],
                "restarting" if delay == 0 else "backoff",
                None if delay == 0 else f"restart in {delay:g} s",
            )
        )
    _events(conn, recorded)
    return [new.get(ex.row.id) for ex in exits]


def _as_read(row: Entry) -> tuple[Any, ...]:
    return (trackers.c.id == row.id, trackers.c.epoch == row.epoch, trackers.c.status == row.status.value)


def _read_params(row: Entry) -> dict[str, Any]:
    return {"b_id": row.id, "b_epoch": row.epoch, "b_status": row.status.value}


def _update_each(conn: sa.Connection, shared: dict[str, Any], each: list[dict[str, Any]]) -> int:
    """One UPDATE run for every parameter set of ``each`` (``v_<column>``: its own values; ``shared``
    the same for all), each conditional on the entry's id, epoch and status as read. Returns how
    many rows it changed (the drivers tracking supports sum a batch's row counts)."""
    own = {
        key[2:]: sa.bindparam(key, type_=trackers.c[key[2:]].type) for key in each[0] if key.startswith("v_")
    }
    stmt = (
        trackers.update()
        .where(trackers.c.id == sa.bindparam("b_id"), trackers.c.epoch == sa.bindparam("b_epoch"))
        .where(trackers.c.status == sa.bindparam("b_status"))
        .values({**shared, **own})
    )
    result = conn.execute(stmt, each[0] if len(each) == 1 else each)
    assert conn.dialect.supports_sane_multi_rowcount or len(each) == 1
    return result.rowcount


def _deregister(conn: sa.Connection, row: Entry, event: str, detail: str | None) -> None:
    """Delete an entry read under a lock in this transaction, its mail, and record why."""
    if conn.execute(trackers.delete().where(*_as_read(row))).rowcount != 1:
        raise Fenced("the entry changed while it was being deregistered")
    _forget_mail(conn, row)
    _event(conn, row, event, detail)
