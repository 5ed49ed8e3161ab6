"""f.'s registry: a chosen number of rows on PostgreSQL, in the states a sweep meets in production,
and the sweep's own queries captured and run through the bare driver."""

from __future__ import annotations

import contextlib
import textwrap
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.types.json import Jsonb

from bench.core import Series
from tracking import registry
from tracking.policy import RestartPolicy
from tracking.settings import Settings

KIND = "bench_sweep"
LIVE_WORKERS = 50
STALE_WORKER = "stale-0"

_BULK = """
INSERT INTO tracking_trackers (kind, transaction_id, status, epoch, task_id, worker, worker_id,
    args, state, policy, restarts, restart_times, backoff_step, last_error, started_at, claimed_at,
    checkpoint_at, due_at)
SELECT %(kind)s, t.txid, t.status, 1 + mod(g, 3), gen_random_uuid()::text,
    CASE WHEN t.status = 'running' THEN 'bench' || mod(g, %(workers)s) || '@bench-host' END,
    CASE WHEN t.status = 'running' THEN 'live-' || mod(g, %(workers)s) END,
    jsonb_build_object('transaction_id', t.txid),
    jsonb_build_object('transaction_id', t.txid, 'confirmations', mod(g, 12)),
    %(policy)s, mod(g, 2), '[]'::jsonb, 0,
    CASE WHEN t.status = 'dead' THEN 'RuntimeError: the source kept failing' END,
    now() - make_interval(secs => mod(g, 86400)),
    CASE WHEN t.status = 'running' THEN now() - make_interval(secs => mod(g, 3600)) END,
    CASE WHEN t.status IN ('running', 'dead') THEN now() - make_interval(secs => mod(g, 15)) END,
    CASE WHEN t.status IN ('pending', 'failed') THEN now() + interval '1 hour' END
FROM generate_series(%(lo)s, %(hi)s - 1) AS g,
LATERAL (
    SELECT '0x' || md5(g::text) || md5((g + 1)::text) AS txid,
           CASE WHEN mod(g, 100) = 1 THEN 'pending'
                WHEN mod(g, 200) = 2 THEN 'failed'
                WHEN mod(g, 100) = 3 THEN 'dead'
                ELSE 'running' END AS status
) AS t
"""

_SPECIAL = """
INSERT INTO tracking_trackers (kind, transaction_id, status, epoch, task_id, args, state, policy,
    restart_times, started_at)
SELECT %(kind)s, %(prefix)s || g, 'pending', 1, gen_random_uuid()::text,
    '{}'::jsonb, '{"confirmations": 0}'::jsonb, %(policy)s, '[]'::jsonb, now() - interval '1 day'
FROM generate_series(1, %(count)s) AS g
RETURNING id
"""


class SweepRegistry:
    """Bulk rows: 97.5% running, spread over 50 live worker leases (renewed before each sweep), 1%
    pending and 0.5% failed, neither due for an hour, 1% dead. Plus ``lost`` running entries of a
    worker whose lease is an hour old and ``due`` pending entries a minute past due, put back by
    :meth:`reset` before every sweep that is to rescue them."""

    def __init__(self, conn: psycopg.Connection[Any], lost: int, due: int) -> None:
        self.conn = conn
        self.rows = 0
        self.policy = Jsonb(RestartPolicy().to_json())
        conn.execute(
            "INSERT INTO tracking_workers (id, hostname, pid, status, started_at, heartbeat_at)"
            " SELECT 'live-' || w, 'bench' || w || '@bench-host', 10000 + w, 'alive',"
            " now() - interval '1 day', now() FROM generate_series(0, %(n)s - 1) AS w",
            {"n": LIVE_WORKERS},
        )
        self.lost_ids, self.due_ids = (
            [
                r[0]
                for r in conn.execute(
                    _SPECIAL, {"kind": KIND, "prefix": p, "count": n, "policy": self.policy}
                )
            ]
            for p, n in (("lost-", lost), ("due-", due))
        )
        self.rows = lost + due

    def grow(self, size: int) -> float:
        """Bulk rows up to ``size`` in all, then VACUUM ANALYZE (what autovacuum does after a bulk
        load); the seconds it took."""
        began = time.monotonic()
        if size > self.rows:
            args = {"kind": KIND, "lo": self.rows, "hi": size, "workers": LIVE_WORKERS, "policy": self.policy}
            self.conn.execute(_BULK, args)
            self.rows = size
        for table in ("tracking_trackers", "tracking_workers", "tracking_events"):
            self.conn.execute(f"VACUUM ANALYZE {table}")
        return time.monotonic() - began

    def reset(self) -> None:
        """Live leases renewed; the stale worker back with its hour-old lease and its running
        entries; the due entries a minute past due."""
        conn = self.conn
        conn.execute("UPDATE tracking_workers SET heartbeat_at = now() WHERE id LIKE 'live-%'")
        conn.execute(
            "INSERT INTO tracking_workers (id, hostname, pid, status, started_at, heartbeat_at)"
            " VALUES (%(id)s, 'stale@bench-host', 9999, 'alive', now() - interval '1 day',"
            " now() - interval '1 hour')"
            " ON CONFLICT (id) DO UPDATE SET status = 'alive', heartbeat_at = EXCLUDED.heartbeat_at",
            {"id": STALE_WORKER},
        )
        conn.execute(
            "UPDATE tracking_trackers SET status = 'running', worker = 'stale@bench-host',"
            " worker_id = %(worker)s, claimed_at = now() - interval '2 hours', due_at = NULL,"
            " restarts = 0, restart_times = '[]', backoff_step = 0, stop_reason = NULL,"
            " last_error = NULL WHERE id = ANY(%(ids)s)",
            {"worker": STALE_WORKER, "ids": self.lost_ids},
        )
        conn.execute(
            "UPDATE tracking_trackers SET status = 'pending', worker = NULL, worker_id = NULL,"
            " due_at = now() - interval '1 minute' WHERE id = ANY(%(ids)s)",
            {"ids": self.due_ids},
        )


@contextlib.contextmanager
def captured(settings: Settings) -> Iterator[list[tuple[str, Any]]]:
    """Every statement the registry sends to the database meanwhile, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        seen.append((statement, parameters))

    eng = registry.engine(settings)
    sa.event.listen(eng, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        sa.event.remove(eng, "before_cursor_execute", before)


def main_queries(statements: Sequence[tuple[str, Any]]) -> dict[str, tuple[str, Any]]:
    """The sweep's due query and orphans query among the statements it sent."""
    found: dict[str, tuple[str, Any]] = {}
    for statement, params in statements:
        text = " ".join(statement.split())
        if text.startswith("SELECT") and "FROM tracking_trackers" in text:
            if "ORDER BY tracking_trackers.due_at" in text:
                found.setdefault("due", (statement, params))
            elif "tracking_trackers.worker_id IN" in text:
                found.setdefault("orphans", (statement, params))
    if len(found) < 2:
        raise AssertionError(f"the sweep did not send its due and orphans queries: {sorted(found)} only")
    return found


def timed(conn: psycopg.Connection[Any], query: tuple[str, Any], runs: int, seq: bool = False) -> Series:
    """The query through the bare driver (rows fetched), after a warm-up; ``seq``: index scans off."""
    out = Series()
    for _ in range(runs + 1):
        with conn.transaction():
            for name in ("enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan") if seq else ():
                conn.execute(f"SET LOCAL {name} = off")
            # never prepared: a prepared plan would outlive the SET LOCAL above
            out.time(lambda: conn.execute(query[0], query[1], prepare=False).fetchall())
    return Series(out[1:])


def explain(conn: psycopg.Connection[Any], query: tuple[str, Any]) -> str:
    rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + query[0], query[1], prepare=False).fetchall()
    return "\n".join(r[0] for r in rows)


def literal_sql(statement: str, params: Any) -> str:
    """The statement with its parameters written in, one clause a line, for reading."""
    text = " ".join(statement.split())
    for key in sorted(params if isinstance(params, dict) else {}, key=len, reverse=True):
        value = params[key]
        text = text.replace(f"%({key})s", f"'{value}'" if isinstance(value, str) else str(value))
    for clause in (" FROM ", " LEFT OUTER JOIN ", " WHERE ", " AND ", " ORDER BY ", " LIMIT "):
        text = text.replace(clause, "\n" + clause.strip() + " ")
    head, _, rest = text.partition("\n")
    return textwrap.fill(head, width=100, subsequent_indent="    ", break_on_hyphens=False) + "\n" + rest
