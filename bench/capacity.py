"""h. Capacity: live trackers in one gevent worker process (PostgreSQL + Redis).

{sizes} trackers (interval {interval:g} s), each size on a fresh `celery -A tracking worker -P
gevent -c <N+100>` process on a queue of its own; heartbeat {heartbeat_seconds:g} s, lease
{lease_seconds:g} s, sweep {sweep_seconds:g} s, start grace {start_grace_seconds:g} s (a large
start-up must not outlast a 3 s lease). Idle RSS: after it registered its lease and ran one task
(which also says which wait function psycopg uses in it), and 1 s of rest. Then `start()` of N IDs
from {threads} threads of the benchmark's process; every 0.25 s the registry is counted (`running`
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
queued: the stale copy is dropped at its claim). Worker CPU to running: the worker's process group's
CPU seconds from the first start() to all running.

Baseline (same run, same worker settings): before each size, a fresh worker started exactly so (`-P
gevent -c <N+100>`, the same app, configuration and timings) runs N bare Celery tasks that say they
run (a Redis INCR) and then sleep, sent by `send_task` from the same {threads} threads; all running
is the counter reaching N, measured from the first send. Ratio: tracking's all running over bare
Celery's. From a full queue (the worker's fill alone, without the producer): N messages queued
before a fresh worker, started as above, takes them; seconds from the first task running (its own
record; a tracker's first claim) to all running (sampled every 0.1 s), bare Celery's sleeping tasks
and trackers each on a worker of their own. Goals at 10,000: all running within 1.5x bare Celery's
time (issue 13), under 50 KB per tracker. Options: `BENCH_CAPACITY_TRACKERS` (sizes,
comma-separated), `BENCH_CAPACITY_WINDOW` (seconds), `BENCH_CAPACITY_BASELINE` and
`BENCH_CAPACITY_QUEUED` (`yes` or `no`).
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from typing import Any

import psycopg

from bench import machine, plots
from bench.context import Context
from bench.core import Section, counts, secs, section
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
FIRST_CLAIM = "SELECT extract(epoch FROM min(claimed_at)) FROM tracking_trackers WHERE kind = %s"
SQL = {
    "running": RUNNING,
    "connections": "SELECT count(*) FROM pg_stat_activity WHERE application_name IN (%s, %s)",
    "ages": "SELECT json_build_array(percentile_cont(0.99) WITHIN GROUP (ORDER BY a), max(a)) FROM (SELECT"
    " extract(epoch FROM clock_timestamp() - checkpoint_at) AS a FROM tracking_trackers WHERE kind = %s"
    " AND status = 'running') AS ages",
    "events": "SELECT coalesce(json_object_agg(event, n), '{}') FROM (SELECT event, count(*) AS n FROM"
    " tracking_events WHERE kind = %s AND event NOT IN ('started', 'running') GROUP BY event) AS e",
}


#: issue 13: a gevent worker fills with live trackers within this factor of bare Celery's sleeping tasks
GOAL_RATIO = 1.5


def bare(ctx: Context, count: int) -> dict[str, Any]:
    """Bare Celery on a worker started as the trackers' is: ``count`` sleeping tasks, to running."""
    settings = ctx.settings(f"bare{count}", **TIMING)
    app = ctx.app(f"bare{count}", settings)
    key = f"{ctx.redis_prefix}bare:{count}:running"
    with ctx.fleet() as fleet:
        (worker,) = ctx.workers(fleet, [f"bare{count}"], settings, pool="gevent", concurrency=count + 100)
        try:
            ask(app, "bench.driver_info", str(settings.queue), ctx.redis, ctx.redis_prefix, timeout=30)
            time.sleep(1.0)
            rss_idle, cpu0 = machine.group_usage(worker.pid)
            timeout, t0 = max(120.0, count * 0.06), time.monotonic()

            def send(_i: int) -> None:
                app.send_task("bench.sleep", args=[key, 900.0], queue=str(settings.queue), serializer="json")

            def running() -> int:
                worker.check()
                return int(ctx.redis.get(key) or 0)

            with concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="bench-send") as pool:
                list(pool.map(send, range(count)))
            sends_s = time.monotonic() - t0
            wait_until(lambda: running() >= count, timeout, interval=0.1, what=f"{count} sleeping tasks")
            to_running = time.monotonic() - t0
            rss_live, cpu1 = machine.group_usage(worker.pid)
        finally:
            if worker.alive():
                worker.kill()
            ctx.redis.delete(key)
    return {
        "tasks": count, "sends_s": sends_s, "to_running_s": to_running, "cpu_s": cpu1 - cpu0,
        "rss_per_task_kib": (rss_live - rss_idle) / count,
    }  # fmt: skip


def queued(ctx: Context, count: int) -> dict[str, float]:
    """From a full queue: ``count`` messages queued before a fresh worker starts, bare Celery's
    sleeping tasks and then trackers; seconds from the first one running (by the wall clock: the
    first task's own record, the first claim's ``claimed_at``) to all running (sampled every 0.1 s)."""
    return {what: _fill(ctx, what, count) for what in ("bare", "tracking")}


def _fill(ctx: Context, what: str, count: int) -> float:
    settings = ctx.settings(f"queued-{what}{count}", **TIMING)
    app, queue = ctx.app(f"queued-{what}{count}", settings), str(settings.queue)
    key, kind = f"{ctx.redis_prefix}queued:{count}:running", CapacityBench.kind
    ctx.pg.truncate()

    def send(i: int) -> None:
        if what == "bare":
            app.send_task("bench.sleep", args=[key, 900.0], queue=queue, serializer="json")
        else:
            CapacityBench.start(f"queued{count}-{i}")

    with concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="bench-queue") as pool:
        list(pool.map(send, range(count)))
    with ctx.fleet() as fleet:
        (worker,) = ctx.workers(fleet, [f"q{what}{count}"], settings, pool="gevent", concurrency=count + 100)

        sampler = psycopg.connect(ctx.pg.conninfo, autocommit=True)  # one connection, not one a sample
        ctx.on_cleanup(sampler.close)

        def running() -> int:
            worker.check()
            if what == "bare":
                return int(ctx.redis.get(key) or 0)
            return int(sampler.execute(RUNNING, (kind,)).fetchone()[0])  # type: ignore[index]

        try:
            wait_until(lambda: running() >= count, max(120.0, count * 0.06), 0.1, f"{count} {what} running")
            done = time.time()
            if what == "bare":
                return done - float(ctx.redis.get(f"{key}:first") or done)
            return done - float(ctx.scalar(FIRST_CLAIM, kind) or done)
        finally:
            if worker.alive():
                worker.kill()
            ctx.redis.delete(key, f"{key}:first")
            ctx.pg.truncate()


def step(ctx: Context, worker: Worker, app: Any, queue: str, count: int, seconds: float) -> dict[str, Any]:
    """One size, on a registered worker: to running, connections, writes, RSS."""
    driver = json.loads(ask(app, "bench.driver_info", queue, ctx.redis, ctx.redis_prefix, timeout=30))
    time.sleep(1.0)  # a short rest before the idle reading
    (rss_idle, cpu0), timeout = machine.group_usage(worker.pid), max(120.0, count * 0.06)
    kind, timeline = CapacityBench.kind, []
    names = (f"tracking-{worker.pid}", f"tracking-{worker.pid}-listen")  # tracking names its connections
    t0 = time.monotonic()

    sampler = psycopg.connect(ctx.pg.conninfo, autocommit=True)  # one connection, not one a sample
    ctx.on_cleanup(sampler.close)

    def sample() -> int:
        worker.check()
        running = sampler.execute(SQL["running"], (kind,)).fetchone()[0]  # type: ignore[index]
        conns = sampler.execute(SQL["connections"], names).fetchone()[0]  # type: ignore[index]
        timeline.append((time.monotonic() - t0, running, conns))
        return int(running)

    with concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="bench-start") as pool:
        futures = [pool.submit(CapacityBench.start, f"cap{count}-{i}") for i in range(count)]
        wait_until(lambda: sample() < 0 or all(f.done() for f in futures), timeout, 0.25, "start() calls")
        for f in futures:
            f.result()  # sampled meanwhile: the timeline begins at the first start()
    starts_s = time.monotonic() - t0
    to_running: float | None = None
    cpu_s: float | None = None
    try:
        wait_until(lambda: sample() >= count, timeout, interval=0.25, what=f"{count} trackers running")
        to_running = time.monotonic() - t0
        cpu_s = machine.group_usage(worker.pid)[1] - cpu0
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
        "concurrency": worker.concurrency, "cpu_to_running_s": cpu_s,
    }  # fmt: skip


def one_size(
    ctx: Context, count: int, seconds: float, logs: dict[int, dict[str, int]], baseline: bool
) -> dict[str, Any]:
    base = bare(ctx, count) if baseline else None
    fills = queued(ctx, count) if ctx.option("capacity", "queued", "yes") == "yes" else None
    settings = ctx.settings(f"cap{count}", **TIMING)
    app = ctx.app(f"cap{count}", settings)
    ctx.pg.truncate()
    with ctx.fleet() as fleet:
        (worker,) = ctx.workers(fleet, [f"cap{count}"], settings, pool="gevent", concurrency=count + 100)
        try:
            return {
                **step(ctx, worker, app, str(settings.queue), count, seconds),
                "bare": base,
                "queued": fills,
            }
        finally:
            if worker.alive():
                worker.kill()  # not a warm shutdown, which would republish every tracker
            ctx.pg.truncate()
            logs[count] = {what: worker.log_text().count(mark) for what, mark in LOG_MARKS.items()}


def row(
    out: Section, st: dict[str, Any], interval: float, heartbeat: float, log: dict[str, int]
) -> list[str]:
    n, done = st["trackers"], st["to_running_s"]
    lease, checkpoints, total, goal = summary(st["writes"]["rates"], heartbeat, st["writes"]["seconds"])
    per_kb = st["rss_per_tracker_kib"] * 1.024
    base = st.get("bare")
    ratio = done / base["to_running_s"] if done is not None and base else None
    goals, versus = "", "-"
    if base:
        versus = f"{secs(base['to_running_s'])} (sends {secs(base['sends_s'])}, CPU {secs(base['cpu_s'])})"
    if n >= 10_000:
        measured = f"{secs(done)} against {secs(base['to_running_s'])}" if base and done is not None else "-"
        in_time = out.goal(
            f"{n:,} live trackers in one gevent process all running within {GOAL_RATIO:g}x bare Celery",
            f"{measured}: {ratio:.2f}x" if ratio is not None else f"{measured}: not all running",
            ratio is not None and ratio <= GOAL_RATIO,
        )
        small = out.goal(f"{n:,} live trackers: under 50 KB each", f"{per_kb:.1f} KB RSS each", per_kb < 50)
        goals = f" (goals at 10,000: within {GOAL_RATIO:g}x bare Celery {in_time}, under 50 KB {small})"
    running = f"NOT within {st['timeout_s']:.0f} s ({st['running_at_end']:,} running)"
    cpu, fills = st.get("cpu_to_running_s"), st.get("queued")
    full = "-"
    if fills and {"bare", "tracking"} <= set(fills):
        fill_ratio = fills["tracking"] / max(fills["bare"], 1e-3)
        full = f"{secs(fills['tracking'])} / {secs(fills['bare'])} = {fill_ratio:.2f}x"
    return [
        f"{n:,}", secs(st["starts_s"]), secs(done) if done is not None else running, versus,
        f"{ratio:.2f}x" if ratio is not None else "-", full, secs(cpu),
        f"{n / done:,.0f}/s" if done else "-", f"{st['rss_idle_kib'] / 1024:.0f} MiB",
        f"{st['rss_live_kib'] / 1024:.0f} MiB", f"{per_kb:.1f} KB{goals}",
        f"{st['peak_connections']} / {st['steady_connections']}",
        f"{lease:.2f} (1/heartbeat = {1 / heartbeat:g}: {goal})",
        f"{checkpoints:,.1f} ({n / interval:,.1f}, {checkpoints / (n / interval):.0%})", f"{total:,.1f}",
        f"{n / heartbeat:,.0f}", f"{st['age_p99_s']:.1f} s / {st['age_max_s']:.1f} s",
        counts(st["other_events"]), counts(log, "clean"),
    ]  # fmt: skip


def run(ctx: Context) -> Section:
    sizes_text = ctx.option("capacity", "trackers", ctx.pick("1000,5000,10000", "50"))
    sizes = tuple(int(n) for n in sizes_text.split(",") if n.strip())
    seconds = ctx.option("capacity", "window", ctx.pick(30.0, 4.0))
    baseline = ctx.option("capacity", "baseline", "yes") == "yes"
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
        out.attempt(f"{n:,} trackers", one_size, ctx, n, seconds, logs, baseline) or {"trackers": n}
        for n in sizes
    ]
    out.data = {"steps": steps, "interval": interval, "timing": TIMING, "worker_log_counts": logs}
    out.columns = (
        "trackers", f"start() calls ({THREADS} threads)", "all running",
        "bare Celery: sleeping tasks all running", "ratio",
        "from a full queue: first to all running, tracking / bare Celery", "worker CPU to running",
        "to running", "RSS idle",
        "RSS live", "RSS per tracker", "registry connections peak / steady", "lease renewals/s",
        "checkpoints/s (one per interval)", "all writes/s", "one heartbeat per tracker would add /s",
        "checkpoint age p99 / max", "other events", "worker log",
    )  # fmt: skip
    for st in steps:
        log = logs.get(st["trackers"], {})
        out.rows.append(
            row(out, st, interval, TIMING["heartbeat_seconds"], log)
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
        based = [s for s in done if s.get("bare")]
        if based:
            bare_s = [s["bare"]["to_running_s"] for s in based]
            lines.append(([s["trackers"] for s in based], bare_s, "bare Celery sleeping tasks", "^-"))
            goal = [t * GOAL_RATIO for t in bare_s]
            lines.append(([s["trackers"] for s in based], goal, f"goal: {GOAL_RATIO:g}x bare Celery", ":"))
        plots.chart(left, lines, "time to running", x, "seconds from the first start()")
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
