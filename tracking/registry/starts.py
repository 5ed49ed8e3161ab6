"""The statements of ``start`` and ``start_many``, built once and compiled once per database.

A start is on the hot path of every application that tracks anything: building its statements on
every call (the ``first_epoch`` subqueries, the values) cost more than running them, so they are
built here once per database and start grace, with bound parameters (:func:`statement`); a call
only binds its values.

``insert``    the new entry, its epoch ``first_epoch`` as the statement sees the registry; ON
              CONFLICT DO NOTHING, so an ID registered already inserts nothing (the caller then
              reads it); executed with many parameter sets, it inserts a batch in one statement
              (SQLAlchemy's "insertmanyvalues"), in the order given
``insert batch``  PostgreSQL: the same for a batch, its IDs given as an array
``recorded``  PostgreSQL: the new entries' epochs raised to ``first_epoch`` as of now where they
              are below it (an insert that waited for an earlier life's exit computed it before
              that exit was visible) and their ``started`` events written, in one statement
``started``   SQLite: the ``started`` event of a new entry (its write lock excludes that race)
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import Dialect

from tracking.models import Status, events, trackers
from tracking.registry.core import db_now
from tracking.registry.transitions import first_epoch

_kind = sa.bindparam("k", type_=trackers.c.kind.type)
_transaction_id = sa.bindparam("t", type_=trackers.c.transaction_id.type)


def _insert(dialect: str, grace: float) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = {
        "kind": _kind,
        "transaction_id": _transaction_id,
        "status": Status.PENDING.value,
        "epoch": first_epoch(_kind, _transaction_id),
        "task_id": sa.bindparam("task_id", type_=trackers.c.task_id.type),
        "args": sa.bindparam("args", type_=trackers.c.args.type),
        "policy": sa.bindparam("policy", type_=trackers.c.policy.type),
        "restarts": 0,
        "restart_times": sa.bindparam("restart_times", type_=trackers.c.restart_times.type),
        "backoff_step": 0,
        "started_at": db_now(),
        "due_at": db_now(grace),
    }
    return insert(trackers).values(values).on_conflict_do_nothing().returning(*trackers.c)


def _insert_batch(grace: float) -> Any:
    """PostgreSQL: ``_insert`` of a batch given as arrays (``ts``, ``task_ids``), inserted in the
    order of the IDs: one short statement, planned once, whatever the batch's size."""
    batch = (
        sa.func.unnest(
            sa.bindparam("ts", type_=postgresql.ARRAY(sa.String())),
            sa.bindparam("task_ids", type_=postgresql.ARRAY(sa.String())),
        )
        .table_valued("t", "task_id", name="batch")
        .render_derived()
    )
    rows = sa.select(
        _kind,
        batch.c.t,
        sa.literal(Status.PENDING.value),
        first_epoch(_kind, batch.c.t),
        batch.c.task_id,
        sa.bindparam("args", type_=trackers.c.args.type),
        sa.bindparam("policy", type_=trackers.c.policy.type),
        sa.literal(0),
        sa.bindparam("restart_times", type_=trackers.c.restart_times.type),
        sa.literal(0),
        db_now(),
        db_now(grace),
    ).order_by(batch.c.t)
    columns = [
        "kind",
        "transaction_id",
        "status",
        "epoch",
        "task_id",
        "args",
        "policy",
        "restarts",
        "restart_times",
        "backoff_step",
        "started_at",
        "due_at",
    ]
    insert = postgresql.insert(trackers).from_select(columns, rows)
    return insert.on_conflict_do_nothing().returning(*trackers.c)


def _recorded(batch: bool) -> Any:
    """PostgreSQL: raise the new entries (``ids``, or the one ``row_id``) that need it to
    ``first_epoch`` as of now, and record their starts; returns ``(transaction_id, epoch)`` of
    each. An entry whose epoch holds (all of them but after a race) is not written again.

    One entry is named by a scalar: with an array, PostgreSQL's estimate for the generic plan of
    the prepared statement is worse than a custom plan's, so it plans the statement again on every
    start (most of its cost); with a scalar it keeps the generic plan."""
    ids: Any
    if batch:
        ids = sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.BigInteger())))
    else:
        ids = sa.bindparam("row_id", type_=sa.BigInteger())
    floor = first_epoch(trackers.c.kind, trackers.c.transaction_id)
    fixed = (
        trackers.update()
        .where(trackers.c.id == ids, trackers.c.epoch < floor)
        .values(epoch=floor)
        .returning(trackers.c.id, trackers.c.epoch)
        .cte("fixed")
    )
    epoch = sa.func.coalesce(fixed.c.epoch, trackers.c.epoch)
    started = (
        sa.select(trackers.c.kind, trackers.c.transaction_id, epoch, db_now(), sa.literal("started"))
        .select_from(trackers.outerjoin(fixed, fixed.c.id == trackers.c.id))
        .where(trackers.c.id == ids)
    )
    columns = ["kind", "transaction_id", "epoch", "at", "event"]
    return (
        events.insert()
        .from_select(columns, started)
        .add_cte(fixed)
        .returning(events.c.transaction_id, events.c.epoch)
    )


def _started() -> Any:
    """SQLite: the ``started`` event of a new entry (``t`` under epoch ``epoch``)."""
    return events.insert().values(
        kind=_kind, transaction_id=_transaction_id, epoch=sa.bindparam("epoch"), at=db_now(), event="started"
    )


@functools.lru_cache(maxsize=64)
def statement(dialect: Dialect, which: str, grace: float = 0.0) -> Any:
    """Statement ``which`` ("insert", "insert batch", "recorded", "recorded one" or
    "started") for ``dialect``,
    built once: the same object on every call, so SQLAlchemy computes its cache key once and finds
    its compiled form in the engine's cache."""
    if which == "insert":
        return _insert(dialect.name, grace)
    if which == "insert batch":
        return _insert_batch(grace)
    if which in ("recorded", "recorded one"):
        return _recorded(batch=which == "recorded")
    return _started()
