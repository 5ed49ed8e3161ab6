"""Run the benchmark: ``python -m bench`` (or ``python bench/run.py``) from the repository root.

    python -m bench            the full run; writes docs/benchmarks.md
    python -m bench --smoke    tiny counts, to check in CI that it runs (writes nothing)

Options: ``--output PATH`` writes the results there instead (also with ``--smoke``);
``--no-write`` only prints them; ``--only h,i`` runs only those sections; ``--json PATH`` also
writes the raw results. Needs PostgreSQL, Redis and RabbitMQ on 127.0.0.1.

Sections: a. start(), b. lookup(), c. crash -> restart, d. the embedded broker, e. lost worker,
f. sweep against registry size, g. registry writes, h. capacity of one gevent worker process (and
psycopg under gevent), i. call and cast, j. the Ray peer. Plots: ``bench/plots.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shlex
import sqlite3
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python bench/run.py``: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
import redis
from celery import Celery

import tracking
from bench import capacity, machine, measure, messages, parked, plots, report, services, supervision
from tracking import registry
from tracking.celery import embedded_broker_options, recommended_config


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    starts: int  # a. start() calls per configuration
    lookup_ids: int  # b. registered IDs
    lookups: int  # b. lookups
    crashes: int  # c. trackers crashed once each
    echoes: int  # c. bare Celery round trips
    messages: int  # d. messages per transport
    workers: int
    lost_trackers: int  # e. trackers on the worker that is killed
    lost_kills: int  # e. kills per settings pair
    lost_timing: tuple[tuple[float, float, float], ...]  # e. (heartbeat, lease, sweep) pairs
    redelivery_bound: float  # e. how long to wait for Celery's own redelivery
    short_visibility: float  # e. the short Redis visibility_timeout of the second baseline
    sweep_sizes: tuple[int, ...]  # f. registry sizes
    sweep_runs: int  # f. timed sweeps per size
    sweep_lost: int  # f. running entries of a lost worker, rescued by each sweep
    sweep_due: int  # f. pending entries past due, rescued by each sweep
    load_trackers: tuple[int, ...]  # g. live trackers on one worker process, in steps
    load_window: float  # g. seconds of counting per step
    capacity_sizes: tuple[int, ...]  # h. live trackers in one gevent worker process, one size at a time
    capacity_window: float  # h. seconds of counting writes per size
    calls: int  # i. call round trips per stack
    casts: int  # i. casts per stack
    ray_actors: int  # j. named detached Ray actors
    ray_lookups: int  # j. get_actor calls
    ray_calls: int  # j. actor method round trips
    ray_kills: int  # j. actor processes SIGKILLed, one after another
    #: k. parked trackers: (trackers, interval, window, worker processes, threads each, baselines)
    parked: tuple[tuple[int, float, float, int, int, bool], ...]


FULL = Profile(
    "full",
    starts=500,
    lookup_ids=1000,
    lookups=2000,
    crashes=30,
    echoes=30,
    messages=200,
    workers=2,
    lost_trackers=30,
    lost_kills=3,
    lost_timing=((0.5, 3.0, 1.0), (1.0, 6.0, 2.0)),
    redelivery_bound=60.0,
    short_visibility=10.0,
    sweep_sizes=(10_000, 100_000, 1_000_000),
    sweep_runs=5,
    sweep_lost=100,
    sweep_due=20,
    load_trackers=(100, 1000),
    load_window=20.0,
    capacity_sizes=(1000, 5000, 10_000),
    capacity_window=30.0,
    calls=300,
    casts=1000,
    ray_actors=100,
    ray_lookups=2000,
    ray_calls=300,
    ray_kills=5,
    parked=((100_000, 300.0, 300.0, 2, 16, True), (20_000, 300.0, 300.0, 2, 16, False)),
)
SMOKE = Profile(
    "smoke",
    starts=20,
    lookup_ids=20,
    lookups=50,
    crashes=3,
    echoes=3,
    messages=10,
    workers=1,
    lost_trackers=3,
    lost_kills=1,
    lost_timing=((0.5, 3.0, 1.0),),
    redelivery_bound=3.0,
    short_visibility=3.0,
    sweep_sizes=(1_000, 3_000),
    sweep_runs=3,
    sweep_lost=100,
    sweep_due=20,
    load_trackers=(20,),
    load_window=4.0,
    capacity_sizes=(50,),
    capacity_window=4.0,
    calls=20,
    casts=50,
    ray_actors=3,
    ray_lookups=50,
    ray_calls=20,
    ray_kills=1,
    parked=((300, 5.0, 15.0, 1, 16, True),),
)

HEARTBEAT, LEASE, SWEEP, GRACE = 0.5, 3.0, 1.0, 3.0
#: h. the capacity run's: a 10,000-tracker start-up must not outlast a 3 s lease or grace
CAPACITY_TIMING = {"heartbeat": 2.0, "lease": 10.0, "sweep": 5.0, "grace": 60.0}
POLLING_INTERVAL = 0.1  # the embedded broker's, from tracking.celery.embedded_broker_options


class Run:
    """One benchmark run: its isolated resources, its settings, and what it measured."""

    def __init__(self, profile: Profile, tmp: Path, only: frozenset[str] | None = None) -> None:
        self.profile = profile
        self.only = only
        self.tmp = tmp
        self.id = uuid.uuid4().hex[:8]
        self.base = f"tracking-bench-{self.id}"
        self.redis_prefix = f"{self.base}:"
        self.pg = services.PostgresDatabase(f"tracking_bench_{self.id}")
        self.results: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.servers: dict[str, str] = {}
        self._cleanups: list[Callable[[], Any]] = []

    # -- configuration ----------------------------------------------------------------------------

    def settings(self, database_url: str, broker_url: str, queue: str, **extra: Any) -> tracking.Settings:
        return tracking.Settings(
            database_url=database_url,
            broker_url=broker_url,
            queue=queue,
            heartbeat_seconds=HEARTBEAT,
            lease_seconds=LEASE,
            sweep_seconds=SWEEP,
            start_grace_seconds=GRACE,
            imports=("bench.trackers",),
            **extra,
        )

    def app(self, name: str, settings: tracking.Settings) -> Celery:
        """A Celery app with tracking's recommended configuration, installed: it publishes now."""
        app = Celery(f"bench-{name}", set_as_current=False)
        conf = recommended_config(settings)
        if settings.broker_url.startswith("redis:"):
            conf["broker_transport_options"] = {"global_keyprefix": self.redis_prefix}
        app.conf.update(conf)
        tracking.install(app, settings)
        self._cleanups.append(lambda: app.pool.force_close_all())
        self._cleanups.append(lambda: registry.dispose(settings))
        return app

    def section(self, key: str, fn: Callable[[], Any]) -> None:
        if self.only is not None and key.split("_", 1)[0] not in self.only:
            return
        print(f"  {key} ...", flush=True)
        began = time.monotonic()
        try:
            self.results[key] = fn()
        except Exception:
            self.errors[key] = traceback.format_exc()
            print(self.errors[key], file=sys.stderr, flush=True)
        print(f"  {key} done in {time.monotonic() - began:.1f} s", flush=True)

    # -- the run ----------------------------------------------------------------------------------

    def execute(self) -> None:
        from bench.trackers import (
            CapacityBench,
            CrashBench,
            LoadBench,
            LookupBench,
            LostBench,
            MessageBench,
            StartBench,
        )

        p = self.profile
        self.pg.create()
        self._cleanups.append(self.pg.drop)
        self._cleanups.append(lambda: services.delete_redis_keys(self.redis_prefix))
        self.servers = {
            "postgresql": self.pg.server_version(),
            "redis": services.redis_server_version(),
            "rabbitmq": services.rabbitmq_server_version(),
        }
        idle = f"{self.base}-idle"  # no worker consumes it
        self._cleanups.append(lambda: services.delete_rabbitmq_queue(idle))

        # a. and b. on PostgreSQL + Redis (no workers: the publisher side only)
        pg_redis = self.settings(self.pg.url, services.REDIS_URL, idle)
        registry.migrate(pg_redis)
        app = self.app("pg-redis", pg_redis)
        self.section("a_pg_redis", lambda: measure.start_throughput(StartBench, app, idle, p.starts, "pgr"))

        def pg_lookup() -> dict[str, Any]:
            ids = [f"lookup-{i}" for i in range(p.lookup_ids)]
            measure.register(LookupBench, ids)
            with psycopg.connect(self.pg.conninfo, autocommit=True) as conn:
                sql = "SELECT * FROM tracking_trackers WHERE kind = %s AND transaction_id = %s"
                return measure.lookup_latency(
                    LookupBench, ids, p.lookups, lambda k, t: conn.execute(sql, (k, t)).fetchone()
                )

        self.section("b_pg", pg_lookup)

        # a. on PostgreSQL + RabbitMQ
        pg_amqp = self.settings(self.pg.url, services.AMQP_URL, idle)
        app = self.app("pg-amqp", pg_amqp)
        self.section("a_pg_amqp", lambda: measure.start_throughput(StartBench, app, idle, p.starts, "pga"))

        # a. and b. on the embedded default: SQLite + the embedded broker, in a temp folder
        sqlite_path = self.tmp / "tracking.sqlite3"
        embedded = self.settings(
            f"sqlite:///{sqlite_path}",
            "embedded://localhost//",
            idle,
            broker_folder=str(self.tmp / "broker"),
        )
        registry.migrate(embedded)
        app = self.app("embedded", embedded)
        self.section("a_embedded", lambda: measure.start_throughput(StartBench, app, idle, p.starts, "emb"))

        def sqlite_lookup() -> dict[str, Any]:
            ids = [f"lookup-{i}" for i in range(p.lookup_ids)]
            measure.register(LookupBench, ids)
            conn = sqlite3.connect(sqlite_path)
            try:
                sql = "SELECT * FROM tracking_trackers WHERE kind = ? AND transaction_id = ?"
                return measure.lookup_latency(
                    LookupBench, ids, p.lookups, lambda k, t: conn.execute(sql, (k, t)).fetchone()
                )
            finally:
                conn.close()

        self.section("b_sqlite", sqlite_lookup)

        # c. crash to new incarnation running, with real workers, on PostgreSQL + Redis
        self.pg.truncate()  # the pending entries above must not be published to the workers
        self.section("c", lambda: self.crash_restart(CrashBench))

        # d. the embedded broker choice
        self.section(
            "d_filesystem",
            lambda: measure.broker_round_trip(
                "embedded://",
                embedded_broker_options(str(self.tmp / "fs-broker")),
                p.messages,
                POLLING_INTERVAL,
            ),
        )
        self.section(
            "d_sqla",
            lambda: measure.broker_round_trip(
                f"sqla+sqlite:///{self.tmp / 'kombu.sqlite3'}", {}, p.messages, POLLING_INTERVAL
            ),
        )

        # e. a lost worker (SIGKILL of its process group): tracking at each lease/sweep setting,
        # then plain Celery's own redelivery of a late-acknowledged task on Redis and RabbitMQ
        for i, (heartbeat, lease, sweep) in enumerate(p.lost_timing, 1):
            self.section(
                f"e_tracking_{i}",
                lambda i=i, h=heartbeat, le=lease, sw=sweep: self.lost_worker(LostBench, i, h, le, sw),
            )
        self.section(
            "e_celery_redis",
            lambda: self.celery_redelivery("redis", services.REDIS_URL, {}, p.redelivery_bound),
        )
        vt = p.short_visibility
        self.section(
            "e_celery_redis_short",
            lambda: self.celery_redelivery(
                "redis-short",
                services.REDIS_URL,
                # Celery's best case on Redis: the restore sweep every second, not every 100 s
                {"visibility_timeout": vt, "unacked_restore_interval": 1, "unacked_restore_throttle": 1},
                max(p.redelivery_bound, 2 * vt + 10),
            ),
        )
        self.section(
            "e_celery_amqp",
            lambda: self.celery_redelivery("amqp", services.AMQP_URL, {}, max(p.redelivery_bound, 10)),
        )

        # f. the supervisor's sweep against the size of the registry
        self.section("f", self.sweep_scaling)

        # g. registry writes per second with many live trackers on one worker process
        self.section("g", lambda: self.write_rate(LoadBench))

        # h. capacity: many trackers in one gevent worker process; psycopg under gevent
        self.section("h_driver", self.gevent_driver)
        self.section("h", lambda: self.capacity(CapacityBench))

        # i. call and cast, on PostgreSQL + Redis and on the embedded default
        self.section("i_pg_redis", lambda: self.messages_pg(MessageBench))
        self.section("i_embedded", lambda: self.messages_embedded(MessageBench))

        # j. the Ray peer: named detached actors
        self.section("j_ray", self.ray_peer)

        # k. parked trackers: many sparse trackers on a handful of worker slots
        for n, (trackers, interval, window, workers, threads, baseline) in enumerate(p.parked, 1):
            self.section(
                f"k_parked_{n}",
                lambda t=trackers, i=interval, w=window, k=workers, c=threads, b=baseline: self.parked(
                    t, i, w, k, c, b
                ),
            )

    def crash_restart(self, tracker: Any) -> dict[str, Any]:
        p = self.profile
        work = f"{self.base}-work"
        settings = self.settings(self.pg.url, services.REDIS_URL, work)
        app = self.app("pg-redis-work", settings)
        env = self.tracking_env(settings)
        names = [f"bench{i + 1}" for i in range(p.workers)]
        client = redis.Redis.from_url(services.REDIS_URL)
        ids = [f"crash-{i}" for i in range(p.crashes)]
        with contextlib.closing(client), services.workers(names, work, env, self.tmp) as procs:
            try:
                self._wait_for_workers(procs, client, app, work)
                echo = measure.echo_series(app, work, client, self.redis_prefix, p.echoes)
                measure.start_and_wait_running(tracker, ids, timeout=60)
                result = measure.crash_restart(tracker, ids, settings.control_poll_seconds)
                measure.stop_all(tracker, ids)
                result["echo"] = echo
            except Exception:
                for proc in procs:
                    print(f"--- {proc.name} log (tail) ---\n{proc.log_tail()}", file=sys.stderr)
                raise
        # The workers have exited (warm shutdown): what did they log as errors?
        result["worker_log_problems"] = [
            f"{proc.name}: {line}" for proc in procs for line in proc.log_problems()
        ]
        for line in result["worker_log_problems"]:
            print(f"  worker log: {line}", file=sys.stderr)
        return result

    def tracking_env(self, settings: tracking.Settings, redis_prefix: bool = True) -> dict[str, str]:
        """The environment of a ``celery -A tracking worker`` with these settings (the run's Redis
        key prefix for the broker unless told: the embedded broker has transport options of its own)."""
        assert settings.queue is not None
        extra = {
            "CELERY_CONFIG_MODULE": "bench.workerconfig",
            "BENCH_REDIS_URL": services.REDIS_URL,
        }
        if redis_prefix:
            extra["BENCH_REDIS_PREFIX"] = self.redis_prefix
        return services.worker_env(
            {
                "TRACKING_DATABASE_URL": settings.database_url,
                "CELERY_BROKER_URL": settings.broker_url,
                "TRACKING_QUEUE": settings.queue,
                "TRACKING_IMPORTS": "bench.trackers",
                "TRACKING_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
                "TRACKING_LEASE_SECONDS": str(settings.lease_seconds),
                "TRACKING_SWEEP_SECONDS": str(settings.sweep_seconds),
                "TRACKING_START_GRACE_SECONDS": str(settings.start_grace_seconds),
            },
            extra,
        )

    def lost_worker(
        self, tracker: Any, index: int, heartbeat: float, lease: float, sweep: float
    ) -> dict[str, Any]:
        """e. SIGKILL the worker process group running the trackers, another worker running."""
        p = self.profile
        queue = f"{self.base}-lost{index}"
        settings = tracking.Settings(
            database_url=self.pg.url,
            broker_url=services.REDIS_URL,
            queue=queue,
            heartbeat_seconds=heartbeat,
            lease_seconds=lease,
            sweep_seconds=sweep,
            start_grace_seconds=lease,
            imports=("bench.trackers",),
        )
        self.app(f"lost{index}", settings)
        env = self.tracking_env(settings)
        names = [f"lost{index}{chr(ord('a') + k)}" for k in range(p.lost_kills + 1)]
        ids = [f"lost{index}-{i}" for i in range(p.lost_trackers)]
        self.pg.truncate()
        with services.Fleet(self.tmp) as fleet:
            try:
                result = supervision.lost_worker_series(
                    tracker,
                    ids,
                    fleet,
                    lambda name: fleet.start(name, queue, env),
                    names,
                    self.pg.conninfo,
                    p.lost_kills,
                    timeout=lease + sweep + 30,
                )
            except Exception:
                print(fleet.logs(), file=sys.stderr)
                raise
        self.pg.truncate()  # the survivor handed its trackers off on its way out
        result.update(heartbeat=heartbeat, lease=lease, sweep=sweep)
        return result

    def celery_redelivery(
        self, label: str, broker_url: str, options: dict[str, Any], bound: float
    ) -> dict[str, Any]:
        """e. baseline: plain Celery (``bench.plainapp``), prefork pool with one process."""
        queue = f"{self.base}-celery-{label}"
        transport = dict(options)
        if broker_url.startswith("redis:"):
            transport["global_keyprefix"] = self.redis_prefix
        else:
            self._cleanups.append(lambda: services.delete_rabbitmq_queue(queue))
        app = Celery(f"bench-plain-{label}", set_as_current=False)
        app.conf.update(
            broker_url=broker_url,
            broker_transport_options=transport,
            task_serializer="json",
            accept_content=["json"],
        )
        self._cleanups.append(lambda: app.pool.force_close_all())
        env = services.worker_env(
            {},
            {
                "BENCH_BROKER_URL": broker_url,
                "BENCH_TRANSPORT_OPTIONS": json.dumps(transport),
                "BENCH_REDIS_URL": services.REDIS_URL,
            },
        )
        client = redis.Redis.from_url(services.REDIS_URL)
        with contextlib.closing(client), services.Fleet(self.tmp) as fleet:

            def spawn(name: str) -> services.Worker:
                return fleet.start(
                    name,
                    queue,
                    env,
                    app="bench.plainapp",
                    pool="prefork",
                    concurrency=1,
                    extra_args=("--without-mingle", "--without-gossip", "--without-heartbeat"),
                )

            try:
                result = supervision.celery_redelivery(
                    app,
                    fleet,
                    spawn,
                    (f"plain-{label}-x", f"plain-{label}-y"),
                    client,
                    self.redis_prefix,
                    queue,
                    bound,
                )
            except Exception:
                print(fleet.logs(), file=sys.stderr)
                raise
        result["broker"] = "RabbitMQ" if broker_url.startswith("amqp") else "Redis"
        result["options"] = options
        return result

    def sweep_scaling(self) -> dict[str, Any]:
        """f. Sweeps of a registry of growing size, nothing else running on it."""
        p = self.profile
        settings = tracking.Settings(
            database_url=self.pg.url,
            broker_url=services.REDIS_URL,
            queue=f"{self.base}-sweep",
            heartbeat_seconds=5.0,
            lease_seconds=30.0,
            sweep_seconds=10.0,
            start_grace_seconds=30.0,
        )
        self.pg.truncate()
        try:
            return supervision.sweep_scaling(
                self.pg.conninfo, settings, p.sweep_sizes, p.sweep_runs, p.sweep_lost, p.sweep_due
            )
        finally:
            self.pg.truncate()

    def write_rate(self, tracker: Any) -> dict[str, Any]:
        """g. Live trackers on one worker process (threads pool), in steps; writes counted."""
        p = self.profile
        queue = f"{self.base}-load"
        settings = self.settings(self.pg.url, services.REDIS_URL, queue)
        self.app("load", settings)
        env = self.tracking_env(settings)
        concurrency = max(p.load_trackers) + 100
        self.pg.truncate()
        steps = []
        with services.Fleet(self.tmp) as fleet:
            try:
                worker = fleet.start("load1", queue, env, concurrency=concurrency)
                supervision.wait_worker_registered(self.pg.conninfo, worker)
                started = 0
                for count in p.load_trackers:
                    for i in range(started, count):
                        tracker.start(f"load-{i}")
                    started = count
                    supervision.wait_running(self.pg.conninfo, tracker.kind, count, timeout=120)
                    # Every one has ticked since, and the starts' counters have reached
                    # pg_stat_user_tables (an idle backend flushes them up to 10 s late).
                    time.sleep(max(tracker.interval + 1, supervision.STATS_LAG))
                    window = supervision.write_window(self.pg.conninfo, p.load_window)
                    window["trackers"] = count
                    steps.append(window)
                    print(f"    {count} trackers: {window['rates']}", flush=True)
            except Exception:
                print(fleet.logs(), file=sys.stderr)
                raise
            problems = fleet.problems()
        raw = supervision.raw_checkpoint_rate(self.pg.conninfo, tracker.kind, seconds=3.0)
        self.pg.truncate()
        return {
            "steps": steps,
            "raw_checkpoint_per_s": raw,
            "heartbeat": settings.heartbeat_seconds,
            "interval": tracker.interval,
            "concurrency": concurrency,
            "worker_log_problems": problems,
        }

    # -- h. capacity ------------------------------------------------------------------------------

    def gevent_driver(self) -> dict[str, Any]:
        """psycopg under gevent: patched first (as Celery does), and imported before the patch."""
        self.pg.truncate()
        return {order: capacity.gevent_probe(self.pg.url, order) for order in ("celery", "psycopg-first")}

    def capacity(self, tracker: Any) -> dict[str, Any]:
        """h. N live trackers in one ``-P gevent`` worker process, one fresh worker per size."""
        p, t = self.profile, CAPACITY_TIMING
        client = redis.Redis.from_url(services.REDIS_URL)
        steps = []
        with contextlib.closing(client), services.Fleet(self.tmp) as fleet:
            for count in p.capacity_sizes:
                queue = f"{self.base}-cap{count}"
                settings = tracking.Settings(
                    database_url=self.pg.url,
                    broker_url=services.REDIS_URL,
                    queue=queue,
                    heartbeat_seconds=t["heartbeat"],
                    lease_seconds=t["lease"],
                    sweep_seconds=t["sweep"],
                    start_grace_seconds=t["grace"],
                    imports=("bench.trackers",),
                )
                app = self.app(f"cap{count}", settings)
                self.pg.truncate()
                worker = fleet.start(
                    f"cap{count}", queue, self.tracking_env(settings), pool="gevent", concurrency=count + 100
                )
                try:
                    step = capacity.capacity_step(
                        tracker,
                        count,
                        worker,
                        self.pg.conninfo,
                        app,
                        queue,
                        client,
                        self.redis_prefix,
                        p.capacity_window,
                        timeout=max(120.0, count * 0.06),
                    )
                except Exception:  # this size failed; the next ones are still measured
                    self.errors[f"h_{count}"] = traceback.format_exc()
                    print(self.errors[f"h_{count}"], fleet.logs(), sep="\n", file=sys.stderr)
                    step = {"trackers": count, "failed": traceback.format_exc(limit=1).strip()}
                finally:
                    if worker.alive():
                        worker.kill()  # not a warm shutdown, which would republish every tracker
                    self.pg.truncate()
                step["worker_log_problems"] = worker.log_problems()
                step["worker_log_counts"] = capacity.log_counts(worker)
                steps.append(step)
                if "failed" in step:
                    continue
                r = step["writes"]["rates"]
                running = (
                    f"all running {step['to_running_s']:.1f} s after the first start()"
                    if step["to_running_s"] is not None
                    else f"NOT all running within {step['timeout_s']:.0f} s ({step['running_at_end']} were)"
                )
                print(
                    f"    {count} trackers: {running}, {step['rss_per_tracker_kib']:.1f} KiB RSS each,"
                    f" registry connections peak {step['peak_connections']}, lease renewals"
                    f" {r['tracking_workers']['upd']:.2f}/s,"
                    f" checkpoints {r['tracking_trackers']['upd']:.1f}/s,"
                    f" other events {step['other_events']}, worker log {step['worker_log_counts']}",
                    flush=True,
                )
        return {"steps": steps, "interval": tracker.interval, **CAPACITY_TIMING}

    # -- i. messages ------------------------------------------------------------------------------

    def _messages(
        self, tracker: Any, label: str, settings: tracking.Settings, env: dict[str, str], raw: Any
    ) -> dict[str, Any]:
        p = self.profile
        assert settings.queue is not None
        app = self.app(f"msg-{label}", settings)
        client = redis.Redis.from_url(services.REDIS_URL)
        txid = f"msg-{label}"
        with contextlib.closing(client), services.Fleet(self.tmp) as fleet:
            worker = fleet.start(f"msg{label}", settings.queue, env, concurrency=20)
            try:
                if settings.database_url.startswith("postgresql"):
                    supervision.wait_worker_registered(self.pg.conninfo, worker)
                measure.echo_round_trip(app, settings.queue, client, self.redis_prefix, timeout=60)
                measure.start_and_wait_running(tracker, [txid], timeout=60)
                result = messages.call_latency(
                    tracker, txid, p.calls, raw, app, settings.queue, client, self.redis_prefix
                )
                result["cast"] = messages.cast_throughput(tracker, txid, p.casts, raw)
                tracker.stop(txid, timeout=30)
            except Exception:
                print(fleet.logs(), file=sys.stderr)
                raise
            finally:
                worker.stop()
            result["worker_log_problems"] = fleet.problems()
        return result

    def messages_pg(self, tracker: Any) -> dict[str, Any]:
        queue = f"{self.base}-msg"
        settings = self.settings(self.pg.url, services.REDIS_URL, queue)
        self.pg.truncate()
        with psycopg.connect(self.pg.conninfo, autocommit=True) as conn:
            return self._messages(tracker, "pg", settings, self.tracking_env(settings), messages.pg_raw(conn))

    def messages_embedded(self, tracker: Any) -> dict[str, Any]:
        folder = self.tmp / "msg-embedded"
        folder.mkdir(exist_ok=True)
        sqlite_path = folder / "tracking.sqlite3"
        queue = f"{self.base}-msg-embedded"
        settings = self.settings(
            f"sqlite:///{sqlite_path}", "embedded://localhost//", queue, broker_folder=str(folder / "broker")
        )
        registry.migrate(settings)
        env = self.tracking_env(settings, redis_prefix=False)
        env["TRACKING_BROKER_FOLDER"] = settings.broker_folder
        conn = sqlite3.connect(sqlite_path, isolation_level=None, timeout=30)
        try:
            return self._messages(tracker, "embedded", settings, env, messages.sqlite_raw(conn))
        finally:
            conn.close()

    # -- j. Ray ----------------------------------------------------------------------------------

    def parked(
        self, trackers: int, interval: float, window: float, workers: int, threads: int, baseline: bool
    ) -> dict[str, Any]:
        """k. ``bench.parked`` on a database, key prefix and queue of its own."""
        with parked.isolated() as (pg, prefix, queue, _cleanup):
            settings = tracking.Settings(database_url=pg.url, broker_url=services.REDIS_URL, queue=queue)
            registry.migrate(settings)
            return parked.parked_series(
                pg.conninfo,
                pg.url,
                prefix,
                queue,
                trackers=trackers,
                interval=interval,
                window=window,
                workers=workers,
                concurrency=threads,
                tmp=self.tmp,
                baseline=baseline,
                baseline_window=min(60.0, window),
                noop_tasks=500 if self.profile.name == "smoke" else 20_000,
                log=lambda line: print(f"    {line}", flush=True),
            )

    def ray_peer(self) -> dict[str, Any]:
        p = self.profile
        try:
            import ray  # noqa: F401  (only whether it is installed)
        except ImportError:
            print("    Ray is not installed (pip install -e '.[ray]'): the Ray peer was NOT run", flush=True)
            return {"skipped": "Ray is not installed in this environment (the `ray` extra)"}
        return capacity.ray_peer(
            p.ray_actors, p.ray_lookups, p.ray_calls, p.ray_kills, self.tmp / "ray", timeout=600
        )

    def _wait_for_workers(self, procs: list[services.Worker], client: Any, app: Celery, queue: str) -> None:
        def ready() -> bool:
            for proc in procs:
                if not proc.alive():
                    raise RuntimeError(f"worker {proc.name} exited:\n{proc.log_tail()}")
            with psycopg.connect(self.pg.conninfo, autocommit=True) as conn:
                row = conn.execute("SELECT count(*) FROM tracking_workers WHERE status = 'alive'").fetchone()
            return row is not None and row[0] >= len(procs)

        services.wait_until(ready, timeout=60, interval=0.2, what=f"{len(procs)} workers ready")
        measure.echo_round_trip(app, queue, client, self.redis_prefix, timeout=30)

    def cleanup(self) -> None:
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception as exc:  # clean up everything else anyway, and say what was left
                print(f"cleanup step failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def _draw_plots(doc: report.Report, output: Path | None) -> tuple[dict[str, str], str | None]:
    """The PNG plots, in ``bench/`` next to the Markdown output (docs/bench/), or, when nothing is
    written, in a temporary folder that is removed at once (the smoke run still draws them)."""
    missing = plots.available()
    if missing is not None:
        print(f"plots NOT drawn: {missing}", flush=True)
        return {}, f"Plots were not drawn: {missing}."
    try:
        if output is None:
            with tempfile.TemporaryDirectory(prefix="tracking-bench-plots-") as tmp:
                drawn = plots.draw(doc.results, doc.profile, Path(tmp))
            print(f"plots drawn (and discarded): {', '.join(drawn) or 'none'}", flush=True)
            return {}, None
        folder = output.parent / "bench"
        drawn = plots.draw(doc.results, doc.profile, folder)
    except Exception:
        doc.errors["plots"] = traceback.format_exc()
        print(doc.errors["plots"], file=sys.stderr)
        return {}, "Drawing the plots failed."
    print(f"plots: {', '.join(str(folder / name) for name in drawn.values())}", flush=True)
    return {what: f"bench/{name}" for what, name in drawn.items()}, None


def _plain(value: Any) -> Any:
    """JSON for what the results hold besides plain values: latency series."""
    if isinstance(value, measure.Series):
        return value.values
    return str(value)


@contextlib.contextmanager
def _temp_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tracking-bench-") as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None, command: str = "python -m bench") -> int:
    parser = argparse.ArgumentParser(prog=command, description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts: check that it runs")
    parser.add_argument("--output", type=Path, help="write the results (Markdown) here")
    parser.add_argument("--no-write", action="store_true", help="print the results only")
    parser.add_argument("--json", type=Path, help="also write the raw results (JSON) here")
    parser.add_argument(
        "--only",
        help="run only these sections, e.g. 'h,i' (letters a to k; writes nothing unless --output)",
    )
    args = parser.parse_args(argv)
    only = frozenset(x.strip() for x in args.only.split(",")) if args.only else None
    argv = sys.argv[1:] if argv is None else argv
    profile = SMOKE if args.smoke else FULL
    output = args.output or (None if args.smoke or only else services.REPO_ROOT / "docs" / "benchmarks.md")
    if args.no_write:
        output = None

    began = time.time()
    print(f"tracking benchmark ({profile.name} profile)", flush=True)
    with machine.LoadMonitor() as load, _temp_folder() as tmp:
        run = Run(profile, tmp, only)
        try:
            run.execute()
        except Exception:
            run.errors["setup"] = traceback.format_exc()
            print(run.errors["setup"], file=sys.stderr)
        finally:
            run.cleanup()
    doc = report.Report(
        command=" ".join([command, *(shlex.quote(a) for a in argv)]),
        profile=dataclasses.asdict(profile),
        timing={
            "heartbeat": HEARTBEAT,
            "lease": LEASE,
            "sweep": SWEEP,
            "grace": GRACE,
            "polling_interval": POLLING_INTERVAL,
        },
        machine=machine.describe(run.servers),
        load=load.summary(),
        results=run.results,
        errors=run.errors,
        started=began,
        duration=time.time() - began,
        only=sorted(only) if only is not None else None,
    )
    doc.plots, doc.plots_note = _draw_plots(doc, output)
    print(doc.text())
    if args.json is not None:
        args.json.write_text(
            json.dumps({"results": run.results, "errors": run.errors}, default=_plain, indent=1)
        )
    if output is not None:
        output.write_text(doc.markdown())
        shown = (
            output.relative_to(services.REPO_ROOT) if output.is_relative_to(services.REPO_ROOT) else output
        )
        print(f"wrote {shown}")
    return 1 if run.errors or doc.errors else 0


if __name__ == "__main__":
    raise SystemExit(main(command="python bench/run.py"))
