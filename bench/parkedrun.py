"""k.'s measurements: one window of parked ticks, and plain Celery's baselines on the same kind of
workers and the same Redis."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from celery import Celery
from kombu.transport.redis import Channel
from psycopg.types.json import Jsonb

from bench import machine, pgstats
from bench.context import Context
from bench.core import spread
from bench.services import REDIS_URL, Worker, wait_until
from bench.trackers import ParkedBench

#: a tick is on time if it comes within this many seconds of its scheduled time (the goal's p99)
ON_TIME = 2.0
INSERT = """
INSERT INTO tracking_trackers (kind, transaction_id, status, epoch, task_id, args, state, policy,
    restart_times, started_at, checkpoint_at, due_at, tick_at)
SELECT %(kind)s, 'parked-' || g, 'parked', 1, gen_random_uuid()::text, '{}'::jsonb,
    jsonb_build_object('due', %(base)s::float8 + g * %(step)s::float8, 'ticks', 0), %(policy)s,
    '[]'::jsonb, now(), now(), to_timestamp(%(base)s::float8 + g * %(step)s::float8),
    to_timestamp(%(base)s::float8 + g * %(step)s::float8)
FROM generate_series(%(lo)s::int, %(hi)s::int - 1) AS g
"""
#: running (slots in use), pending (woken, not claimed), parked and overdue
STATUS = """SELECT count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE status = 'pending'),
    count(*) FILTER (WHERE status = 'parked' AND due_at < now() - make_interval(secs => %s))
FROM tracking_trackers"""
#: of the entries whose scheduled tick is before a time: not run yet, pending, overdue parked, and
#: how far behind the oldest is
BACKLOG = """SELECT count(*) FILTER (WHERE status IN ('parked', 'pending', 'running')),
    count(*) FILTER (WHERE status = 'pending'),
    count(*) FILTER (WHERE status = 'parked' AND due_at < now() - make_interval(secs => %s)),
    coalesce(extract(epoch FROM now()) - extract(epoch FROM min(tick_at)), 0)::float8
FROM tracking_trackers WHERE kind = %s AND tick_at < to_timestamp(%s)"""


def insert(
    ctx: Context, count: int, base: float, interval: float, batch: int = 10_000, cls: Any = ParkedBench
) -> float:
    """``count`` parked entries of ``cls`` whose first ticks are ``base + i * interval / count``, in
    batches committed in order of due time; the seconds it took."""
    began = time.monotonic()
    policy = Jsonb(cls.policy.to_json())
    args = {"kind": cls.kind, "base": base, "step": interval / count, "policy": policy}
    with psycopg.connect(ctx.pg.conninfo, autocommit=True) as conn:
        for lo in range(0, count, batch):
            conn.execute(INSERT, {**args, "lo": lo, "hi": min(lo + batch, count)})
        conn.execute("ANALYZE tracking_trackers")
    return time.monotonic() - began


def sleep_until(deadline: float, workers: Sequence[Worker], every: Callable[[], Any] = lambda: None) -> None:
    """Sleep through a window (wall clock), checking each second that the workers live."""
    for _second in range(int(max(0.0, deadline - time.time())) + 2):
        every()
        if time.time() >= deadline:
            return
        for worker in workers:
            worker.check()
        time.sleep(min(1.0, max(0.0, deadline - time.time())))


def usage(workers: Sequence[Worker], which: int) -> dict[str, float]:
    """RSS KiB (0) or CPU seconds (1) of each worker's process group."""
    return {w.name: machine.group_usage(w.pid)[which] for w in workers}


def ticks(
    rows: Sequence[Any], base: float, seconds: float, read_at: float, interval: float
) -> dict[str, Any]:
    """From the states' logs of ``[due, scheduled, ticked]``: the ticks delivered in the window, and
    the lateness of those scheduled in it (a tick not run by the read counts at its age); lost: the
    ticks of the fixed schedule (first due + k x interval) in the window that never ran by the read."""
    end = base + seconds
    delivered, late, late_due, undelivered, lost = [], [], [], [], 0
    for state, tick_at in rows:
        s = state or {}
        first = float(s.get("due", 0.0)) - int(s.get("ticks", 0)) * interval
        # the fixed schedule's ticks in the window, their due times rounded as the log rounds them:
        # else a tick due less than half a millisecond before the end counted as lost though it ran
        fixed = int((end - first) // interval) + 2 if first < end else 0
        expected = sum(1 for k in range(fixed) if round(first + k * interval, 3) < end)
        lost += max(0, expected - sum(1 for due, _s, _t in s.get("log", []) if due < end))
        for due, sched, ticked in s.get("log", []):
            if base - 0.001 <= ticked < end:
                delivered.append((ticked, ticked - sched))
            if base - 0.001 <= sched < end:
                late.append(ticked - sched)
                late_due.append(ticked - due)
        if tick_at is not None and float(tick_at) < end:
            undelivered.append(read_at - float(tick_at))
    buckets = [0] * max(1, int(seconds))
    for ticked, _late in delivered:
        buckets[min(int(ticked - base), len(buckets) - 1)] += 1
    tenth = buckets[-max(1, len(buckets) // 10) :]
    return {
        "ticks_per_s": len(delivered) / seconds,
        "on_time_per_s": sum(x < ON_TIME for _t, x in delivered) / seconds,
        "by_second": spread(buckets),
        "last_tenth_per_s": sum(tenth) / len(tenth),
        "late": spread(late),
        "late_due": spread(late_due),
        "undelivered": len(undelivered),
        "late_with_undelivered": spread(late + undelivered),
        "on_time_share": sum(x < ON_TIME for x in late) / len(late) if late else float("nan"),
        "lost": lost,
    }


def window(ctx: Context, workers: Sequence[Worker], trackers: int, opts: dict[str, Any]) -> dict[str, Any]:
    """Insert, wait for the first due tick, measure one window, drain (bounded), read the states."""
    seconds, kind = opts["window"], ParkedBench.kind
    rss_idle = usage(workers, 0)
    period = 1.0 if trackers <= 100_000 else 5.0  # its count(*) is a scan of the whole registry
    with machine.Sampler(lambda: (ctx.row(STATUS, ON_TIME), usage(workers, 0)), period) as sampler:
        base = time.time() + opts["lead"]
        inserted = insert(ctx, trackers, base, opts["interval"])
        print(f"    inserted {trackers:,} parked entries in {inserted:.1f} s", flush=True)
        size0 = pgstats.sizes(ctx.pg.conninfo)
        sleep_until(base, workers)
        cpu0, host0, pg0, msg0 = (
            usage(workers, 1),
            machine.cpu_times(),
            pgstats.counters(ctx.pg.conninfo),
            tasks(ctx),
        )
        sleep_until(base + seconds, workers)
        cpu1, host1, pg1, msg1 = (
            usage(workers, 1),
            machine.cpu_times(),
            pgstats.counters(ctx.pg.conninfo),
            tasks(ctx),
        )
        size1 = pgstats.sizes(ctx.pg.conninfo)
    at_end = ctx.row(BACKLOG, ON_TIME, kind, base + seconds)
    drained: float | None = None
    try:  # until every tick scheduled in the window has run (bounded)
        wait_until(
            lambda: ctx.row(BACKLOG, ON_TIME, kind, base + seconds)[0] == 0, opts["drain"], 1.0, "drain"
        )
        drained = time.time() - base - seconds
    except TimeoutError:
        pass
    left = ctx.row(BACKLOG, ON_TIME, kind, base + seconds)[0]
    read_at = time.time()
    with psycopg.connect(ctx.pg.conninfo, autocommit=True) as conn:
        sql = "SELECT state, extract(epoch FROM tick_at) FROM tracking_trackers WHERE kind = %s"
        rows = conn.execute(sql, (kind,)).fetchall()
    counts = sampler.between(base, base + seconds)
    status = [list(col) for col in zip(*(c[0] for c in counts), strict=True)] or [[], [], []]
    found = ticks(rows, base, seconds, read_at, opts["interval"])
    ran = round(found["ticks_per_s"] * seconds)
    messages = {k: msg1.get(k, 0) - msg0.get(k, 0) for k in msg1}
    return {
        **found,
        "pg_per_tick": pgstats.per_tick(pg0, pg1, ran),
        "pg_counted": sorted(pg1),
        "size_start": size0,
        "size_end": size1,
        "messages": messages,
        "messages_per_tick": sum(messages.values()) / ran if ran else float("nan"),
        "sampler_period": period,
        "insert_s": inserted,
        "at_end": {"overdue_parked": at_end[2], "pending": at_end[1], "behind_s": at_end[3]},
        "not_run_after_drain": left,
        "drained_in_s": drained,
        **{
            name: spread(values)
            for name, values in zip(("running", "pending", "overdue"), status, strict=True)
        },
        "rss_idle_kib": rss_idle,
        "rss_max_kib": {w.name: max((c[1][w.name] for c in counts), default=0) for w in workers},
        "worker_cpu_cores": {n: (cpu1[n] - cpu0[n]) / seconds for n in cpu1},
        "host_cpu_busy": (host1[0] - host0[0]) / max(1, host1[1] - host0[1]),
    }


def tasks(ctx: Context) -> dict[str, int]:
    """The task messages the workers ran so far, by task name (``bench.trackers`` counts them)."""
    raw: dict[Any, Any] = ctx.redis.hgetall(f"{ctx.redis_prefix}tasks")
    return {k.decode(): int(v) for k, v in raw.items()}


def celery_baselines(ctx: Context, start: Any, trackers: int, opts: dict[str, Any]) -> dict[str, Any]:
    """Fresh workers of the same kind (``start(prefix)`` starts and registers them): the rate of a
    task doing one Redis INCR, queued before they start; then N tasks sent with an ETA."""
    app = Celery("bench-parked", set_as_current=False)
    transport = {"global_keyprefix": ctx.redis_prefix}
    app.conf.update(broker_url=REDIS_URL, broker_transport_options=transport, task_serializer="json")
    ctx.on_cleanup(app.pool.force_close_all)
    queue, tasks, key = opts["queue"], opts["noop_tasks"], f"{ctx.redis_prefix}count:{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    for _ in range(tasks):
        app.send_task("bench.count", args=[key, tasks], queue=queue, serializer="json")
    publish_per_s = tasks / (time.monotonic() - t0)
    workers = start("plain")
    cpu0 = sum(usage(workers, 1).values())
    wait_until(lambda: ctx.redis.exists(f"{key}:last"), max(60.0, tasks / 50), 0.2, f"{tasks} tasks run")
    cpu = sum(usage(workers, 1).values()) - cpu0
    first, last = (float(ctx.redis.get(f"{key}:{k}") or 0) for k in ("first", "last"))
    noop = {"tasks": tasks, "per_s": (tasks - 1) / (last - first) if last > first else float("nan")}
    noop["cpu_ms_per_task"] = 1000.0 * cpu / tasks  # from the workers' registration to the last task
    print(f"    bare Celery: {noop['per_s']:.0f} tasks/s", flush=True)
    eta = eta_hold(ctx, app, workers, queue, trackers, opts, publish_per_s) if opts["eta"] != "no" else None
    for worker in workers:  # SIGKILL: a warm shutdown would first restore every held message
        worker.kill()
    return {"noop": noop, "eta": eta}


def eta_hold(
    ctx: Context,
    app: Celery,
    workers: Sequence[Worker],
    queue: str,
    tasks: int,
    opts: dict[str, Any],
    publish: float,
) -> dict[str, Any]:
    """N tasks with ETAs spread over one interval, the first due only after the publish and the
    reservation are over: the workers then hold every message unacknowledged. Then the lateness of
    those due in the baseline window."""
    unacked, waiting = f"{ctx.redis_prefix}{Channel.unacked_key}", f"{ctx.redis_prefix}{queue}"
    key, rss0 = f"{ctx.redis_prefix}late:{uuid.uuid4().hex[:8]}", usage(workers, 0)
    began = time.time()
    base, step = began + 1.3 * tasks / publish + 20.0, opts["interval"] / tasks
    for i in range(tasks):
        eta = base + i * step
        app.send_task(
            "bench.at", args=[key, eta], eta=datetime.fromtimestamp(eta, UTC), queue=queue, serializer="json"
        )
    publish_s, held, rss_peak = time.time() - began, [], dict(rss0)

    def sample() -> int:
        held.append(int(ctx.redis.hlen(unacked)))
        for name, rss in usage(workers, 0).items():
            rss_peak[name] = max(rss_peak[name], rss)
        return held[-1]

    def taken() -> bool:
        sample()
        return not ctx.redis.llen(waiting)

    reserved: float | None = None
    try:  # until the workers have taken every message from the queue
        reserved = publish_s + wait_until(taken, max(60.0, base - time.time()), 1.0)
    except TimeoutError:
        pass
    before_due, end = sample(), base + opts["baseline_window"]
    sleep_until(end, workers, sample)
    late = [json.loads(x) for x in ctx.redis.lrange(key, 0, -1)]
    in_window = [lt for eta, lt in late if eta < end]
    return {
        "tasks": tasks, "publish_s": publish_s, "reserved_s": reserved, "unacked_before_due": before_due,
        "unacked_max": max(held), "unacked_at_end": held[-1], "rss_before_kib": rss0,
        "rss_peak_kib": rss_peak, "window": opts["baseline_window"],
        "due_in_window": sum(1 for i in range(tasks) if base + i * step < end), "ran": len(in_window),
        "late": spread(in_window), "visibility_timeout": Channel.visibility_timeout,
    }  # fmt: skip
