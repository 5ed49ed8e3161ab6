"""h. Capacity: live trackers in one gevent worker process (PostgreSQL + Redis).

{sizes} trackers (interval {interval:g} s), each size on a fresh `celery -A tracking worker -P
gevent -c <N+100>` process on a queue of its own; heartbeat {heartbeat_seconds:g} s, lease
{lease_seconds:g} s, sweep {sweep_seconds:g} s, start grace {start_grace_seconds:g} s (a large
start-up must not outlast a 3 s lease). Idle RSS: after it registered its lease and ran one task
(which also says which wait function psycopg uses in it), and 1 s of rest. Then `start()` of N IDs
from {threads} threads of the benchmark's process; every 0.5 s the registry is counted (`running`
with a checkpoint) and the worker's connections (`pg_stat_activity`, by the application name
tracking gives them). Once all run, 11 s for the table counters to settle, then writes per second
over a {window:g} s window (`pg_stat_user_tables`, as in g.) and RSS (the max of a reading before
and after it): VmRSS of every process in the worker's process group. RSS per tracker = (RSS live -
RSS idle) / N; KB = 1000 bytes. The worker is SIGKILLed afterwards (a warm shutdown would hand
every tracker off), and the registry emptied. Checkpoint age: now minus each running tracker's last
checkpoint at the end of the window; a worker that keeps up has none much older than one interval.
A size whose trackers are not all running within max(120 s, N x 0.06 s) is reported as such, with
the registry's other events (crashes, lost workers, restarts) and the worker log's count of pool
checkout timeouts, lost leases and crashes. `republished` events are pending entries not claimed
within the start grace, published again by the worker's own sweep (duplicates of messages still
queued: the stale copy is dropped at its claim). Goals at 10,000: all running within 60 s, under
50 KB per tracker.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from typing import Any

from bench import machine, plots
from bench.context import Context
from bench.core import Section, counts, met, secs, section
from bench.replies import ask
from bench.services import Worker, wait_until
from bench.trackers import CapacityBench
from bench.writes import RUNNING, STATS_LAG, summary, window

TIMING: dict[str, Any] = {
    "heartbeat_seconds": 2.0,
    "lease_seconds": 10.0,
    "sweep_seconds": 5.0,
    "start_grace_seconds": 60.0,
}
THREADS = 8
LOG_MARKS = {
    "pool checkout timeouts (QueuePool limit)": "QueuePool limit",
    "lease declared lost": "was declared lost",
    "trackers crashed": " crashed: ",
    "registry unavailable": "registry unavailable",
}
SQL = {
    "running": RUNNING,
    "connections": "SELECT count(*) FROM pg_stat_activity WHERE application_name IN (%s, %s)",
    "ages": "SELECT json_build_array(percentile_cont(0.99) WITHIN GROUP (ORDER BY a), max(a)) FROM (SELECT"
    " extract(epoch FROM clock_timestamp() - checkpoint_at) AS a FROM tracking_trackers WHERE kind = %s"
    " AND status = 'running') AS ages",
    "events": "SELECT coalesce(json_object_agg(event, n), '{}') FROM (SELECT event, count(*) AS n FROM"
    " tracking_events WHERE kind = %s AND event NOT IN ('started', 'running') GROUP BY event) AS e",
}


def step(ctx: Context, worker: Worker, app: Any, queue: str, count: int, seconds: float) -> dict[str, Any]:
    """One size, on a registered worker: to running, connections, writes, RSS."""
    driver = json.loads(ask(app, "bench.driver_info", queue, ctx.redis, ctx.redis_prefix, timeout=30))
    time.sleep(1.0)  # a short rest before the idle reading
    rss_idle, timeout = machine.group_usage(worker.pid)[0], max(120.0, count * 0.06)
    kind, timeline = CapacityBench.kind, []
    names = (f"tracking-{worker.pid}", f"tracking-{worker.pid}-listen")  # tracking names its connections
    t0 = time.monotonic()

    def sample() -> int:
        worker.check()
        running, conns = ctx.scalar(SQL["running"], kind), ctx.scalar(SQL["connections"], *names)
        timeline.append((time.monotonic() - t0, running, conns))
        return int(running)

    with concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="bench-start") as pool:
        futures = [pool.submit(CapacityBench.start, f"cap{count}-{i}") for i in range(count)]
        wait_until(lambda: sample() < 0 or all(f.done() for f in futures), timeout, 0.5, "start() calls")
        for f in futures:
            f.result()  # sampled meanwhile: the timeline begins at the first start()
    starts_s = time.monotonic() - t0
    to_running: float | None = None
    try:
        wait_until(lambda: sample() >= count, timeout, interval=0.5, what=f"{count} trackers running")
        to_running = time.monotonic() - t0
    except TimeoutError:  # a figure too: how far it got, and what went wrong (events, log)
        pass
    running_at_end = sample()
    time.sleep(STATS_LAG)  # the starts' table counters reach pg_stat_user_tables
    rss = [machine.group_usage(worker.pid)[0], 0]
    writes = window(ctx, seconds)
    rss[1] = machine.group_usage(worker.pid)[0]
    p99_age, max_age = ctx.scalar(SQL["ages"], kind)
    return {
        "trackers": count, "starts_s": starts_s, "to_running_s": to_running, "timeout_s": timeout,
        "running_at_end": running_at_end, "timeline": timeline, "rss_idle_kib": rss_idle,
        "rss_live_kib": max(rss), "rss_per_tracker_kib": (max(rss) - rss_idle) / count,
        "peak_connections": max(t[2] for t in timeline), "writes": writes,
        "steady_connections": ctx.scalar(SQL["connections"], *names), "age_p99_s": p99_age or 0.0,
        "age_max_s": max_age or 0.0, "other_events": ctx.scalar(SQL["events"], kind), "driver": driver,
        "concurrency": worker.concurrency,
    }  # fmt: skip


def one_size(ctx: Context, count: int, seconds: float, logs: dict[int, dict[str, int]]) -> dict[str, Any]:
    settings = ctx.settings(f"cap{count}", **TIMING)
    app = ctx.app(f"cap{count}", settings)
    ctx.pg.truncate()
    with ctx.fleet() as fleet:
        (worker,) = ctx.workers(fleet, [f"cap{count}"], settings, pool="gevent", concurrency=count + 100)
        try:
            return step(ctx, worker, app, str(settings.queue), count, seconds)
        finally:
            if worker.alive():
                worker.kill()  # not a warm shutdown, which would republish every tracker
            ctx.pg.truncate()
            logs[count] = {what: worker.log_text().count(mark) for what, mark in LOG_MARKS.items()}


def row(st: dict[str, Any], interval: float, heartbeat: float, log: dict[str, int]) -> list[str]:
    n, done = st["trackers"], st["to_running_s"]
    lease, checkpoints, total, goal = summary(st["writes"]["rates"], heartbeat, st["writes"]["seconds"])
    per_kb = st["rss_per_tracker_kib"] * 1.024
    goals = ""
    if n >= 10_000:
        in_time = met(done is not None and done <= 60)
        goals = f" (goals at 10,000: within 60 s {in_time}, under 50 KB {met(per_kb < 50)})"
    running = f"NOT within {st['timeout_s']:.0f} s ({st['running_at_end']:,} running)"
    return [
        f"{n:,}", secs(st["starts_s"]), secs(done) if done is not None else running,
        f"{n / done:,.0f}/s" if done else "-", f"{st['rss_idle_kib'] / 1024:.0f} MiB",
        f"{st['rss_live_kib'] / 1024:.0f} MiB", f"{per_kb:.1f} KB{goals}",
        f"{st['peak_connections']} / {st['steady_connections']}",
        f"{lease:.2f} (1/heartbeat = {1 / heartbeat:g}: {goal})",
        f"{checkpoints:,.1f} ({n / interval:,.1f}, {checkpoints / (n / interval):.0%})", f"{total:,.1f}",
        f"{n / heartbeat:,.0f}", f"{st['age_p99_s']:.1f} s / {st['age_max_s']:.1f} s",
        counts(st["other_events"]), counts(log, "clean"),
    ]  # fmt: skip


def run(ctx: Context) -> Section:
    sizes, seconds = ctx.pick((1000, 5000, 10_000), (50,)), ctx.pick(30.0, 4.0)
    interval = CapacityBench.interval
    out = section(
        __doc__,
        sizes=", ".join(f"{n:,}" for n in sizes),
        interval=interval,
        threads=THREADS,
        window=seconds,
        **TIMING,
    )
    logs: dict[int, dict[str, int]] = {}
    steps = [
        out.attempt(f"{n:,} trackers", one_size, ctx, n, seconds, logs) or {"trackers": n} for n in sizes
    ]
    out.data = {"steps": steps, "interval": interval, "timing": TIMING, "worker_log_counts": logs}
    out.columns = (
        "trackers", f"start() calls ({THREADS} threads)", "all running", "to running", "RSS idle",
        "RSS live", "RSS per tracker", "registry connections peak / steady", "lease renewals/s",
        "checkpoints/s (one per interval)", "all writes/s", "one heartbeat per tracker would add /s",
        "checkpoint age p99 / max", "other events", "worker log",
    )  # fmt: skip
    for st in steps:
        log = logs.get(st["trackers"], {})
        out.rows.append(
            row(st, interval, TIMING["heartbeat_seconds"], log)
            if "writes" in st
            else [f"{st['trackers']:,}", "FAILED"]
        )
    drivers = sorted({f"`{st['driver']['wait_function']}`" for st in steps if "driver" in st})
    out.blocks.append(
        f"psycopg's wait function in the worker (asked by a task): {', '.join(drivers) or '-'}."
    )
    done = [st for st in steps if "writes" in st]

    def paint(left: Any, middle: Any, right: Any) -> None:
        ran, n, x = [s for s in done if s["to_running_s"]], [s["trackers"] for s in done], "live trackers"
        lines: list[plots.Line] = [
            ([s["trackers"] for s in ran], [s["to_running_s"] for s in ran], "all running", "o-")
        ]
        lines.append((n, [s["starts_s"] for s in done], "start() calls alone", "s--"))
        plots.chart(left, lines, "time to running", x, "seconds from the first start()", goal=60)
        per_kb = [(n, [s["rss_per_tracker_kib"] * 1.024 for s in done], "RSS per tracker", "o-")]
        plots.chart(middle, per_kb, "worker RSS per live tracker", x, "KB (1000 bytes)", goal=50)
        timelines = [
            ([t[0] for t in s["timeline"]], [t[1] for t in s["timeline"]], f"N = {s['trackers']:,}", "-")
            for s in done
        ]
        plots.chart(
            right, timelines, "running, over time", "seconds from the first start()", "trackers running"
        )

    if done:
        title = "h. capacity: one celery -A tracking worker -P gevent process, PostgreSQL + Redis"
        plots.draw(ctx, out, "capacity.png", title, paint, cols=3)
    return out
