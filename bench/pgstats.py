"""What PostgreSQL itself counts while a section runs: transactions, row writes and table scans of
the run's database (its cumulative statistics, read before and after a window), and the size of the
registry on disk. ``pg_stat_statements`` is used when the server preloads it; otherwise scans
(sequential + index, over the registry's tables) stand in for the statements that read or write a
table."""

from __future__ import annotations

from typing import Any

import psycopg

COUNTERS = """SELECT
    (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()),
    sum(n_tup_ins)::bigint, sum(n_tup_upd)::bigint, sum(n_tup_hot_upd)::bigint, sum(n_tup_del)::bigint,
    sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::bigint
FROM pg_stat_user_tables WHERE relname LIKE 'tracking%'"""
NAMES = ("transactions", "rows_inserted", "rows_updated", "rows_hot_updated", "rows_deleted", "scans")
STATEMENTS = """SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"""
SIZES = """SELECT pg_relation_size('tracking_trackers'), pg_indexes_size('tracking_trackers'),
    pg_total_relation_size('tracking_trackers'), pg_total_relation_size('tracking_events')"""


def _has_statements(conn: psycopg.Connection[Any]) -> bool:
    sql = "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
    preload = str(conn.execute("SHOW shared_preload_libraries").fetchone()[0])  # type: ignore[index]
    return "pg_stat_statements" in preload and bool(conn.execute(sql).fetchone()[0])  # type: ignore[index]


def counters(conninfo: str) -> dict[str, int]:
    """The cumulative counters now (a fresh connection: a fresh statistics snapshot)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(COUNTERS).fetchone()
        assert row is not None
        out = {name: int(v or 0) for name, v in zip(NAMES, row, strict=True)}
        if _has_statements(conn):
            out["statements"] = int(conn.execute(STATEMENTS).fetchone()[0])  # type: ignore[index]
    return out


def per_tick(before: dict[str, int], after: dict[str, int], ticks: int) -> dict[str, float]:
    """Each counter's increase over a window, per tick run in it."""
    return {k: (after[k] - before[k]) / ticks if ticks else float("nan") for k in after if k in before}


def sizes(conninfo: str) -> dict[str, int]:
    """Bytes on disk: the registry's table (heap), its indexes, all of it (TOAST included), and the
    events table with its indexes."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(SIZES).fetchone()
    assert row is not None
    return dict(zip(("heap", "indexes", "total", "events"), (int(v) for v in row), strict=True))


def mib(n: float) -> str:
    return f"{n / 1024 / 1024:,.0f} MiB" if n >= 10 * 1024 * 1024 else f"{n / 1024 / 1024:.1f} MiB"


def size_line(s: dict[str, int], trackers: int) -> str:
    per = f"{s['total'] / trackers:.0f} bytes per tracker" if trackers else ""
    return (
        f"{mib(s['total'])} (heap {mib(s['heap'])}, indexes {mib(s['indexes'])}); {per}; "
        f"tracking_events {mib(s['events'])}"
    )


def statement_line(p: dict[str, float]) -> str:
    """Per tick: statements (if counted), transactions, scans and row writes."""
    head = f"statements {p['statements']:.3f}; " if "statements" in p else ""
    return (
        f"{head}transactions {p['transactions']:.3f}; table scans {p['scans']:.3f}; rows updated "
        f"{p['rows_updated']:.2f} ({p['rows_hot_updated']:.2f} HOT), inserted {p['rows_inserted']:.3f}, "
        f"deleted {p['rows_deleted']:.3f}"
    )
