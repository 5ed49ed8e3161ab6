"""What the benchmark's workers run: its tracker kinds and two plain Celery tasks.

Workers import this module through ``TRACKING_IMPORTS=bench.trackers``; the bench process imports
it too, so that ``start``/``lookup``/``stop`` know the kinds.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis
from celery import shared_task

import tracking


class StartBench(tracking.Tracker):
    """Started by the ``start()`` benchmark only, on a queue no worker consumes: never runs."""

    kind = "bench_start"
    interval = 60.0

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        return state


class LookupBench(tracking.Tracker):
    """Registered (pending) for the ``lookup()`` benchmark; never runs either."""

    kind = "bench_lookup"
    interval = 60.0

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        return state


class CrashBench(tracking.Tracker):
    """The crash-to-restart benchmark's tracker: ticks every 0.2 s and keeps its state."""

    kind = "bench_crash"
    interval = 0.2

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"transaction_id": transaction_id}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        return state


class LostBench(tracking.Tracker):
    """The lost-worker benchmark's tracker: ticks every 0.5 s on a worker that gets SIGKILLed.

    ``max_seconds`` 2: an incarnation that ran longer than that restarts at once, without backoff,
    and the benchmark lets each one run that long before the next kill.
    """

    kind = "bench_lost"
    interval = 0.5
    max_restarts, max_seconds = 3, 2.0

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"transaction_id": transaction_id, "ticks": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        state["ticks"] += 1
        return state


class LoadBench(tracking.Tracker):
    """The write-rate benchmark's tracker: a poll every 5 s, checkpointing a changed state."""

    kind = "bench_load"
    interval = 5.0

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"transaction_id": transaction_id, "confirmations": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        state["confirmations"] += 1
        return state


@shared_task(name="bench.noop", ignore_result=True)
def noop() -> None:
    """The bare Celery baseline of ``start()``: published, never consumed."""


_client: redis.Redis | None = None
_client_lock = threading.Lock()


def _redis() -> redis.Redis:
    global _client
    with _client_lock:
        if _client is None:
            # Set by the benchmark for its workers; loopback only.
            _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        return _client


@shared_task(name="bench.echo", ignore_result=True)
def echo(reply_key: str) -> None:
    """The bare Celery baseline of a restart: a task that tells the benchmark it is running."""
    client = _redis()
    client.rpush(reply_key, "1")
    client.expire(reply_key, 60)


class CapacityBench(tracking.Tracker):
    """The capacity benchmark's tracker: polls every 30 s, checkpointing a changed state; never
    parks (it keeps its greenlet between ticks: a live tracker)."""

    kind = "bench_capacity"
    interval = 30.0
    park = False

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"transaction_id": transaction_id, "polls": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        state["polls"] += 1
        return state


class MessageBench(tracking.Tracker):
    """The messages benchmark's tracker: answers calls with their message, counts casts; ticks
    every 30 s and never parks (it stays on its worker slot between ticks)."""

    kind = "bench_messages"
    interval = 30.0
    park = False

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"casts": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        return state

    def handle_call(self, message: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return message, state

    def handle_cast(self, message: Any, state: dict[str, Any]) -> dict[str, Any]:
        state["casts"] += 1
        return state


@shared_task(name="bench.driver_info", ignore_result=True)
def driver_info(reply_key: str) -> None:
    """Which wait function psycopg chose in this worker process, and whether gevent patched it."""
    import json
    import sys

    import psycopg.waiting

    monkey = sys.modules.get("gevent.monkey")
    info = {
        "wait_function": psycopg.waiting.wait.__name__,
        "select_patched": bool(monkey and monkey.is_module_patched("select")),
        "pid": os.getpid(),
    }
    client = _redis()
    client.rpush(reply_key, json.dumps(info))
    client.expire(reply_key, 60)
