"""``start_many`` on SQLite: a batch of new IDs inserted by one statement and their ``started``
events by one more, both compiled once and run as driver SQL (:func:`run_start_batch`).

``insert batch``  ``insert`` (:mod:`tracking.registry.starts`) of a batch, its IDs and task IDs one
                  JSON array, in the order of the IDs
``started batch`` the ``started`` events of its new entries
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine.interfaces import Dialect

from tracking.models import Entry, aware, events, trackers
from tracking.registry.core import db_now
from tracking.registry.starts import _kind, _new_values, new_entry
from tracking.registry.transitions import new_task_id

#: what SQLite's "insert batch" returns of each new entry, in this order
_BATCH_DECIDED = (
    trackers.c.id,
    trackers.c.transaction_id,
    trackers.c.epoch,
    trackers.c.task_id,
    trackers.c.started_at,
    trackers.c.due_at,
)


def _pairs(name: str) -> Any:
    """SQLite: the pairs of bound JSON array ``name`` (``[[a, b], ...]``) as rows ``(a, b)``."""
    each = sa.func.json_each(sa.bindparam(name, type_=sa.String())).table_valued("value", name=f"{name}_each")
    pair = sa.select(
        sa.func.json_extract(each.c.value, "$[0]").label("a"),
        sa.func.json_extract(each.c.value, "$[1]").label("b"),
    )
    return pair.subquery(name)


def _insert_batch_sqlite(grace: float) -> Any:
    """SQLite: ``_insert`` of a batch given as one JSON array of ``[transaction_id, task_id]``
    (``batch``), inserted in the order of the IDs, in one statement whatever the batch's size."""
    batch = _pairs("batch")
    values = _new_values(batch.c.a, batch.c.b, grace)
    selected = (v if isinstance(v, sa.ColumnElement) else sa.literal(v) for v in values.values())
    # WHERE: SQLite's parser would take ON CONFLICT after a bare FROM for a join's ON
    rows = sa.select(*selected).where(sa.true()).order_by(batch.c.a)
    insert = sqlite.insert(trackers).from_select(list(values), rows)
    return insert.on_conflict_do_nothing().returning(*_BATCH_DECIDED)


def _started_batch() -> Any:
    """SQLite: the ``started`` events of a batch of new entries, given as one JSON array of
    ``[transaction_id, epoch]`` (``started``)."""
    started = _pairs("started")
    rows = sa.select(_kind, started.c.a, started.c.b, db_now(), sa.literal("started"))
    return events.insert().from_select(["kind", "transaction_id", "epoch", "at", "event"], rows)


def run_start_batch(
    conn: sa.Connection, grace: float, kind: str, transaction_ids: Sequence[str], args: Any, policy: Any
) -> list[Entry]:
    """SQLite: the entries of ``transaction_ids`` (sorted, distinct) "insert batch" inserted (an ID
    registered already is left out, as ``insert`` leaves it) in ``conn``'s transaction, their
    ``started`` events written by one more statement (the write lock the transaction holds
    excludes PostgreSQL's races).

    The batch is bound as JSON text (``args`` and ``policy``, JSON documents, serialized once as
    SQLAlchemy's JSON type would each row's), the statements compiled once and run as driver SQL:
    SQLAlchemy's many-row execution (each row's parameters processed, then its result's) cost more
    than SQLite's work. Each entry's ``args`` and ``policy`` are decoded from the stored text, as a
    read would, so that no two entries share an object."""
    # not ASCII-escaped: a lone surrogate fails to bind, as in any other statement
    batch = json.dumps([[t, new_task_id()] for t in transaction_ids], ensure_ascii=False)
    args_json, policy_json = json.dumps(args), json.dumps(policy)
    bound = {"k": kind, "batch": batch, "args": args_json, "policy": policy_json, "restart_times": "[]"}
    found: list[Sequence[Any]] = list(_driver_sql(conn, "insert batch", grace, bound))
    if found:
        started = json.dumps([[row[1], row[2]] for row in found], ensure_ascii=False)
        _driver_sql(conn, "started batch", grace, {"k": kind, "started": started})
    return [_batch_entry(kind, row, args_json, policy_json) for row in found]


def _batch_entry(kind: str, row: Sequence[Any], args_json: str, policy_json: str) -> Entry:
    """The entry "insert batch" inserted, ``row`` its returned row (``_BATCH_DECIDED``), as
    :func:`~tracking.registry.starts.new_entry` builds a started one; its ``args`` and ``policy``
    decoded from the JSON text bound, so that no two entries share an object."""
    params = {
        "k": kind,
        "t": row[1],
        "task_id": row[3],
        "args": json.loads(args_json),
        "policy": json.loads(policy_json),
    }
    return new_entry(params, (row[0], kind, row[1], row[2], aware(row[4]), aware(row[5])))


def _driver_sql(conn: sa.Connection, which: str, grace: float, named: dict[str, Any]) -> sa.CursorResult[Any]:
    """Statement ``which`` run as its SQL compiled once, ``named`` its parameters (the statement's
    own literals added), through SQLAlchemy's driver-SQL path: its transaction (begun as
    ``execute`` would), events and error wrapping, none of its per-row processing."""
    sql, order, fixed = _compiled_sqlite(conn.dialect, which, grace)
    values = {**fixed, **named}
    params: Any = tuple(values[name] for name in order) if order is not None else values
    return conn.exec_driver_sql(sql, params)


@functools.lru_cache(maxsize=16)
def _compiled_sqlite(
    dialect: Dialect, which: str, grace: float
) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
    """SQLite's statement ``which`` compiled for ``dialect``: its SQL, the order of its parameters
    when the driver takes them by position (None: by name), the values of its own literals."""
    compiled = _statement(which, grace).compile(dialect=dialect)
    order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
    return str(compiled), order, dict(compiled.params)


@functools.lru_cache(maxsize=16)
def _statement(which: str, grace: float) -> Any:
    """Statement ``which`` ("insert batch" or "started batch"), built once."""
    return _insert_batch_sqlite(grace) if which == "insert batch" else _started_batch()
