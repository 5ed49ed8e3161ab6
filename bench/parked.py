"""Parked trackers: many sparse trackers served by a handful of worker slots.

    python -m bench.parked                   100,000 trackers, 5-minute interval, one interval
    python -m bench.parked --trackers 20000  a smaller registry
    python -m bench.parked --smoke           300 trackers, 5 s interval, 15 s window, 1 worker

What it measures, on PostgreSQL + Redis with real ``celery -A tracking worker -P threads`` processes:

- N registry rows of :class:`ParkedBench` (``park = True``) are bulk-inserted straight into
  ``tracking_trackers`` as ``parked``, their first ticks spread evenly over one interval, starting
  ``lead`` seconds after the insert began. The workers were started (and their wakers run) before.
- Each tick measures its own lateness (its state logs ``[due, scheduled, ticked]`` of its last
  ticks; ``time.time()`` of the same machine everywhere):
  *scheduled* is when the runtime meant to tick it (the inserted ``tick_at``, then the previous
  tick plus the interval: the runtime parks for ``interval`` after each tick), *due* is the fixed
  schedule (the first due time plus k intervals), which a tracker drifts away from by the sum of
  its earlier lateness.
- Over the window (from the first due tick, ``window`` seconds): ticks delivered per second (and
  those within 2 s of their scheduled time), lateness p50/p99/max, worker slots in use (entries
  ``running``, sampled every second), entries woken but not claimed yet (``pending``: the broker's
  backlog), parked entries overdue by more than 2 s, worker RSS and CPU. At the end of the window:
  the overdue entries and how far behind the oldest one is. Then a bounded drain, after which the
  lateness of every tick scheduled within the window is read from the states; a tick still not
  delivered counts with a lower bound (its age at the read).
- Baselines on the same broker, with fresh workers of the same kind and number: (1) the raw rate
  of a task doing one Redis INCR through those worker processes (tasks queued before the workers
  start); (2) plain Celery's way of scheduling the same ticks: N tasks sent with an ETA spread
  over the interval; how many messages Redis then holds unacknowledged in the workers (kombu's
  ``unacked`` hash), the workers' RSS while they hold them, and those tasks' lateness over a short
  window.

Every wait is bounded; cleanup (workers, database, Redis keys) runs whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python bench/parked.py``: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
import redis
from celery import Celery, shared_task
from psycopg.types.json import Jsonb

import tracking
from bench import machine, services
from bench.measure import percentile
from tracking import registry

#: the tracker's interval, read at import so that the bench and its workers agree
INTERVAL = float(os.environ.get("BENCH_PARKED_INTERVAL", "300"))
#: how many ticks each state remembers
HISTORY = 16
#: a tick is on time if it comes within this many seconds of its scheduled time (the goal's p99)
ON_TIME = 2.0
KIND = "bench_parked"
COUNT_TASK = "bench_parked.count"
AT_TASK = "bench_parked.at"


class ParkedBench(tracking.Tracker):
    """Parks between ticks; each tick logs when it was due, scheduled and delivered."""

    kind = KIND
    interval = INTERVAL
    park = True

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        due = float(state["due"])
        previous = state.get("ticked")
        # the runtime's own schedule: the inserted tick time, then the previous tick + interval
        scheduled = due if previous is None else float(previous) + self.interval
        log = list(state.get("log", []))[-(HISTORY - 1) :]
        log.append([round(due, 3), round(scheduled, 3), round(now, 3)])
        return {
            "due": due + self.interval,
            "late": round(now - due, 3),
            "ticks": int(state.get("ticks", 0)) + 1,
            "log": log,
            "ticked": time.time(),
        }


# -- the plain Celery baselines (tasks of the same worker processes) ----------------------------

_client: redis.Redis | None = None
_client_lock = threading.Lock()


def _redis() -> redis.Redis:
    global _client
    with _client_lock:
        if _client is None:
            _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])  # loopback, set by the bench
        return _client


@shared_task(name=COUNT_TASK, ignore_result=True)
def count_task(key: str, total: int) -> None:
    """One Redis INCR; the first and the last of ``total`` record when they ran."""
    now = time.time()
    client = _redis()
    done = int(client.incr(key))
    if done == 1:
        client.set(f"{key}:first", now)
    if done == total:
        client.set(f"{key}:last", time.time())


@shared_task(name=AT_TASK, ignore_result=True)
def at_task(key: str, eta: float) -> None:
    """A task sent with an ETA: records how late it ran."""
    _redis().rpush(key, json.dumps([eta, round(time.time() - eta, 4)]))


# -- helpers --------------------------------------------------------------------------------------


def postgres_cpu() -> float:
    """CPU seconds of every ``postgres`` process on the machine (the server is shared)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
            if not head.split("(", 1)[1].startswith("postgres"):
                continue
            fields = tail.split()
            total += (int(fields[11]) + int(fields[12])) / machine.CLOCK_TICKS
        except (OSError, IndexError, ValueError):
            continue
    return total


def stats(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else float("nan"),
    }


def worker_env(database_url: str, queue: str, redis_prefix: str, interval: float) -> dict[str, str]:
    """The environment of a ``celery -A tracking worker`` of this benchmark (default timings)."""
    return services.worker_env(
        {
            "TRACKING_DATABASE_URL": database_url,
            "CELERY_BROKER_URL": services.REDIS_URL,
            "TRACKING_QUEUE": queue,
            "TRACKING_IMPORTS": "bench.parked",
        },
        {
            "CELERY_CONFIG_MODULE": "bench.workerconfig",
            "BENCH_REDIS_URL": services.REDIS_URL,
            "BENCH_REDIS_PREFIX": redis_prefix,
            "BENCH_PARKED_INTERVAL": repr(float(interval)),
        },
    )


def start_workers(
    fleet: services.Fleet,
    conninfo: str | None,
    prefix: str,
    queue: str,
    env: dict[str, str],
    count: int,
    concurrency: int,
) -> list[services.Worker]:
    """Start ``count`` workers and wait (bounded) until each has registered its lease (PostgreSQL)
    or, without a registry to look at, until each answers."""
    procs = [fleet.start(f"{prefix}{k + 1}", queue, env, concurrency=concurrency) for k in range(count)]
    if conninfo is not None:

        def ready() -> bool:
            for proc in procs:
                if not proc.alive():
                    raise RuntimeError(f"worker {proc.name} exited:\n{proc.log_tail()}")
            with psycopg.connect(conninfo, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM tracking_workers WHERE status = 'alive' AND hostname LIKE ANY(%s)",
                    ([f"{p.name}@%" for p in procs],),
                ).fetchone()
            return row is not None and row[0] >= len(procs)

        services.wait_until(ready, timeout=120, interval=0.2, what=f"{count} workers registered")
    return procs


class Sampler:
    """Every second: entries running, pending and overdue; each worker group's RSS and CPU."""

    def __init__(self, conninfo: str, procs: Sequence[services.Worker], period: float = 1.0) -> None:
        self.conninfo = conninfo
        self.procs = procs
        self.period = period
        self.samples: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-parked-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        sql = (
            "SELECT (SELECT count(*) FROM tracking_trackers WHERE status = 'running'),"
            " (SELECT count(*) FROM tracking_trackers WHERE status = 'pending'),"
            " (SELECT count(*) FROM tracking_trackers WHERE status = 'parked'"
            "   AND due_at < now() - make_interval(secs => %s)),"
            " extract(epoch FROM now() - (SELECT min(due_at) FROM tracking_trackers"
            "   WHERE status = 'parked'))"
        )
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            for _round in range(10_000_000):  # bounded; ends when told
                t = time.time()
                try:
                    row = conn.execute(sql, (ON_TIME,)).fetchone()
                    assert row is not None
                    usage = {
                        p.name: machine.group_usage(p.proc.pid) for p in self.procs if p.proc is not None
                    }
                    self.samples.append(
                        {
                            "t": t,
                            "running": int(row[0]),
                            "pending": int(row[1]),
                            "overdue": int(row[2]),
                            "oldest_parked_overdue_s": float(row[3]) if row[3] is not None else None,
                            "rss_kib": {k: v[0] for k, v in usage.items()},
                            "cpu_s": {k: v[1] for k, v in usage.items()},
                        }
                    )
                except Exception as exc:  # keep sampling; say what failed
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                if self._stop.wait(max(0.0, self.period - (time.time() - t))):
                    return

    def between(self, began: float, ended: float) -> list[dict[str, Any]]:
        return [s for s in self.samples if began <= s["t"] < ended]


_INSERT = """
INSERT INTO tracking_trackers (kind, transaction_id, status, epoch, task_id, args, state, policy,
    restart_times, started_at, checkpoint_at, due_at, tick_at)
SELECT %(kind)s, 'parked-' || g, 'parked', 1, gen_random_uuid()::text, '{}'::jsonb,
    jsonb_build_object('due', %(base)s::float8 + g * %(step)s::float8, 'ticks', 0), %(policy)s,
    '[]'::jsonb, now(), now(),
    to_timestamp(%(base)s::float8 + g * %(step)s::float8),
    to_timestamp(%(base)s::float8 + g * %(step)s::float8)
FROM generate_series(%(lo)s::int, %(hi)s::int - 1) AS g
"""


def insert_parked(conninfo: str, count: int, base: float, interval: float, batch: int = 10_000) -> float:
    """Insert ``count`` parked entries whose first ticks are ``base + i * interval / count``, in
    batches committed in order of due time. Returns the seconds it took."""
    began = time.monotonic()
    policy = Jsonb(ParkedBench.policy.to_json())
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for lo in range(0, count, batch):
            conn.execute(
                _INSERT,
                {
                    "kind": KIND,
                    "base": base,
                    "step": interval / count,
                    "policy": policy,
                    "lo": lo,
                    "hi": min(lo + batch, count),
                },
            )
        conn.execute("ANALYZE tracking_trackers")
    return time.monotonic() - began


def sleep_until(deadline: float, procs: Sequence[services.Worker]) -> None:
    """Sleep through a measurement window (wall clock), checking that the workers live."""
    for _second in range(int(max(0.0, deadline - time.time())) + 2):
        left = deadline - time.time()
        if left <= 0:
            return
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"worker {proc.name} exited:\n{proc.log_tail()}")
        time.sleep(min(1.0, left))


def backlog(conn: psycopg.Connection[Any], before: float) -> dict[str, Any]:
    """Entries whose scheduled tick (``tick_at``) is before ``before`` and has not run yet."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'parked'), count(*) FILTER (WHERE status = 'pending'),"
        " count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE status = 'parked'"
        "   AND due_at < now() - make_interval(secs => %s)),"
        " extract(epoch FROM now()) - extract(epoch FROM min(tick_at)), extract(epoch FROM now())"
        " FROM tracking_trackers WHERE kind = %s AND tick_at < to_timestamp(%s)",
        (ON_TIME, KIND, before),
    ).fetchone()
    assert row is not None
    return {
        "parked": int(row[0]),
        "pending": int(row[1]),
        "running": int(row[2]),
        "overdue_parked": int(row[3]),
        "behind_s": float(row[4]) if row[4] is not None else 0.0,
        "at": float(row[5]),
    }


# -- the series -----------------------------------------------------------------------------------


def parked_series(
    pg_conninfo: str,
    database_url: str,
    redis_prefix: str,
    queue: str,
    trackers: int = 100_000,
    interval: float = 300.0,
    window: float | None = None,
    workers: int = 2,
    concurrency: int = 16,
    tmp: Path | None = None,
    *,
    lead: float = 5.0,
    drain: float | None = None,
    baseline: bool = True,
    baseline_window: float = 60.0,
    noop_tasks: int = 20_000,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the parked-trackers benchmark on an empty, migrated registry; returns its figures.

    ``redis_prefix``: the run's Redis key prefix (kombu ``global_keyprefix``); ``queue``: a queue of
    the run's own. The registry is emptied (TRUNCATE) before the baselines and at the end.
    """
    window = interval if window is None else window
    drain = min(120.0, max(10.0, window / 5)) if drain is None else drain
    if (window + drain) / interval >= HISTORY:
        raise ValueError(f"window + drain spans more than {HISTORY - 1} intervals: states forget ticks")
    own_tmp = None
    if tmp is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="tracking-bench-parked-")
        tmp = Path(own_tmp.name)
    env = worker_env(database_url, queue, redis_prefix, interval)
    result: dict[str, Any] = {
        "trackers": trackers,
        "interval": interval,
        "window": window,
        "workers": workers,
        "concurrency": concurrency,
        "slots": workers * concurrency,
        "lead": lead,
        "drain_bound": drain,
        "demand_per_s": trackers / interval,
    }
    try:
        with services.Fleet(tmp) as fleet:
            procs = start_workers(fleet, pg_conninfo, "parked", queue, env, workers, concurrency)
            idle = {p.name: machine.group_usage(p.proc.pid)[0] for p in procs if p.proc is not None}
            try:
                with Sampler(pg_conninfo, procs) as sampler:
                    result.update(
                        _ticks(pg_conninfo, procs, sampler, trackers, interval, window, lead, drain, log)
                    )
            except Exception:
                print(fleet.logs(), file=sys.stderr)
                raise
            result["rss_idle_kib"] = idle
            for proc in procs:
                proc.stop()  # warm shutdown: hands off its running trackers
            result["worker_log_problems"] = fleet.problems()
        with psycopg.connect(pg_conninfo, autocommit=True) as conn:
            result["events"] = dict(
                conn.execute("SELECT event, count(*) FROM tracking_events GROUP BY event").fetchall()
            )
            conn.execute(
                "TRUNCATE tracking_trackers, tracking_events, tracking_workers, tracking_supervisors,"
                " tracking_messages"
            )
        if baseline:
            result["baseline"] = celery_baselines(
                pg_conninfo,
                env,
                redis_prefix,
                queue,
                trackers,
                interval,
                baseline_window,
                workers,
                concurrency,
                noop_tasks,
                tmp,
                log,
            )
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()
    return result


def _ticks(
    conninfo: str,
    procs: Sequence[services.Worker],
    sampler: Sampler,
    trackers: int,
    interval: float,
    window: float,
    lead: float,
    drain: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    began = time.time()
    base = began + lead
    inserted = insert_parked(conninfo, trackers, base, interval)
    log(f"    inserted {trackers:,} parked entries in {inserted:.1f} s; first tick due {lead:.0f} s after")
    if time.time() > base:
        log("    WARNING: the insert outlasted the lead: the first ticks were due before they were visible")
    sleep_until(base, procs)
    cpu0 = {p.name: machine.group_usage(p.proc.pid)[1] for p in procs if p.proc is not None}
    host0, pg0 = machine.cpu_times(), postgres_cpu()
    end = base + window
    log(f"    window of {window:.0f} s begins")
    sleep_until(end, procs)
    cpu1 = {p.name: machine.group_usage(p.proc.pid)[1] for p in procs if p.proc is not None}
    host1, pg1 = machine.cpu_times(), postgres_cpu()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        at_end = backlog(conn, end)
        log(
            f"    window over: {at_end['overdue_parked']:,} parked entries overdue by > {ON_TIME:g} s,"
            f" {at_end['pending']:,} woken but not claimed; the oldest is {at_end['behind_s']:.1f} s behind"
        )
        # drain: until every tick scheduled within the window has run (bounded)
        drained_in: float | None = None
        drain_end = time.time() + drain
        for _second in range(int(drain) + 2):
            left = backlog(conn, end)
            if left["parked"] + left["pending"] + left["running"] == 0:
                drained_in = time.time() - end
                break
            if time.time() >= drain_end:
                break
            time.sleep(1.0)
        read_at = time.time()
        rows = conn.execute(
            "SELECT state, extract(epoch FROM tick_at), status FROM tracking_trackers WHERE kind = %s",
            (KIND,),
        ).fetchall()
    after_drain = left
    delivered_in_window: list[list[float]] = []
    late_sched: list[float] = []
    late_due: list[float] = []
    undelivered: list[float] = []
    never_ticked = 0
    for state, tick_at, _status in rows:
        entries = (state or {}).get("log", [])
        if not entries:
            never_ticked += 1
        for due, sched, ticked in entries:
            if base - 0.001 <= ticked < end:
                delivered_in_window.append([due, sched, ticked])
            if base - 0.001 <= sched < end:
                late_sched.append(ticked - sched)
                late_due.append(ticked - due)
        if tick_at is not None and float(tick_at) < end:
            undelivered.append(read_at - float(tick_at))
    in_window = sampler.between(base, end)
    on_time = sum(1 for _due, sched, ticked in delivered_in_window if ticked - sched < ON_TIME)
    per_second: dict[int, int] = {}
    for _due, _sched, ticked in delivered_in_window:
        per_second[int(ticked - base)] = per_second.get(int(ticked - base), 0) + 1
    rates = [per_second.get(s, 0) for s in range(int(window))]
    names = [p.name for p in procs]
    rss_max = {n: max((s["rss_kib"].get(n, 0) for s in in_window), default=0) for n in names}
    return {
        "insert_s": inserted,
        "base": base,
        "ticks_in_window": len(delivered_in_window),
        "ticks_per_s": len(delivered_in_window) / window,
        "on_time_per_s": on_time / window,
        "ticks_per_s_by_second": stats(rates),
        "ticks_per_s_last_tenth": (
            sum(rates[-max(1, len(rates) // 10) :]) / max(1, len(rates) // 10) if rates else float("nan")
        ),
        "late_sched": stats(late_sched),
        "late_due": stats(late_due),
        "on_time_share": (
            sum(1 for x in late_sched if x < ON_TIME) / len(late_sched) if late_sched else float("nan")
        ),
        "undelivered": len(undelivered),
        "undelivered_age": stats(undelivered),
        "late_sched_with_undelivered": stats(late_sched + undelivered),
        "never_ticked": never_ticked,
        "at_end": at_end,
        "after_drain": after_drain,
        "drained_in_s": drained_in,
        "running": stats([s["running"] for s in in_window]),
        "pending": stats([s["pending"] for s in in_window]),
        "overdue": stats([s["overdue"] for s in in_window]),
        "samples": len(in_window),
        "sampler_errors": sampler.errors[:5],
        "rss_max_kib": rss_max,
        "worker_cpu_cores": {n: (cpu1.get(n, 0.0) - cpu0.get(n, 0.0)) / window for n in names},
        "postgres_cpu_cores": (pg1 - pg0) / window,
        "host_cpu_busy": (host1[0] - host0[0]) / max(1, host1[1] - host0[1]),
    }


# -- the baselines --------------------------------------------------------------------------------


def _bench_app(redis_prefix: str) -> Celery:
    app = Celery("bench-parked", set_as_current=False)
    app.conf.update(
        broker_url=services.REDIS_URL,
        broker_transport_options={"global_keyprefix": redis_prefix},
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
    )
    return app


def celery_baselines(
    conninfo: str,
    env: dict[str, str],
    redis_prefix: str,
    queue: str,
    tasks: int,
    interval: float,
    window: float,
    workers: int,
    concurrency: int,
    noop_tasks: int,
    tmp: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Plain Celery through fresh workers of the same kind: the raw task rate, then N ETA tasks."""
    app = _bench_app(redis_prefix)
    client = redis.Redis.from_url(services.REDIS_URL)
    out: dict[str, Any] = {}
    try:
        with contextlib.closing(client), services.Fleet(tmp) as fleet:
            # 1. the raw task rate: queued first, then the workers start and drain the queue
            key = f"{redis_prefix}count:{uuid.uuid4().hex[:8]}"
            t0 = time.monotonic()
            for _ in range(noop_tasks):
                app.send_task(COUNT_TASK, args=[key, noop_tasks], queue=queue, serializer="json")
            sent_s = time.monotonic() - t0
            procs = start_workers(fleet, conninfo, "plain", queue, env, workers, concurrency)
            cpu0 = sum(machine.group_usage(p.proc.pid)[1] for p in procs if p.proc is not None)
            services.wait_until(
                lambda: client.exists(f"{key}:last"),
                timeout=max(60.0, noop_tasks / 50),
                interval=0.2,
                what=f"{noop_tasks} queued tasks run",
            )
            cpu1 = sum(machine.group_usage(p.proc.pid)[1] for p in procs if p.proc is not None)
            first, last = float(client.get(f"{key}:first") or 0), float(client.get(f"{key}:last") or 0)
            out["noop"] = {
                "tasks": noop_tasks,
                "per_s": (noop_tasks - 1) / (last - first) if last > first else float("nan"),
                "publish_per_s": noop_tasks / sent_s,
                # worker CPU from registration to the last task (start-up partly included)
                "cpu_ms_per_task": 1000.0 * (cpu1 - cpu0) / noop_tasks,
            }
            rate = out["noop"]["per_s"]
            log(f"    bare Celery: {rate:.0f} tasks/s through {workers} x {concurrency} threads")
            # 2. plain Celery's schedule: every tick of one interval sent now, with its ETA
            out["eta"] = eta_hold(
                app,
                client,
                procs,
                redis_prefix,
                queue,
                tasks,
                interval,
                window,
                log,
                out["noop"]["publish_per_s"],
            )
            for proc in procs:  # SIGKILL: a warm shutdown would first restore every held message
                if proc.alive():
                    proc.kill()
            out["worker_log_problems"] = fleet.problems()
    finally:
        app.pool.force_close_all()
    return out


def eta_hold(
    app: Celery,
    client: redis.Redis,
    procs: Sequence[services.Worker],
    redis_prefix: str,
    queue: str,
    tasks: int,
    interval: float,
    window: float,
    log: Callable[[str], None],
    publish_per_s: float,
) -> dict[str, Any]:
    """N tasks sent with ETAs spread over one interval, the first one due only after the publish
    and the reservation are over (``lead``, from the publish rate measured before): the workers
    then hold every message unacknowledged. Then the lateness of those due in ``window``."""
    from kombu.transport.redis import Channel

    unacked_key = f"{redis_prefix}{Channel.unacked_key}"
    queue_key = f"{redis_prefix}{queue}"
    key = f"{redis_prefix}late:{uuid.uuid4().hex[:8]}"
    rss0 = {p.name: machine.group_usage(p.proc.pid)[0] for p in procs if p.proc is not None}
    lead = 1.3 * tasks / publish_per_s + 20.0
    began = time.time()
    base = began + lead
    step = interval / tasks
    for i in range(tasks):
        eta = base + i * step
        app.send_task(
            AT_TASK, args=[key, eta], eta=datetime.fromtimestamp(eta, UTC), queue=queue, serializer="json"
        )
    publish_s = time.time() - began
    unacked: list[int] = []
    rss_peak = dict(rss0)

    def sample() -> int:
        held = int(client.hlen(unacked_key))
        unacked.append(held)
        for p in procs:
            if p.proc is not None:
                rss_peak[p.name] = max(rss_peak.get(p.name, 0), machine.group_usage(p.proc.pid)[0])
        return held

    # until the workers have taken every message from the queue (bounded)
    def taken() -> bool:
        sample()
        return int(client.llen(queue_key)) == 0

    reserved_s: float | None
    try:
        reserved_s = services.wait_until(taken, timeout=max(60.0, lead), interval=1.0, what="reserved")
        reserved_s += publish_s
    except TimeoutError:
        reserved_s = None
    held_before_due = sample()
    early = int(client.llen(key))  # ran before the first ETA: none expected
    end = base + window
    for _second in range(int(max(0.0, end - time.time())) + 2):
        if time.time() >= end:
            break
        sample()
        time.sleep(min(1.0, max(0.0, end - time.time())))
    held_at_end = sample()
    late = [json.loads(x) for x in client.lrange(key, 0, -1)]
    in_window = [lt for eta, lt in late if eta < end]
    due_in_window = sum(1 for i in range(tasks) if base + i * step < end)
    log(
        f"    ETA baseline: {tasks:,} tasks published in {publish_s:.1f} s; {held_before_due:,} held"
        f" unacknowledged in Redis before the first was due; {len(in_window):,} of {due_in_window:,}"
        f" due in {window:.0f} s ran"
    )
    return {
        "tasks": tasks,
        "publish_s": publish_s,
        "lead": lead,
        "reserved_s": reserved_s,
        "unacked_before_due": held_before_due,
        "unacked_max": max(unacked, default=0),
        "unacked_at_end": held_at_end,
        "ran_before_due": early,
        "queue_left": int(client.llen(queue_key)),
        "rss_before_kib": rss0,
        "rss_peak_kib": rss_peak,
        "window": window,
        "due_in_window": due_in_window,
        "ran": len(in_window),
        "late": stats(in_window),
        "visibility_timeout": Channel.visibility_timeout,
    }


# -- the report -----------------------------------------------------------------------------------


def _f(value: Any, fmt: str = ".0f", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{value:{fmt}}{unit}"


def _lat(s: dict[str, float]) -> str:
    """p50 / p99 / max of a lateness series."""
    return " / ".join(_secs(s[q]) for q in ("p50", "p99", "max"))


def _secs(value: float) -> str:
    """Milliseconds below one second, seconds above."""
    if value != value:
        return "n/a"
    return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.2f} s"


def _rss(before: dict[str, int], after: dict[str, int]) -> str:
    return ", ".join(f"{k}: {before.get(k, 0) / 1024:.0f} -> {v / 1024:.0f} MiB" for k, v in after.items())


def baseline_markdown(b: dict[str, Any], workers: int, concurrency: int, i: float) -> list[str]:
    """The figures of :func:`celery_baselines` as Markdown lines."""
    nb, eta = b["noop"], b["eta"]
    lines = [
        f"Baselines (plain Celery tasks through fresh workers of the same kind, {workers} x"
        f" {concurrency} threads, same Redis):",
        "",
        "| figure | value |",
        "|---|---|",
        f"| a task doing one Redis INCR, {nb['tasks']:,} queued before the workers start: tasks/s |"
        f" {nb['per_s']:.0f} |",
        f"| ... worker CPU per task (from the workers' registration to the last task) |"
        f" {nb.get('cpu_ms_per_task', float('nan')):.2f} ms |",
        f"| {eta['tasks']:,} tasks sent with an ETA spread over {i:g} s: publish time |"
        f" {eta['publish_s']:.1f} s |",
        f"| ... messages held unacknowledged by the workers (Redis `unacked` hash) before the first"
        f" is due / max | {eta['unacked_before_due']:,} / {eta['unacked_max']:,} |",
        f"| ... all taken from the queue after | {_f(eta['reserved_s'], '.1f', ' s')} |",
        f"| ... worker RSS before -> peak | {_rss(eta['rss_before_kib'], eta['rss_peak_kib'])} |",
        f"| ... lateness of those due in the first {eta['window']:g} s ({eta['ran']:,} of"
        f" {eta['due_in_window']:,} ran) | {_lat(eta['late'])} |",
        f"| kombu's Redis `visibility_timeout` (an ETA further away is delivered again) |"
        f" {eta['visibility_timeout']:g} s |",
        "",
    ]
    return lines


def markdown(result: dict[str, Any], title: str | None = None) -> list[str]:
    """The figures of one :func:`parked_series` as Markdown lines."""
    r = result
    n, i = r["trackers"], r["interval"]
    e, d = r["at_end"], r["after_drain"]
    drained = _f(r["drained_in_s"], ".1f", " s") if r["drained_in_s"] is not None else "not finished"
    cores = " + ".join(f"{v:.2f}" for v in r["worker_cpu_cores"].values())
    worker_cores = sum(r["worker_cpu_cores"].values())
    cpu_ms = 1000.0 * worker_cores / r["ticks_per_s"] if r["ticks_per_s"] else float("nan")
    lines = [
        f"### {title or f'{n:,} parked trackers, {i:g} s interval'}",
        "",
        f"{r['workers']} worker process(es) x {r['concurrency']} threads = {r['slots']} slots;"
        f" window {r['window']:g} s from the first due tick; {n:,} rows inserted in {r['insert_s']:.1f} s.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| ticks due per second (N / interval) | {r['demand_per_s']:.1f} |",
        f"| ticks delivered per second (mean over the window) | {r['ticks_per_s']:.1f} |",
        f"| ... of them within {ON_TIME:g} s of their scheduled time | {r['on_time_per_s']:.1f} |",
        f"| ticks/s per 1 s bucket: p50 / max | {_f(r['ticks_per_s_by_second']['p50'])} /"
        f" {_f(r['ticks_per_s_by_second']['max'])} |",
        f"| ticks/s in the last tenth of the window | {r['ticks_per_s_last_tenth']:.1f} |",
        f"| lateness vs the runtime's schedule, p50 / p99 / max (n={r['late_sched']['n']:,}) |"
        f" {_lat(r['late_sched'])} |",
        f"| ... counting the {r['undelivered']:,} ticks not run by the read at their age |"
        f" {_lat(r['late_sched_with_undelivered'])} |",
        f"| lateness vs the fixed schedule (first due + k x interval) | {_lat(r['late_due'])} |",
        f"| share of ticks within {ON_TIME:g} s | {_f(r['on_time_share'] * 100, '.1f', ' %')} |",
        f"| worker slots in use (entries running, 1 s samples): p50 / max | {_f(r['running']['p50'])} /"
        f" {_f(r['running']['max'])} of {r['slots']} |",
        f"| woken, not yet claimed (pending): p50 / max | {_f(r['pending']['p50'])} /"
        f" {_f(r['pending']['max'])} |",
        f"| parked and overdue by > {ON_TIME:g} s: p50 / max | {_f(r['overdue']['p50'])} /"
        f" {_f(r['overdue']['max'])} |",
        f"| at the end of the window: overdue parked / pending / oldest behind | {e['overdue_parked']:,} /"
        f" {e['pending']:,} / {e['behind_s']:.1f} s |",
        f"| after the drain ({drained} of at most {r['drain_bound']:g} s): ticks of the window not run |"
        f" {d['parked'] + d['pending'] + d['running']:,} |",
        f"| worker RSS idle -> max in the window | {_rss(r['rss_idle_kib'], r['rss_max_kib'])} |",
        f"| CPU in the window: workers / host busy (all processes, 2 cores = 100 %) | {cores} cores /"
        f" {r['host_cpu_busy'] * 100:.0f} % |",
        f"| worker CPU per delivered tick | {cpu_ms:.2f} ms |",
        "",
    ]
    b = r.get("baseline")
    if b:
        lines += baseline_markdown(b, r["workers"], r["concurrency"], i)
    problems = list(r.get("worker_log_problems", [])) + list((b or {}).get("worker_log_problems", []))
    events = r.get("events", {})
    listed = ", ".join(f"{k} {v:,}" for k, v in sorted(events.items())) or "none"
    lines.append(f"Registry events during the run: {listed}.")
    if problems:
        lines += ["", "Worker log problems:", "", *[f"    {p}" for p in problems[:20]]]
    lines.append("")
    return lines


# -- the command ----------------------------------------------------------------------------------


class _Done(Exception):
    """The baselines alone were asked for, and ran."""


@dataclasses.dataclass
class Cleanup:
    steps: list[Callable[[], Any]] = dataclasses.field(default_factory=list)

    def run(self) -> None:
        for fn in reversed(self.steps):
            try:
                fn()
            except Exception as exc:  # clean up everything else anyway, and say what was left
                print(f"cleanup step failed: {type(exc).__name__}: {exc}", file=sys.stderr)


@contextlib.contextmanager
def isolated() -> Iterator[tuple[services.PostgresDatabase, str, str, Cleanup]]:
    """A PostgreSQL database, a Redis key prefix and a queue of this run's own; all removed after."""
    run_id = uuid.uuid4().hex[:8]
    pg = services.PostgresDatabase(f"tracking_bench_parked_{run_id}")
    prefix = f"tracking-bench-parked-{run_id}:"
    cleanup = Cleanup()
    try:
        pg.create()
        cleanup.steps.append(pg.drop)
        cleanup.steps.append(lambda: services.delete_redis_keys(prefix))
        yield pg, prefix, f"tracking-bench-parked-{run_id}", cleanup
    finally:
        cleanup.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.parked", description=__doc__.split("\n")[0])
    parser.add_argument("--trackers", type=int, default=100_000)
    parser.add_argument("--interval", type=float, default=300.0)
    parser.add_argument("--window", type=float, help="seconds measured (default: one interval)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16, help="threads per worker process")
    parser.add_argument("--lead", type=float, default=5.0, help="seconds from the insert to the first tick")
    parser.add_argument("--drain", type=float, help="seconds to wait after the window (bounded)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain Celery baselines")
    parser.add_argument("--baseline-only", action="store_true", help="only the plain Celery baselines")
    parser.add_argument("--baseline-window", type=float, default=60.0)
    parser.add_argument("--noop-tasks", type=int, default=20_000)
    parser.add_argument("--json", type=Path, help="also write the raw figures (JSON) here")
    parser.add_argument("--smoke", action="store_true", help="300 trackers, 5 s interval, 15 s, 1 worker")
    args = parser.parse_args(argv)
    if args.smoke:
        args.trackers, args.interval, args.window, args.workers = 300, 5.0, 15.0, 1
        args.baseline_window, args.noop_tasks = 10.0, 500
    shown = " ".join(
        ["python -m bench.parked", *(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))]
    )
    print(f"{shown}: {args.trackers:,} parked trackers, {args.interval:g} s interval", flush=True)
    result: dict[str, Any] = {}
    failed = False
    with machine.LoadMonitor() as load, isolated() as (pg, prefix, queue, _cleanup):
        try:
            settings = tracking.Settings(database_url=pg.url, broker_url=services.REDIS_URL, queue=queue)
            registry.migrate(settings)
            servers = {"postgresql": pg.server_version(), "redis": services.redis_server_version()}
            if args.baseline_only:
                env = worker_env(pg.url, queue, prefix, args.interval)
                with tempfile.TemporaryDirectory(prefix="tracking-bench-parked-") as tmp:
                    base = celery_baselines(
                        pg.conninfo,
                        env,
                        prefix,
                        queue,
                        args.trackers,
                        args.interval,
                        args.baseline_window,
                        args.workers,
                        args.concurrency,
                        args.noop_tasks,
                        Path(tmp),
                        print,
                    )
                result = {"baseline_only": base, "workers": args.workers, "concurrency": args.concurrency}
                print("\n".join(baseline_markdown(base, args.workers, args.concurrency, args.interval)))
                raise _Done()
            result = parked_series(
                pg.conninfo,
                pg.url,
                prefix,
                queue,
                trackers=args.trackers,
                interval=args.interval,
                window=args.window,
                workers=args.workers,
                concurrency=args.concurrency,
                lead=args.lead,
                drain=args.drain,
                baseline=not args.no_baseline,
                baseline_window=args.baseline_window,
                noop_tasks=args.noop_tasks,
                log=lambda line: print(line, flush=True),
            )
            result["machine"] = machine.describe(servers)
        except _Done:
            pass
        except Exception:
            traceback.print_exc()
            failed = True
    result["load"] = load.summary()
    result["command"] = shown
    if result.get("ticks_per_s") is not None:
        print("\n".join(markdown(result)))
    load_ = result["load"]
    print(
        f"host load: 1-min average {load_['load_start'][0]:.2f} at start, max {load_['load_max']:.2f};"
        f" noisy: {load_['noisy']} {load_['noisy_reasons']}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
