"""Run the benchmark: ``python -m bench`` (or ``python bench/run.py``) from the repository root.

    python -m bench            the full run; writes docs/benchmarks.md
    python -m bench --smoke    tiny counts, to check in CI that it runs (writes nothing)

Options: ``--output PATH`` writes the results there instead (also with ``--smoke``);
``--no-write`` only prints them. Needs PostgreSQL, Redis and RabbitMQ on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
from bench import machine, measure, report, services
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


FULL = Profile(
    "full", starts=500, lookup_ids=1000, lookups=2000, crashes=30, echoes=30, messages=200, workers=2
)
SMOKE = Profile("smoke", starts=20, lookup_ids=20, lookups=50, crashes=3, echoes=3, messages=10, workers=1)

HEARTBEAT, LEASE, SWEEP, GRACE = 0.5, 3.0, 1.0, 3.0
POLLING_INTERVAL = 0.1  # the embedded broker's, from tracking.celery.embedded_broker_options


class Run:
    """One benchmark run: its isolated resources, its settings, and what it measured."""

    def __init__(self, profile: Profile, tmp: Path) -> None:
        self.profile = profile
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
        from bench.trackers import CrashBench, LookupBench, StartBench

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

    def crash_restart(self, tracker: Any) -> dict[str, Any]:
        p = self.profile
        work = f"{self.base}-work"
        settings = self.settings(self.pg.url, services.REDIS_URL, work)
        app = self.app("pg-redis-work", settings)
        env = services.worker_env(
            {
                "TRACKING_DATABASE_URL": settings.database_url,
                "CELERY_BROKER_URL": settings.broker_url,
                "TRACKING_QUEUE": work,
                "TRACKING_IMPORTS": "bench.trackers",
                "TRACKING_HEARTBEAT_SECONDS": str(HEARTBEAT),
                "TRACKING_LEASE_SECONDS": str(LEASE),
                "TRACKING_SWEEP_SECONDS": str(SWEEP),
                "TRACKING_START_GRACE_SECONDS": str(GRACE),
            },
            {
                "CELERY_CONFIG_MODULE": "bench.workerconfig",
                "BENCH_REDIS_URL": services.REDIS_URL,
                "BENCH_REDIS_PREFIX": self.redis_prefix,
            },
        )
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


@contextlib.contextmanager
def _temp_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tracking-bench-") as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None, command: str = "python -m bench") -> int:
    parser = argparse.ArgumentParser(prog=command, description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts: check that it runs")
    parser.add_argument("--output", type=Path, help="write the results (Markdown) here")
    parser.add_argument("--no-write", action="store_true", help="print the results only")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    profile = SMOKE if args.smoke else FULL
    output = args.output or (None if args.smoke else services.REPO_ROOT / "docs" / "benchmarks.md")
    if args.no_write:
        output = None

    began = time.time()
    print(f"tracking benchmark ({profile.name} profile)", flush=True)
    with machine.LoadMonitor() as load, _temp_folder() as tmp:
        run = Run(profile, tmp)
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
    )
    print(doc.text())
    if output is not None:
        output.write_text(doc.markdown())
        shown = (
            output.relative_to(services.REPO_ROOT) if output.is_relative_to(services.REPO_ROOT) else output
        )
        print(f"wrote {shown}")
    return 1 if run.errors else 0


if __name__ == "__main__":
    raise SystemExit(main(command="python bench/run.py"))
