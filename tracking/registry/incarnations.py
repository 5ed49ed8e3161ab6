"""One incarnation's writes, each fenced by its epoch: claim, checkpoint, park, exits (a handoff and
a stop request: :mod:`.stops`).

Every precondition comes from :mod:`tracking.registry.transitions`; what an exit does to the entry
is written by :mod:`tracking.registry.exits`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from tracking.exceptions import Fenced
from tracking.models import Entry, Status, events, trackers
from tracking.policy import Decision, RestartPolicy
from tracking.registry.core import _translated, _write, db_now, engine
from tracking.registry.exits import _deregister, apply_exits
from tracking.registry.rows import (
    _event,
    _now,
    _one,
)
from tracking.registry.transitions import (
    Op,
    claimed,
    guard,
    plan_exit,
)
from tracking.settings import Settings


def _incarnation(op: Op, row_id: int, epoch: int) -> tuple[Any, ...]:
    return (trackers.c.id == row_id, *guard(op, epoch=epoch))


@contextlib.contextmanager
def _statement(settings: Settings) -> Iterator[sa.Connection]:
    """A connection for a write made by one statement: on PostgreSQL in autocommit, the statement
    its own transaction (no BEGIN and COMMIT round trips: a gevent worker filling with thousands
    of trackers makes one round trip per write, not three); elsewhere a write transaction."""
    with _translated(settings), engine(settings).connect() as conn:
        if conn.dialect.name == "postgresql":
            yield conn.execution_options(isolation_level="AUTOCOMMIT")
        else:
            with conn.begin():
                yield conn


def claim_statement(settings: Settings, *, event: bool) -> sa.Select[Any] | sa.Update:
    """The claim as SQL, built once per lease length (building it is most of a claim's Python
    time): with ``event`` (PostgreSQL) one statement that also records the ``running`` event of a
    new start (a data-modifying CTE: the update, and an insert that selects from its returned row);
    without, the update alone. Both return the claimed row and ``db_now``. Every condition of the
    claim (:func:`transitions.guard`: pending, the message's epoch, the claimer's lease live by the
    database clock) is in the update's WHERE. Parameters: ``c_kind``, ``c_transaction_id``,
    ``c_epoch``, ``c_worker``, ``c_worker_id``, ``c_policy`` (the policy's JSON form)."""
    key = (event, settings.lease_seconds)
    found = _claims.get(key)
    if found is not None:
        return found
    worker_id = sa.bindparam("c_worker_id", type_=trackers.c.worker_id.type)
    values = claimed(
        sa.bindparam("c_worker", type_=trackers.c.worker.type),
        worker_id,
        sa.bindparam("c_policy", type_=trackers.c.policy.type),
    )
    update = (
        trackers.update()
        .where(trackers.c.kind == sa.bindparam("c_kind"))
        .where(trackers.c.transaction_id == sa.bindparam("c_transaction_id"))
        .where(*guard(Op.CLAIM, epoch=sa.bindparam("c_epoch"), worker_id=worker_id, settings=settings))
        .values(values)
        .returning(*trackers.c, db_now().label("db_now"))
    )
    stmt: sa.Select[Any] | sa.Update = update
    if event:
        got = update.cte("claimed")
        # A tracker woken from its park (tick_at set) is not a new start: no event.
        running = (
            events.insert()
            .from_select(
                ["kind", "transaction_id", "epoch", "at", "event", "worker"],
                sa.select(got.c.kind, got.c.transaction_id, got.c.epoch, got.c.db_now)
                .add_columns(sa.literal("running"), got.c.worker)
                .where(got.c.tick_at.is_(None)),
            )
            .cte("running_event")
        )
        stmt = sa.select(got).add_cte(running)
    _claims[key] = stmt
    return stmt


#: the claim statements built so far, by (with its event, lease seconds)
_claims: dict[tuple[bool, float], sa.Select[Any] | sa.Update] = {}

#: a checkpoint: parameters ``c_id``, ``c_epoch``, ``c_state``
_CHECKPOINT = (
    trackers.update()
    .where(trackers.c.id == sa.bindparam("c_id"))
    .where(*guard(Op.CHECKPOINT, epoch=sa.bindparam("c_epoch")))
    .values(state=sa.bindparam("c_state", type_=trackers.c.state.type), checkpoint_at=db_now())
)


def claim(
    settings: Settings,
    kind: str,
    transaction_id: str,
    epoch: int,
    *,
    worker: str,
    worker_id: str,
    policy: RestartPolicy,
) -> Entry | None:
    """Take a pending entry for the incarnation ``epoch``; None if it is not ours to run.

    The row comes back with ``db_now``, the database's time of the claim (a woken tracker's next
    tick is ``tick_at`` by that clock). Atomicity: one conditional update (pending, the same epoch,
    and the claimer's lease live by the database clock), so of two deliveries of one message, or a
    stale message of an older epoch, at most one claim succeeds, and no entry is ever claimed by a
    worker that a sweep may already have declared lost. A new start records a ``running`` event in
    the same statement on PostgreSQL (one round trip), in the same transaction elsewhere; a tracker
    woken from its park is not a new start: no event.
    """
    params = {
        "c_kind": kind,
        "c_transaction_id": transaction_id,
        "c_epoch": epoch,
        "c_worker": worker,
        "c_worker_id": worker_id,
        "c_policy": policy.to_json(),
    }
    with _statement(settings) as conn:
        pg = conn.dialect.name == "postgresql"
        found = conn.execute(claim_statement(settings, event=pg), params).mappings().first()
        if found is None:
            return None
        row = Entry.from_mapping(found)
        if not pg and row.tick_at is None:
            _event(conn, row, "running")
        return row


def checkpoint(settings: Settings, row_id: int, epoch: int, state: dict[str, Any]) -> None:
    """Store the state of incarnation ``epoch``. Raises Fenced if it no longer owns the entry.
    Atomicity: one conditional update (on PostgreSQL in autocommit: one round trip)."""
    with _statement(settings) as conn:
        result = conn.execute(_CHECKPOINT, {"c_id": row_id, "c_epoch": epoch, "c_state": state})
        if result.rowcount != 1:
            raise Fenced()


def park(settings: Settings, row_id: int, epoch: int, state: dict[str, Any], wait: float) -> bool:
    """Park incarnation ``epoch`` with its new state until its next tick, ``wait`` seconds from now.

    The entry keeps its epoch and gives up its worker: it is ``parked``, and ``wake_due`` makes it
    pending again (under a new epoch) when the tick is due. Returns False, writing nothing, if a
    message or a stop request is waiting (the incarnation deals with it first); raises Fenced if
    the incarnation no longer owns the entry. Atomicity: one conditional update.
    """
    with _write(settings) as conn:
        result = conn.execute(
            trackers.update()
            .where(*_incarnation(Op.PARK, row_id, epoch))
            .values(
                status=Status.PARKED.value,
                state=state,
                checkpoint_at=db_now(),
                worker=None,
                worker_id=None,
                due_at=db_now(wait),
                tick_at=db_now(wait),
            )
        )
        if result.rowcount == 1:
            return True
        if _one(conn, *_incarnation(Op.CHECKPOINT, row_id, epoch)) is None:
            raise Fenced()
        return False


def exit_normally(settings: Settings, row_id: int, epoch: int, event: str, detail: str | None) -> None:
    """Deregister: delete the entry of incarnation ``epoch`` and record why. Fenced if not ours."""
    with _write(settings) as conn:
        row = _one(conn, *_incarnation(Op.FINISH, row_id, epoch), lock=True)
        if row is None:
            raise Fenced()
        _deregister(conn, row, event, detail)


def exit_abnormally(
    settings: Settings, row_id: int, epoch: int, event: str, detail: str | None, *, normal: bool = False
) -> tuple[Decision, Entry | None]:
    """Apply the restart policy to incarnation ``epoch``'s exit; returns the decision and new row.

    ``normal`` is a ``Done`` of a permanent tracker. A winning stop recorded meanwhile deregisters
    the entry instead. Atomicity: one transaction that reads the restart history and writes the
    decision, conditional on the epoch.
    """
    with _write(settings) as conn:
        row = _one(conn, *_incarnation(Op.EXIT, row_id, epoch), lock=True)
        if row is None:
            raise Fenced()
        plan = plan_exit(row, _now(conn), event, detail, normal=normal)
        return plan.decision, apply_exits(settings, conn, [plan])[0]
