"""A run's context: its isolated services, the settings, apps and workers sections ask for, what
earlier sections of the same run measured, and the cleanup that runs whatever happens."""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import redis
from celery import Celery

import tracking
from bench import services
from bench.core import Section
from bench.replies import ask
from bench.services import REDIS_URL, Fleet, Worker, wait_until
from tracking import registry
from tracking.celery import recommended_config

T = TypeVar("T")

#: the timings of most sections (e., f., h. and k. set their own)
TIMING = {"heartbeat_seconds": 0.5, "lease_seconds": 3.0, "sweep_seconds": 1.0, "start_grace_seconds": 3.0}


class Context:
    """One run: a PostgreSQL database, a Redis key prefix and queues of its own, a temporary folder."""

    def __init__(self, smoke: bool, tmp: Path, plot_dir: Path | None) -> None:
        self.smoke = smoke
        self.tmp = tmp
        #: where sections draw their plots (None: matplotlib is missing)
        self.plot_dir = plot_dir
        self.base = f"tracking-bench-{uuid.uuid4().hex[:8]}"
        self.redis_prefix = f"{self.base}:"
        self.pg = services.PostgresDatabase(self.base.replace("-", "_"))
        self.redis = redis.Redis.from_url(REDIS_URL)
        #: the sections run so far, by name
        self.done: dict[str, Section] = {}
        self.servers: dict[str, str] = {}
        self._cleanups: list[Callable[[], Any]] = [self.redis.close]

    def __enter__(self) -> Context:
        try:
            self.pg.create()
            self.on_cleanup(self.pg.drop)
            self.on_cleanup(lambda: services.delete_redis_keys(self.redis_prefix))
            self.servers = {
                "postgresql": self.pg.server_version(),
                "redis": services.redis_server_version(),
                "rabbitmq": services.rabbitmq_server_version(),
            }
            registry.migrate(self.settings("idle"))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception as exc:  # clean up everything else anyway, and say what was left
                print(f"cleanup step failed: {type(exc).__name__}: {exc}", flush=True)

    def on_cleanup(self, fn: Callable[[], Any]) -> None:
        self._cleanups.append(fn)

    def pick(self, full: T, smoke: T) -> T:
        return smoke if self.smoke else full

    def option(self, section: str, name: str, default: T) -> T:
        """A section's option: ``BENCH_<SECTION>_<NAME>`` from the environment, else ``default``."""
        raw = os.environ.get(f"BENCH_{section}_{name}".upper())
        if raw is None:
            return default
        return type(default)(raw)  # type: ignore[call-arg]

    def earlier(self, name: str) -> dict[str, Any] | None:
        """What an earlier section of this run measured (None: not run, or failed)."""
        done = self.done.get(name)
        return done.data if done is not None and done.data else None

    # -- settings, apps, workers --------------------------------------------------------------------

    def settings(
        self, queue: str, *, database_url: str = "", broker_url: str = REDIS_URL, **extra: Any
    ) -> tracking.Settings:
        """Settings on the run's database and Redis unless told, on a queue of the run's own."""
        return tracking.Settings(
            database_url=database_url or self.pg.url,
            broker_url=broker_url,
            queue=f"{self.base}-{queue}",
            imports=("bench.trackers",),
            **{**TIMING, **extra},
        )

    def embedded(self, queue: str) -> tracking.Settings:
        """Settings of the embedded default, SQLite and the embedded broker, in a folder of their own
        (migrated)."""
        folder = self.tmp / queue
        folder.mkdir(exist_ok=True)
        database_url = f"sqlite:///{folder / 'tracking.sqlite3'}"
        settings = self.settings(
            queue,
            database_url=database_url,
            broker_url="embedded://localhost//",
            broker_folder=str(folder / "broker"),
        )
        registry.migrate(settings)
        return settings

    def app(self, name: str, settings: tracking.Settings) -> Celery:
        """A Celery app with tracking's recommended configuration, installed: trackers publish with it."""
        app = Celery(f"bench-{name}", set_as_current=False)
        conf = recommended_config(settings)
        if settings.broker_url.startswith("redis:"):
            conf["broker_transport_options"] = {"global_keyprefix": self.redis_prefix}
        app.conf.update(conf)
        tracking.install(app, settings)
        self.on_cleanup(app.pool.force_close_all)
        self.on_cleanup(lambda: registry.dispose(settings))
        if settings.broker_url.startswith("amqp:"):
            self.on_cleanup(lambda: services.delete_rabbitmq_queue(str(settings.queue)))
        return app

    def workers(
        self,
        fleet: Fleet,
        names: list[str],
        settings: tracking.Settings,
        env: dict[str, str] | None = None,
        **options: Any,
    ) -> list[Worker]:
        """Start ``celery -A tracking worker`` processes (``env`` added to their environment) and wait
        until each has registered its lease (on PostgreSQL)."""
        env = worker_env(settings, self.redis_prefix, **(env or {}))
        started = [fleet.start(name, str(settings.queue), env, **options) for name in names]
        if settings.database_url.startswith("sqlite"):  # the caller waits for one to answer a task
            return started

        def registered() -> bool:
            for worker in started:
                worker.check()
            sql = "SELECT count(*) FROM tracking_workers WHERE status = 'alive' AND hostname LIKE ANY(%s)"
            return int(self.scalar(sql, [f"{name}@%" for name in names])) >= len(names)

        wait_until(registered, timeout=120, interval=0.2, what=f"workers {', '.join(names)} registered")
        return started

    def fleet(self) -> Fleet:
        return Fleet(self.tmp)

    # -- the raw baselines' helpers -----------------------------------------------------------------

    def row(self, sql: str, *params: Any) -> tuple[Any, ...]:
        """One row from the run's database, through psycopg."""
        with psycopg.connect(self.pg.conninfo, autocommit=True) as conn:
            row = conn.execute(sql, params).fetchone()
        assert row is not None
        return tuple(row)

    def scalar(self, sql: str, *params: Any) -> Any:
        return self.row(sql, *params)[0]

    def echo(self, app: Celery, queue: str | None, timeout: float = 10.0) -> float:
        """Bare Celery: seconds from publishing a task until a worker runs it."""
        t0 = time.perf_counter()
        ask(app, "bench.echo", queue, self.redis, self.redis_prefix, timeout)
        return time.perf_counter() - t0


def worker_env(settings: tracking.Settings, redis_prefix: str, **extra: str) -> dict[str, str]:
    """The environment of a ``celery -A tracking worker`` with these settings."""
    env = {
        "CELERY_CONFIG_MODULE": "bench.workerconfig",
        "BENCH_REDIS_URL": REDIS_URL,
        "TRACKING_DATABASE_URL": settings.database_url,
        "CELERY_BROKER_URL": settings.broker_url,
        "TRACKING_BROKER_FOLDER": settings.broker_folder,
        "TRACKING_QUEUE": str(settings.queue),
        "TRACKING_IMPORTS": "bench.trackers",
    }
    timings = {k: v for k, v in dataclasses.asdict(settings).items() if k.endswith("_seconds")}
    env.update({f"TRACKING_{k.upper()}": str(v) for k, v in timings.items()})
    if settings.broker_url.startswith("redis:"):  # the embedded broker has options of its own
        env["BENCH_REDIS_PREFIX"] = redis_prefix
    return services.clean_env({**env, **extra})


def start_running(tracker: Any, ids: list[str], timeout: float = 60.0) -> None:
    """Start the trackers and wait until every one runs."""
    for txid in ids:
        tracker.start(txid)
    waiting = set(ids)

    def all_running() -> bool:
        for txid in list(waiting):
            ref = tracker.lookup(txid)
            if ref is not None and ref.status == "running":
                waiting.discard(txid)
        return not waiting

    wait_until(all_running, timeout, interval=0.1, what=f"{len(ids)} trackers running")
