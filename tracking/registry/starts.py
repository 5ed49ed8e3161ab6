"""The statements of ``start`` and ``start_many``, built once and compiled once per database.

A start is on the hot path of every application that tracks anything: building its statements on
every call (the ``first_epoch`` subqueries, the values) cost more than running them, so they are
built here once per database and start grace, with bound parameters (:func:`statement`); a call
only binds its values.

``insert``        the new entry, its epoch ``first_epoch`` as the statement sees the registry; ON
                  CONFLICT DO NOTHING, so an ID registered already inserts nothing (the caller then
                  reads it); executed with many parameter sets, it inserts a batch in one statement
                  (SQLAlchemy's "insertmanyvalues"), in the order given
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

Why one statement is enough on PostgreSQL, nearly always (SPEC "Fencing", RELIABILITY.md
invariant 8: a transaction ID's token never decreases, across lives). At READ COMMITTED the insert
computes ``first_epoch`` from the statement's snapshot S, while its unique check sees the latest
commits: it waits for an uncommitted insert or delete of the key, and goes through once the key's
row is gone. Each exit deletes its row and writes its last events in one transaction. The lives of
the ID that are over when the insert goes through are of three sorts:

1. over before S: their events are in S, so the epoch is above them;
2. with a row in S, deleted since (the insert waited for that exit, or ran after it): ``seen``
   (S holds a row of the key) sends the start to the correction, whose snapshot is taken after
   the insert went through, that exit in it;
3. born and over after S (a concurrent start committed, then its exit, while the insert waited
   or before it reached the check). The first of them computed its epoch from the same events of
   the ID as S holds (a life that ended between the two snapshots is of sort 2 for one of the two
   starts, which then corrects), so it took the same epoch unless the token floor moved between
   the two: its ``started`` event holds ours off ``ix_tracking_events_started`` (``started_id``
   is None), and the correction runs. A prune that raised the floor after S updated the floor
   row, whose version in S carries that prune's ``xmax`` (``floor_moved``): the correction again.

Otherwise the start is BEGIN, one statement, COMMIT. The correction deletes the start's own
``started`` event (so that the floor it computes leaves it out) and runs ``recorded one``. What
this does not catch: a prune that raised the floor after that concurrent life had computed its
epoch (and checked the floor) and before S, the life then restarted past our epoch and ended, all
while this one statement had not yet reached its unique check: several transactions of other
processes inside one statement's stall, right after a prune.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import Dialect

from tracking.models import Entry, Status, events, token_floor, trackers
from tracking.registry.core import db_now
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


def _insert(dialect: str, grace: float, returning: Any = tuple(trackers.c)) -> Any:
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
        # Every other column named too, with what new_entry reports: a registry at an older
        # schema (a column missing) refuses the start, though "start" returns few columns.
        **{name: sa.null() for name in _NULL_AT_START},
        "last_message_id": 0,
        "handled_message_id": 0,
        "republished": 0,
    }
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


def _recording(insert: Any) -> Any:
    """PostgreSQL: ``insert`` (of new entries, returning their columns) and their ``started``
    events in one statement: each inserted row as returned, then ``started_id`` (its event's ID;
    None when another life's ``started`` event holds that epoch), ``seen`` (the statement's
    snapshot holds a row of its key) and ``floor_moved`` (a prune changed the token floor since
    that snapshot, or may have): the last three columns."""
    inserted = insert.cte("inserted")
    written = (
        postgresql.insert(events)
        .from_select(
            ["kind", "transaction_id", "epoch", "at", "event"],
            sa.select(
                inserted.c.kind,
                inserted.c.transaction_id,
                inserted.c.epoch,
                db_now(),
                sa.literal("started"),
            ),
        )
        .on_conflict_do_nothing(
            index_elements=[events.c.kind, events.c.transaction_id, events.c.epoch],
            # a literal: PostgreSQL matches it to the index's predicate while planning, and a
            # prepared statement's generic plan knows no parameter's value
            index_where=events.c.event == sa.literal_column("'started'"),
        )
        .returning(events.c.id, events.c.transaction_id)
        .cte("written")
    )
    # The other subqueries read the statement's snapshot, not what the insert wrote.
    seen = sa.exists().where(
        trackers.c.kind == inserted.c.kind, trackers.c.transaction_id == inserted.c.transaction_id
    )
    floor_xmax = (
        sa.select(sa.cast(sa.literal_column("tracking_token_floor.xmax"), sa.Text))
        .select_from(token_floor)
        .where(token_floor.c.id == 1)
        .scalar_subquery()
    )
    # No floor row in the snapshot: one may have been inserted since, unseen.
    floor_moved = sa.func.coalesce(floor_xmax != "0", sa.true())
    return sa.select(
        inserted,
        written.c.id.label("started_id"),
        seen.label("seen"),
        floor_moved.label("floor_moved"),
    ).select_from(inserted.outerjoin(written, written.c.transaction_id == inserted.c.transaction_id))


def _unrecorded() -> Any:
    """PostgreSQL: delete the ``started`` events ``ids`` (a correction writes them again)."""
    ids = sa.bindparam("ids", type_=postgresql.ARRAY(sa.BigInteger()))
    return events.delete().where(events.c.id == sa.any_(ids))


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
        return _recording(_insert(dialect.name, grace, DECIDED))
    if which == "start batch":
        return _recording(_insert_batch(grace))
    if which in ("recorded", "recorded one"):
        return _recorded(batch=which == "recorded")
    if which == "unrecorded":
        return _unrecorded()
    return _started()
