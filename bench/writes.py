"""g. Registry writes per second with many live trackers on one worker process.

{sizes} live trackers (interval {interval:g} s, added in steps) on one worker process (`-P threads
-c {concurrency}`) on PostgreSQL and Redis; after every tracker has ticked, rows inserted, updated
and deleted per table are read from `pg_stat_user_tables` before and after a {window:g} s window.
Lease renewals are the updates of `tracking_workers`, checkpoints those of `tracking_trackers`.
PostgreSQL flushes a busy backend's counters about once a second (an idle one's up to 10 s late:
the window starts at least 11 s after the last start), so a window is exact to about one second of
writes. The baseline is the same single-row checkpoint `UPDATE` (new state, by id and epoch)
through psycopg on one connection, one per transaction, back to back for 3 s: what one connection
of this machine sustains, each commit waiting for its WAL flush. A design with one heartbeat per
tracker would write trackers / heartbeat rows per second on top of the checkpoints.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bench.context import Context
from bench.core import Section, met, section, table
from bench.services import wait_until
from bench.trackers import LoadBench

#: PostgreSQL (15) flushes a backend's table counters at most once a second while it is busy, and
#: an idle backend's pending ones up to 10 s later (PGSTAT_IDLE_INTERVAL)
STATS_LAG = 11.0
RUNNING = """SELECT count(*) FROM tracking_trackers
    WHERE kind = %s AND status = 'running' AND checkpoint_at IS NOT NULL"""
TABLES = ["tracking_trackers", "tracking_workers", "tracking_events", "tracking_supervisors"]


def window(ctx: Context, seconds: float) -> dict[str, Any]:
    """Rows inserted, updated and deleted per second in each registry table over ``seconds``."""
    sql = "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE relname = ANY(%s)"
    with psycopg.connect(ctx.pg.conninfo, autocommit=True) as conn:

        def read() -> dict[str, tuple[int, int, int]]:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            return {name: tuple(n) for name, *n in conn.execute(sql, (TABLES,)).fetchall()}

        first, t0 = read(), time.monotonic()
        time.sleep(seconds)
        last, elapsed = read(), time.monotonic() - t0
    ops = ("ins", "upd", "del")
    rates = {
        t: {op: (n[i] - first.get(t, (0, 0, 0))[i]) / elapsed for i, op in enumerate(ops)}
        for t, n in last.items()
    }
    return {"seconds": elapsed, "rates": rates}


def summary(
    rates: dict[str, dict[str, float]], heartbeat: float, seconds: float
) -> tuple[float, float, float, str]:
    """(lease renewals/s, checkpoints/s, all writes/s, whether renewals are about 1/heartbeat)."""
    lease, checkpoints = rates["tracking_workers"]["upd"], rates["tracking_trackers"]["upd"]
    total = sum(sum(ops.values()) for ops in rates.values())
    goal = (
        met(abs(lease * heartbeat - 1) <= 0.25) if seconds >= 5 * heartbeat else "window too short to judge"
    )
    return lease, checkpoints, total, goal


def wait_running(ctx: Context, kind: str, count: int, timeout: float) -> float:
    return wait_until(
        lambda: ctx.scalar(RUNNING, kind) >= count, timeout, interval=0.5, what=f"{count} running"
    )


def raw_checkpoint_rate(ctx: Context, kind: str, seconds: float) -> float:
    """Single-row checkpoint UPDATEs (new state, fenced by id and epoch) through psycopg on one
    connection, one per transaction, round robin over the entries of ``kind``, for ``seconds``."""
    sql = "UPDATE tracking_trackers SET state = %s, checkpoint_at = now() WHERE id = %s AND epoch = %s"
    with psycopg.connect(ctx.pg.conninfo, autocommit=True) as conn:
        rows = conn.execute("SELECT id, epoch FROM tracking_trackers WHERE kind = %s", (kind,)).fetchall()
        t0 = time.monotonic()
        for i in range(10_000_000):  # bounded
            row_id, epoch = rows[i % len(rows)]
            conn.execute(sql, (Jsonb({"transaction_id": str(row_id), "confirmations": i}), row_id, epoch))
            if time.monotonic() - t0 >= seconds:
                break
        return (i + 1) / (time.monotonic() - t0)


def run(ctx: Context) -> Section:
    sizes, seconds = ctx.pick((100, 1000), (20,)), ctx.pick(20.0, 4.0)
    settings, concurrency = ctx.settings("load"), max(sizes) + 100
    heartbeat = settings.heartbeat_seconds
    out = section(
        __doc__,
        sizes=", ".join(f"{n:,}" for n in sizes),
        interval=LoadBench.interval,
        concurrency=concurrency,
        window=seconds,
    )
    ctx.app("load", settings)
    steps = []
    with ctx.fleet() as fleet:
        ctx.workers(fleet, ["load1"], settings, concurrency=concurrency)
        for k, count in enumerate(sizes):
            for i in range(sizes[k - 1] if k else 0, count):
                LoadBench.start(f"load-{i}")
            wait_running(ctx, LoadBench.kind, count, timeout=120)
            # every one has ticked since, and the starts' counters have reached pg_stat_user_tables
            time.sleep(max(LoadBench.interval + 1, STATS_LAG))
            steps.append({"trackers": count, **window(ctx, seconds)})
        problems = fleet.problems()
    raw = raw_checkpoint_rate(ctx, LoadBench.kind, seconds=3.0)
    out.data = {
        "steps": steps,
        "raw_checkpoint_per_s": raw,
        "heartbeat": heartbeat,
        "worker_log_problems": problems,
    }
    for step in steps:
        n = step["trackers"]
        lease, checkpoints, total, goal = summary(step["rates"], heartbeat, step["seconds"])
        out.rows.append(
            [
                f"{n:,} trackers (interval {LoadBench.interval:g} s) on 1 worker process, heartbeat"
                f" {heartbeat:g} s, {step['seconds']:.0f} s window",
                f"lease renewals {lease:.2f}/s per worker process (goal about 1/heartbeat ="
                f" {1 / heartbeat:g}/s: {goal}); checkpoints {checkpoints:,.1f}/s; all writes {total:,.1f}/s",
                f"one heartbeat per tracker would be {n / heartbeat:,.0f}/s; bare psycopg checkpoint UPDATE"
                f" on 1 connection {raw:,.0f}/s",
                f"all writes = {total / raw:.1%} of 1 connection's rate",
            ]
        )
    by_table = [
        [f"{s['trackers']:,}", f"{s['seconds']:.1f} s", t, *(f"{ops[k]:.2f}" for k in ("ins", "upd", "del"))]
        for s in steps
        for t, ops in sorted(s["rates"].items())
    ]
    columns = ("live trackers", "window", "table", "inserts/s", "updates/s", "deletes/s")
    out.blocks.append("Writes per second, by table (`pg_stat_user_tables`):\n\n" + table(columns, by_table))
    return out
