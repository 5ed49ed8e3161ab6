"""Parked trackers ticked in batches: the due entries of one kind that a waker woke together are
claimed in one statement and parked again, each with its new state, in another.

Every entry of a batch is fenced by its own epoch, in the statement itself: an entry superseded
since its wake-up (stopped, restarted by a sweep, claimed through another message) is left out
alone, and the others go on. The preconditions are the single-entry ones (``claim`` and ``park``
of :mod:`tracking.registry.transitions`); only the epoch condition names one epoch per entry.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from tracking.models import Entry, Status, trackers
from tracking.policy import RestartPolicy
from tracking.registry.core import _write, db_now
from tracking.registry.transitions import Op, claimed, guard, next_tick
from tracking.settings import Settings

#: the most entries one batch may name (its claim's IN list, its park's rows)
MAX_BATCH = 1000


def claim_batch(
    settings: Settings,
    kind: str,
    members: Sequence[tuple[str, int]],
    *,
    worker: str,
    worker_id: str,
    policy: RestartPolicy,
) -> list[Entry]:
    """Claim the entries of ``kind`` named by ``members`` (transaction ID, epoch) for one worker.

    Returns those claimed, each with ``db_now``, the database's time of the claim; an entry that
    is no longer pending under the epoch named (a duplicate or stale batch message, an entry
    stopped or restarted since) is left out. Atomicity: one conditional update, each entry under
    ``claim``'s precondition (pending, its own epoch, the claimer's lease live by the database
    clock), so of two deliveries of one batch, at most one claims each entry. Raises ValueError,
    writing nothing, for more than ``MAX_BATCH`` members.
    """
    if len(members) > MAX_BATCH:
        raise ValueError(f"a batch names at most {MAX_BATCH} entries, not {len(members)}")
    if not members:
        return []
    payload = [{"t": transaction_id, "e": epoch} for transaction_id, epoch in members]
    params = {
        "batch": payload,
        "b_kind": kind,
        "b_worker": worker,
        "b_worker_id": worker_id,
        "b_policy": policy.to_json(),
    }
    with _write(settings) as conn:
        claim = _claim(conn.dialect.name, settings)
        found = conn.execute(claim, _bound(conn, params)).mappings()
        return [Entry.from_mapping(row) for row in found]


def park_batch(
    settings: Settings, states: Sequence[tuple[int, int, dict[str, Any]]], interval: float
) -> set[int]:
    """Park the entries ``(row id, epoch, new state)`` of a batch until their next ticks.

    Each entry's next tick is ``interval`` after the one it just ran was due, or an interval from
    now if that is past (``transitions.next_tick``: a missed tick is not caught up). Returns the
    row IDs parked. An entry left out either is no longer held by that epoch (its incarnation is
    fenced) or has a message or a stop request waiting (its incarnation must deal with it first,
    as ``park`` refuses); the caller tells them apart with ``checkpoint``. Atomicity: one
    conditional update, each entry under ``park``'s precondition with its own epoch.
    """
    if len(states) > MAX_BATCH:
        raise ValueError(f"a batch names at most {MAX_BATCH} entries, not {len(states)}")
    if not states:
        return set()
    payload = [{"id": row_id, "epoch": epoch, "state": state} for row_id, epoch, state in states]
    with _write(settings) as conn:
        parked = conn.execute(_park(conn.dialect.name, interval), _bound(conn, {"batch": payload}))
        return set(parked.scalars())


# The statements are built once per database (and settings, or interval), their values bound at each
# execution: built for each batch, with the batch in them, they cost more than they took to run.


@functools.lru_cache(maxsize=16)
def _claim(dialect: str, settings: Settings) -> Any:
    named = _table(dialect, ("t", sa.String()), ("e", sa.BigInteger()))
    fence = sa.and_(trackers.c.transaction_id == named.c.t, trackers.c.epoch == named.c.e)
    worker_id = sa.bindparam("b_worker_id", type_=trackers.c.worker_id.type)
    values = claimed(
        sa.bindparam("b_worker", type_=trackers.c.worker.type),
        worker_id,
        sa.bindparam("b_policy", type_=trackers.c.policy.type),
    )
    return (
        trackers.update()
        .where(trackers.c.kind == sa.bindparam("b_kind", type_=sa.String()))
        .where(*guard(Op.CLAIM, fence=fence, worker_id=worker_id, settings=settings))
        .values(values)
        .returning(*trackers.c, db_now().label("db_now"))
    )


@functools.lru_cache(maxsize=64)
def _park(dialect: str, interval: float) -> Any:
    state_type = postgresql.JSONB() if dialect == "postgresql" else sa.JSON()
    batch = _table(dialect, ("id", sa.BigInteger()), ("epoch", sa.BigInteger()), ("state", state_type))
    due = next_tick(interval)
    return (
        trackers.update()
        .where(trackers.c.id == batch.c.id)
        .where(*guard(Op.PARK, fence=trackers.c.epoch == batch.c.epoch))
        .values(
            status=Status.PARKED.value,
            state=batch.c.state,
            checkpoint_at=db_now(),
            worker=None,
            worker_id=None,
            due_at=due,
            tick_at=due,
        )
        .returning(trackers.c.id)
    )


def _bound(conn: sa.Connection, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as the statements above bind them: SQLite takes the batch as JSON text."""
    if conn.dialect.name == "postgresql":
        return params
    return {**params, "batch": json.dumps(params["batch"])}


def _table(dialect: str, *columns: tuple[str, Any]) -> Any:
    """The objects of the JSON parameter ``batch`` as a derived table ``batch`` of these ``(name,
    type)`` columns: one statement whatever the batch's size, and the same SQL for every batch
    (compiled and prepared once, where an IN list of values is a new statement each time)."""
    if dialect == "postgresql":
        return (
            sa.func.jsonb_to_recordset(sa.bindparam("batch", type_=postgresql.JSONB()))
            .table_valued(*(sa.column(name, type_) for name, type_ in columns))
            .render_derived(name="batch", with_types=True)
        )
    each = sa.func.json_each(sa.bindparam("batch", type_=sa.String())).table_valued("value")
    return (
        sa.select(*(sa.func.json_extract(each.c.value, f"$.{name}").label(name) for name, _ in columns))
        .select_from(each)
        .subquery("batch")
    )
