"""i. Messages: ``call`` round trip and ``cast`` throughput, each with its baselines in the same run.

One tracker (``bench.trackers.MessageBench``, interval 30 s) runs on one worker process
(``-P threads``). ``call`` is timed against a bare Celery round trip (``send_task`` of a task that
pushes to a Redis list the benchmark waits on, through the same broker to the same worker) and a
raw SQL round trip through the bare driver (an INSERT of a message row into a table like
``tracking_messages``, then a SELECT of it by id: the least a mailbox in the database costs).
Alternating blocks, so that drift in the machine's load hits all three alike.

``cast`` is timed as casts accepted per second (``cast`` called back to back from one thread),
against raw INSERTs per second of the same row into that table through the bare driver, one
transaction each; and casts handled per second by the one tracker: from the first ``cast`` until
its checkpointed state has counted them all.

Every wait is bounded in time; every loop in count.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from bench.measure import Series, echo_round_trip
from bench.services import wait_until

PG_TABLE = """
CREATE TABLE IF NOT EXISTS bench_messages (
    id bigserial PRIMARY KEY,
    kind varchar(255) NOT NULL,
    transaction_id varchar(255) NOT NULL,
    type varchar(8) NOT NULL,
    status varchar(8) NOT NULL,
    body jsonb NOT NULL,
    reply jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""
SQLITE_TABLE = """
CREATE TABLE IF NOT EXISTS bench_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind varchar(255) NOT NULL,
    transaction_id varchar(255) NOT NULL,
    type varchar(8) NOT NULL,
    status varchar(8) NOT NULL,
    body text NOT NULL,
    reply text,
    created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP
)
"""

#: (insert a message row and return its id, read it back by id), for one driver
RawPair = tuple[Callable[[str, str, str], int], Callable[[int], Any]]


def pg_raw(conn: Any) -> RawPair:
    """psycopg on one autocommit connection: every statement its own transaction."""
    conn.execute(PG_TABLE)

    def insert(kind: str, txid: str, body: str) -> int:
        row = conn.execute(
            "INSERT INTO bench_messages (kind, transaction_id, type, status, body)"
            " VALUES (%s, %s, 'call', 'queued', %s::jsonb) RETURNING id",
            (kind, txid, body),
        ).fetchone()
        return int(row[0])

    def select(row_id: int) -> Any:
        return conn.execute("SELECT status, body FROM bench_messages WHERE id = %s", (row_id,)).fetchone()

    return insert, select


def sqlite_raw(conn: Any) -> RawPair:
    """sqlite3 in autocommit mode (``isolation_level=None``) on the registry's own file."""
    conn.execute(SQLITE_TABLE)

    def insert(kind: str, txid: str, body: str) -> int:
        cur = conn.execute(
            "INSERT INTO bench_messages (kind, transaction_id, type, status, body)"
            " VALUES (?, ?, 'call', 'queued', ?)",
            (kind, txid, body),
        )
        return int(cur.lastrowid)

    def select(row_id: int) -> Any:
        return conn.execute("SELECT status, body FROM bench_messages WHERE id = ?", (row_id,)).fetchone()

    return insert, select


def call_latency(
    tracker: Any,
    txid: str,
    count: int,
    raw: RawPair,
    app: Any,
    queue: str,
    client: Any,
    key_prefix: str,
) -> dict[str, Any]:
    """``tracker.call(txid, message)`` against the bare Celery and raw SQL round trips."""
    insert, select = raw
    body = json.dumps({"n": 0, "hello": "world"})
    for i in range(5):  # warm-up
        tracker.call(txid, {"n": i}, timeout=30)
        echo_round_trip(app, queue, client, key_prefix, timeout=30)
        select(insert(tracker.kind, txid, body))
    calls, echoes, raws = Series(), Series(), Series()
    for start in range(0, count, 20):
        block = range(start, min(start + 20, count))
        for i in block:
            t0 = time.perf_counter()
            reply = tracker.call(txid, {"n": i}, timeout=30)
            calls.values.append(time.perf_counter() - t0)
            if reply != {"n": i}:
                raise AssertionError(f"call {i} answered {reply!r}")
        for _i in block:
            echoes.values.append(echo_round_trip(app, queue, client, key_prefix, timeout=30))
        for _i in block:
            t0 = time.perf_counter()
            row = select(insert(tracker.kind, txid, body))
            raws.values.append(time.perf_counter() - t0)
            if row is None:
                raise AssertionError("the raw INSERT was not found by its id")
    return {"calls": count, "call": calls, "celery": echoes, "raw": raws}


def cast_throughput(
    tracker: Any, txid: str, count: int, raw: RawPair, timeout: float = 300.0
) -> dict[str, Any]:
    """Casts accepted per second and handled per second by one tracker; raw INSERTs per second."""
    insert, _select = raw
    before = (tracker.get_state(txid) or {}).get("casts", 0)
    t0 = time.perf_counter()
    for i in range(count):
        tracker.cast(txid, {"n": i})
    accepted_s = time.perf_counter() - t0

    def handled() -> bool:
        state = tracker.get_state(txid) or {}
        return int(state.get("casts", 0)) >= before + count

    wait_until(handled, timeout, interval=0.01, what=f"{count} casts handled")
    handled_s = time.perf_counter() - t0
    body = json.dumps({"n": 0})
    t0 = time.perf_counter()
    for _i in range(count):
        insert(tracker.kind, txid, body)
    raw_s = time.perf_counter() - t0
    return {
        "casts": count,
        "accepted_per_s": count / accepted_s,
        "handled_per_s": count / handled_s,
        "handled_s": handled_s,
        "raw_insert_per_s": count / raw_s,
    }
