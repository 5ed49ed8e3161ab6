"""The services a run uses, each isolated to it and cleaned up after it.

PostgreSQL: a database of the run's own, dropped at the end. Redis: a key prefix of the run's own
(kombu's ``global_keyprefix``), whose keys are deleted at the end. RabbitMQ: queues of the run's
own, deleted at the end. Workers and probes: subprocesses in a process group of their own, stopped
with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import psycopg
import redis
from kombu.connection import Connection

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

    def create(self) -> None:
        errors = []
        for user in ("postgres", "root"):
            try:
                self._admin = psycopg.connect(f"postgresql://{user}@{PG_HOST}/postgres", autocommit=True)
                break
            except psycopg.OperationalError as exc:
                errors.append(f"{user}: {exc}")
        if self._admin is None:
            raise RuntimeError(f"PostgreSQL on {PG_HOST} is not reachable: {errors}")
        self.user = self._admin.info.user
        self._admin.execute(f'CREATE DATABASE "{self.name}"')

    @property
    def conninfo(self) -> str:
        """For psycopg itself (the raw-SQL baselines)."""
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
        """Empty the registry between sections."""
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
    with contextlib.closing(redis.Redis.from_url(REDIS_URL)) as client:
        return str(client.info("server").get("redis_version", "?"))


def delete_redis_keys(prefix: str) -> None:
    """Delete every key of this run (they all start with ``prefix``)."""
    with contextlib.closing(redis.Redis.from_url(REDIS_URL)) as client:
        for _round in range(100):  # bounded: a run leaves a few hundred keys at most
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if not keys:
                break
            client.delete(*keys)


def rabbitmq_server_version() -> str:
    with Connection(AMQP_URL, connect_timeout=5) as conn:  # type: ignore[no-untyped-call]
        conn.connect()
        version = conn.connection.server_properties.get("version", "?")
        return version.decode() if isinstance(version, bytes) else str(version)


def delete_rabbitmq_queue(name: str) -> None:
    """Delete a queue of the run and the direct exchange Celery declared for it."""
    with Connection(AMQP_URL, connect_timeout=5) as conn:  # type: ignore[no-untyped-call]
        channel = conn.channel()
        try:
            channel.queue_delete(name)
            channel.exchange_delete(name)
        finally:
            channel.close()


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment without TRACKING_, CELERY_ and PSYCOPG_ variables, ``bench``
    importable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKING_", "CELERY_", "PSYCOPG_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class Worker:
    """One ``celery -A <app> worker`` subprocess, in a process group of its own, so that a fault
    hits the whole group."""

    def __init__(self, name: str, queue: str, env: dict[str, str], log_path: Path, **options: Any) -> None:
        self.name = name
        self.log_path = log_path
        self.pool = options.pop("pool", "threads")
        self.concurrency = options.pop("concurrency", 50)
        args = ["-A", options.pop("app", "tracking"), "worker", "-P", self.pool, "-c", str(self.concurrency)]
        args += ["-Q", queue, "--hostname", f"{name}@%h", "-l", "warning", *options.pop("extra_args", ())]
        self._log: IO[bytes] = log_path.open("wb")
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "celery", *args],
            env=env,
            cwd=REPO_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(f"worker {self.name} exited:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a lost machine), and reap the leader."""
        self.check()
        assert self.proc is not None
        os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole group (warm shutdown), then SIGKILL if it has not exited in time."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:  # signal the group only while its leader is not reaped
                _killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        finally:
            self._log.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_problems(self, limit: int = 20) -> list[str]:
        """Lines of the worker's log that report an error (it logs at WARNING and above)."""
        marks = ("ERROR", "CRITICAL", "Traceback")
        return [line for line in self.log_text().splitlines() if any(m in line for m in marks)][:limit]

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class Fleet:
    """Workers started while a section runs; every one still running is stopped at the end, and
    their logs printed if the section failed."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Worker] = []

    def start(self, name: str, queue: str, env: dict[str, str], **options: Any) -> Worker:
        self.started.append(Worker(name, queue, env, self.log_dir / f"{name}.log", **options))
        return self.started[-1]

    def problems(self) -> list[str]:
        return [f"{w.name}: {line}" for w in self.started for line in w.log_problems()]

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, exc_type: object, *_exc: object) -> None:
        if exc_type is not None:
            for w in self.started:
                print(f"--- {w.name} log (tail) ---\n{w.log_tail()}", file=sys.stderr)
        for worker in self.started:
            worker.stop()


def wait_until(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition"
) -> float:
    """Poll ``predicate`` until true (bounded in time and count); returns the seconds it took."""
    began = time.monotonic()
    for _attempt in range(int(timeout / interval) + 2):
        if predicate():
            return time.monotonic() - began
        if time.monotonic() - began >= timeout:
            break
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout} s")


def run_json(module: str, args: Sequence[str], timeout: float) -> dict[str, Any]:
    """``python -m <module> <args>`` in a fresh interpreter (its own session, killed whole if it
    overruns); the JSON object it prints last."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=clean_env({}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{module} exited with {proc.returncode}:\n{err[-3000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result
