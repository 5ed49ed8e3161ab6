"""The statements of ``start`` and ``start_many``, built once and compiled once per database.

A start is on the hot path of every application that tracks anything: building its statements on
every call (the ``first_epoch`` subqueries, the values) cost more than running them, so they are
built here once per database and start grace, with bound parameters (:func:`statement`); a call
only binds its values.

``insert``        the new entry, its epoch ``first_epoch`` as the statement sees the registry; ON
                  CONFLICT DO NOTHING, so an ID registered already inserts nothing (the caller then
                  reads it)
``start``         PostgreSQL: ``insert`` and its ``started`` event in one statement, with what says
                  whether the epoch needs the correction below (``seen``, ``started_id``,
                  ``floor_moved``); it returns only what the database decides of the entry (the
                  rest is :func:`new_entry`), and on psycopg runs on the driver (:func:`run_start`)
``start batch``   PostgreSQL: the same for a batch, its IDs given as arrays
``recorded``      PostgreSQL, the correction: the new entries' epochs raised to ``first_epoch`` as
                  of now where they are below it, and their ``started`` events written, in one
                  statement (``recorded one``: one entry, named by a scalar)
``unrecorded``    PostgreSQL: the ``started`` events of a correction's entries deleted first
``started``       SQLite: the ``started`` event of a new entry (its write lock excludes the races)

SQLite's batch of new entries (``start_many``): :mod:`tracking.registry.startbatches`.

Why one statement is enough on PostgreSQL, nearly always, and what the correction is for:
:mod:`tracking.registry.recording`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import Dialect

from tracking.models import Entry, Status, events, trackers
from tracking.registry.core import db_now
from tracking.registry.recording import recorded, recording, unrecorded
from tracking.registry.transitions import first_epoch

_kind = sa.bindparam("k", type_=trackers.c.kind.type)
_transaction_id = sa.bindparam("t", type_=trackers.c.transaction_id.type)


#: what PostgreSQL's "start" returns of the new entry: what the database decides (the rest is what
#: the statement was given: :func:`new_entry`)
DECIDED = (
    trackers.c.id,
    trackers.c.kind,
    trackers.c.transaction_id,
    trackers.c.epoch,
    trackers.c.started_at,
    trackers.c.due_at,
)


def new_entry(params: dict[str, Any], row: Any) -> Entry:
    """The entry "start" inserted with ``params`` (``entries._start_params``), ``row`` its
    returned row (``DECIDED``'s columns, by position): the values ``_insert`` writes. Its ``args``
    and ``policy`` are the objects given (the client passes JSON decoded afresh), not read back."""
    return Entry(
        id=row[0],
        kind=params["k"],
        transaction_id=params["t"],
        status=Status.PENDING,
        epoch=row[3],
        task_id=params["task_id"],
        worker=None,
        worker_id=None,
        args=params["args"],
        state=None,
        policy=params["policy"],
        restarts=0,
        restart_times=[],
        backoff_step=0,
        stop_reason=None,
        last_error=None,
        started_at=row[4],
        claimed_at=None,
        checkpoint_at=None,
        due_at=row[5],
        tick_at=None,
        last_message_id=0,
        handled_message_id=0,
        republished=0,
    )


#: the columns a new entry leaves NULL
_NULL_AT_START = (
    "worker",
    "worker_id",
    "state",
    "stop_reason",
    "last_error",
    "claimed_at",
    "checkpoint_at",
    "tick_at",
)


def _new_values(transaction_id: Any, task_id: Any, grace: float) -> dict[str, Any]:
    """The columns of a new entry of kind ``k``, ID ``transaction_id``, its task ``task_id``."""
    return {
        "kind": _kind,
        "transaction_id": transaction_id,
        "status": Status.PENDING.value,
        "epoch": first_epoch(_kind, transaction_id),
        "task_id": task_id,
        "args": sa.bindparam("args", type_=trackers.c.args.type),
        "policy": sa.bindparam("policy", type_=trackers.c.policy.type),
        "restarts": 0,
        "restart_times": sa.bindparam("restart_times", type_=trackers.c.restart_times.type),
        "backoff_step": 0,
        "started_at": db_now(),
        "due_at": db_now(grace),
        # Every other column named too, with what new_entry reports: a registry at an older
        # schema (a column missing) refuses the start, though "start" returns few columns.
        **{name: sa.null() for name in _NULL_AT_START},
        "last_message_id": 0,
        "handled_message_id": 0,
        "republished": 0,
    }


def _insert(dialect: str, grace: float, returning: Any = tuple(trackers.c)) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = _new_values(_transaction_id, sa.bindparam("task_id", type_=trackers.c.task_id.type), grace)
    return insert(trackers).values(values).on_conflict_do_nothing().returning(*returning)


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


def _started() -> Any:
    """SQLite: the ``started`` event of a new entry (``t`` under epoch ``epoch``)."""
    return events.insert().values(
        kind=_kind, transaction_id=_transaction_id, epoch=sa.bindparam("epoch"), at=db_now(), event="started"
    )


def run_start(conn: sa.Connection, grace: float, params: dict[str, Any]) -> Sequence[Any] | None:
    """PostgreSQL: "start" with ``params`` (``entries._start_params``) in ``conn``'s transaction:
    its row (``DECIDED``'s columns, then the three checks), or None when the key is registered.

    On psycopg the statement, compiled once, runs on the driver's connection (in the same
    transaction): SQLAlchemy's execution path (the statement's parameters processed, its result's
    metadata built) cost more CPU than the rest of a start's registry work. Driver errors are
    raised as SQLAlchemy's, as on that path, and a connection found dead is invalidated."""
    dialect = conn.dialect
    if dialect.driver != "psycopg":
        row: Sequence[Any] | None = conn.execute(statement(dialect, "start", grace), params).first()
        return row
    from psycopg.types.json import Jsonb

    sql, fixed = _compiled_start(dialect, grace)
    bound = {
        **fixed,
        **params,
        "args": Jsonb(params["args"]),
        "policy": Jsonb(params["policy"]),
        "restart_times": Jsonb(params["restart_times"]),
    }
    if not conn.in_transaction():
        # What SQLAlchemy's execute would do (autobegin): else psycopg's own transaction, unknown
        # to the connection, would be rolled back by a caller's commit() that then did nothing
        conn.begin()
    raw = conn.connection
    try:
        found: Sequence[Any] | None = raw.driver_connection.execute(sql, bound).fetchone()  # type: ignore[union-attr]
    except dialect.loaded_dbapi.Error as exc:
        dead = dialect.is_disconnect(exc, raw.dbapi_connection, None)
        if dead:
            conn.invalidate(exc)
        raise sa_exc.DBAPIError.instance(
            sql, bound, exc, dialect.loaded_dbapi.Error, connection_invalidated=dead, dialect=dialect
        ) from exc
    return found


@functools.lru_cache(maxsize=16)
def _compiled_start(dialect: Dialect, grace: float) -> tuple[str, dict[str, Any]]:
    """ "start" compiled for ``dialect``: its SQL and the values of its own literal parameters."""
    compiled = statement(dialect, "start", grace).compile(dialect=dialect)
    return str(compiled), dict(compiled.params)


@functools.lru_cache(maxsize=64)
def statement(dialect: Dialect, which: str, grace: float = 0.0) -> Any:
    """Statement ``which`` ("insert", "start", "start batch", "recorded", "recorded one",
    "unrecorded" or "started") for ``dialect``, built once: the same object on every call, so
    SQLAlchemy computes its cache key once and finds its compiled form in the engine's cache."""
    if which == "insert":
        return _insert(dialect.name, grace)
    if which == "start":
        return recording(_insert(dialect.name, grace, DECIDED))
    if which == "start batch":
        return recording(_insert_batch(grace))
    if which in ("recorded", "recorded one"):
        return recorded(batch=which == "recorded")
    if which == "unrecorded":
        return unrecorded()
    return _started()
