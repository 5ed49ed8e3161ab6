"""The services the benchmark uses, each isolated to this run and cleaned up after it.

PostgreSQL: a database of the run's own, dropped at the end. Redis: a key prefix of the run's own
(kombu's ``global_keyprefix``), whose keys are deleted at the end. RabbitMQ: a queue (and its
exchange) of the run's own, deleted at the end. Workers: real ``celery -A tracking worker``
subprocesses in their own process group, stopped with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psycopg

PG_HOST = "127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
REPO_ROOT = Path(__file__).resolve().parent.parent


class PostgresDatabase:
    """A database of this run's own on the shared PostgreSQL."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.user = ""
        self._admin: psycopg.Connection[Any] | None = None

    def _connect_admin(self) -> psycopg.Connection[Any]:
        errors = []
        for user in ("postgres", "root"):
            try:
                return psycopg.connect(f"postgresql://{user}@{PG_HOST}/postgres", autocommit=True)
            except psycopg.OperationalError as exc:
                errors.append(f"{user}: {exc}")
        raise RuntimeError(f"PostgreSQL on {PG_HOST} is not reachable: {errors}")

    def create(self) -> None:
        self._admin = self._connect_admin()
        self.user = self._admin.info.user
        self._admin.execute(f'CREATE DATABASE "{self.name}"')

    @property
    def conninfo(self) -> str:
        """For psycopg itself (the raw-SQL baseline)."""
        return f"postgresql://{self.user}@{PG_HOST}/{self.name}"

    @property
    def url(self) -> str:
        """For SQLAlchemy (the registry)."""
        return f"postgresql+psycopg://{self.user}@{PG_HOST}/{self.name}"

    def server_version(self) -> str:
        assert self._admin is not None
        row = self._admin.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def truncate(self) -> None:
        """Empty the registry between benchmarks (the database is this run's own)."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(
                "TRUNCATE tracking_trackers, tracking_events, tracking_workers, tracking_supervisors,"
                " tracking_messages"
            )

    def drop(self) -> None:
        if self._admin is None:
            return
        self._admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (self.name,)
        )
        self._admin.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
        self._admin.close()
        self._admin = None


def redis_server_version() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return str(client.info("server").get("redis_version", "?"))
    finally:
        client.close()


def delete_redis_keys(prefix: str) -> int:
    """Delete every key of this run (they all start with ``prefix``); returns how many."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    deleted = 0
    try:
        for _round in range(100):  # bounded: a run leaves a few hundred keys at most
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if not keys:
                break
            deleted += client.delete(*keys)
    finally:
        client.close()
    return deleted


def rabbitmq_server_version() -> str:
    from kombu import Connection

    with Connection(AMQP_URL, connect_timeout=5) as conn:
        conn.connect()
        version = conn.connection.server_properties.get("version", "?")
        return version.decode() if isinstance(version, bytes) else str(version)


def delete_rabbitmq_queue(name: str) -> None:
    """Delete the run's queue and the direct exchange Celery declared for it."""
    from kombu import Connection

    with Connection(AMQP_URL, connect_timeout=5) as conn:
        channel = conn.channel()
        try:
            channel.queue_delete(name)
            channel.exchange_delete(name)
        finally:
            channel.close()


class Worker:
    """One ``celery -A <app> worker`` subprocess (``tracking`` unless told), in a process group of
    its own, so that a fault hits the whole group (``os.killpg``)."""

    def __init__(
        self,
        name: str,
        queue: str,
        env: dict[str, str],
        log_path: Path,
        *,
        app: str = "tracking",
        pool: str = "threads",
        concurrency: int = 50,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.queue = queue
        self.env = env
        self.log_path = log_path
        self.app = app
        self.pool = pool
        self.concurrency = concurrency
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                self.app,
                "worker",
                "-P",
                self.pool,
                "-c",
                str(self.concurrency),
                "-Q",
                self.queue,
                "--hostname",
                f"{self.name}@%h",
                "-l",
                "warning",
                *self.extra_args,
            ],
            env=self.env,
            cwd=REPO_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the whole process group at once (a lost machine), and reap the leader."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"worker {self.name} is not running")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole group (warm shutdown), then SIGKILL if it has not exited in time."""
        proc = self.proc
        if proc is None:
            return
        try:
            # Signal the group only while its leader is not yet reaped: its ID cannot be reused.
            if proc.poll() is None:
                _killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        finally:
            if self._log is not None:
                self._log.close()
            self.proc = None

    def log_problems(self, limit: int = 20) -> list[str]:
        """Lines of the worker's log that report an error (it logs at WARNING and above)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        marks = ("ERROR", "CRITICAL", "Traceback")
        return [line for line in text.splitlines() if any(m in line for m in marks)][:limit]

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def worker_env(settings_env: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment without any TRACKING_/CELERY_ variable, plus the run's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKING_", "CELERY_"))}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env.update(settings_env)
    env.update(extra)
    return env


@contextlib.contextmanager
def workers(names: list[str], queue: str, env: dict[str, str], log_dir: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        for name in names:
            worker = Worker(name, queue, env, log_dir / f"{name}.log")
            started.append(worker)
            worker.start()
        yield started
    finally:
        for worker in started:
            worker.stop()


class Fleet:
    """Workers started one at a time while a benchmark runs; every one still running is stopped
    at the end (SIGTERM on its group, then SIGKILL), whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Worker] = []

    def start(self, name: str, queue: str, env: dict[str, str], **options: Any) -> Worker:
        worker = Worker(name, queue, env, self.log_dir / f"{name}.log", **options)
        self.started.append(worker)
        worker.start()
        return worker

    def logs(self) -> str:
        return "\n".join(f"--- {w.name} log (tail) ---\n{w.log_tail()}" for w in self.started)

    def problems(self) -> list[str]:
        return [f"{w.name}: {line}" for w in self.started for line in w.log_problems()]

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *_exc: object) -> None:
        for worker in self.started:
            worker.stop()


def wait_until(predicate: Any, timeout: float, interval: float = 0.05, what: str = "condition") -> float:
    """Poll ``predicate`` until true (bounded in time and count); returns the seconds it took."""
    began = time.monotonic()
    deadline = began + timeout
    for _attempt in range(int(timeout / interval) + 2):
        if predicate():
            return time.monotonic() - began
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout} s")
