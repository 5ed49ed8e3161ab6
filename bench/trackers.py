"""What the benchmark's workers run: its tracker kinds and its plain Celery tasks.

Workers import this module through ``TRACKING_IMPORTS=bench.trackers``; the benchmark imports it
too, so that ``start``/``lookup``/``stop`` know the kinds.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from celery import shared_task

import tracking
from bench import replies
from bench.replies import push


class Idle(tracking.Tracker):
    """Started by sections a. and b. on a queue no worker consumes: never runs."""

    kind = "bench_idle"
    interval = 60.0

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        return state


class Counting:
    """Mixed into a tracker: counts its ticks (a checkpoint of a changed state every tick)."""

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"transaction_id": transaction_id, "ticks": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        state["ticks"] += 1
        return state


class CrashBench(Counting, tracking.Tracker):
    """c.: ticks every 0.2 s."""

    kind = "bench_crash"
    interval = 0.2


class LostBench(Counting, tracking.Tracker):
    """e.: ticks every 0.5 s on a worker that gets SIGKILLed. An incarnation that ran longer than
    ``max_seconds`` restarts at once, without backoff; the section lets each run that long."""

    kind = "bench_lost"
    interval = 0.5
    max_restarts, max_seconds = 3, 2.0


class LoadBench(Counting, tracking.Tracker):
    """g.: a poll every 5 s."""

    kind = "bench_load"
    interval = 5.0


class CapacityBench(Counting, tracking.Tracker):
    """h.: a poll every 30 s; never parks (it keeps its greenlet between ticks: a live tracker)."""

    kind = "bench_capacity"
    interval = 30.0
    park = False


class MessageBench(tracking.Tracker):
    """i.: answers calls with their message, counts casts; never parks."""

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


#: k.: how many ticks a parked tracker's state remembers
HISTORY = 16


class ParkedBench(tracking.Tracker):
    """k.: parks between ticks; each tick logs ``[due, scheduled, ticked]`` (wall clock). *scheduled*
    is when the runtime meant to tick (the inserted ``tick_at``, then the previous tick plus the
    interval), *due* the fixed schedule (first due + k intervals). The interval is read at import
    (``BENCH_PARKED_INTERVAL``), so that the benchmark and its workers agree."""

    kind = "bench_parked"
    interval = float(os.environ.get("BENCH_PARKED_INTERVAL", "300"))
    park = True
    batch_size = int(os.environ.get("BENCH_PARKED_BATCH", str(tracking.Tracker.batch_size)))

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        due, previous = float(state["due"]), state.get("ticked")
        scheduled = due if previous is None else float(previous) + self.interval
        log = [*state.get("log", [])[-(HISTORY - 1) :], [round(due, 3), round(scheduled, 3), round(now, 3)]]
        return {
            "due": due + self.interval,
            "ticks": int(state.get("ticks", 0)) + 1,
            "log": log,
            "ticked": now,
        }


def source(kind: str, ticks: int) -> None:
    """l.: one call to the fake source, answering for ``ticks`` ticks: a Redis INCR of the kind's
    calls and an INCRBY of its ticks (in all and by worker process), in one round trip (counters
    every worker process shares)."""
    key = f"{os.environ.get('BENCH_REDIS_PREFIX', '')}source:{kind}"
    pipe = replies.worker_client().pipeline(transaction=False)
    pipe.incr(f"{key}:calls")
    pipe.incrby(f"{key}:ticks", ticks)
    pipe.hincrby(f"{key}:by_process", str(os.getpid()), ticks)
    pipe.execute()


class _Polling:
    """Mixed into a tracker: each tick asks the fake source (one call per tick)."""

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        source(type(self).kind, 1)  # type: ignore[attr-defined]  # a Tracker's kind
        return {**state, "ticks": int(state.get("ticks", 0)) + 1}


class BulkSingle(_Polling, tracking.Tracker):
    """l.: parks between polls of the fake source, one call per tick (the baseline of BulkBench)."""

    kind = "bench_bulk_single"
    interval = float(os.environ.get("BENCH_BULK_INTERVAL", "10"))
    park = True
    batch_size = int(os.environ.get("BENCH_BULK_BATCH", "100"))


class BulkBench(BulkSingle):
    """l.: its parked trackers due together ask the fake source once for all (``tick_many``)."""

    kind = "bench_bulk"

    @classmethod
    def tick_many(cls, due: list[tuple[Any, dict[str, Any]]]) -> list[dict[str, Any]]:
        source(cls.kind, len(due))
        return [{**state, "ticks": int(state.get("ticks", 0)) + 1} for _tracker, state in due]


class RateFree(_Polling, tracking.Tracker):
    """l.: parked trackers that would tick more often than RateBench's limit (no limit: its baseline)."""

    kind = "bench_rate_free"
    interval = float(os.environ.get("BENCH_BULK_RATE_INTERVAL", "1"))
    park = True
    batch_size = 20


class RateBench(RateFree):
    """l.: the same, under a rate limit (ticks a second, every worker together)."""

    kind = "bench_rate"
    rate_limit = float(os.environ.get("BENCH_BULK_RATE", "100"))


def _count_task(sender: Any = None, task: Any = None, **_kwargs: Any) -> None:
    """k.: each task message a worker runs, counted by task name in a Redis hash."""
    name = str(getattr(task, "name", None) or getattr(sender, "name", "?"))
    replies.worker_client().hincrby(os.environ["BENCH_COUNT_TASKS"], name, 1)


if os.environ.get("BENCH_COUNT_TASKS"):
    from celery.signals import task_prerun

    task_prerun.connect(_count_task, weak=False)


@shared_task(name="bench.noop", ignore_result=True)  # type: ignore[untyped-decorator]
def noop(*_args: Any, **_kwargs: Any) -> None:
    """a.: the bare Celery baseline of ``start()``: published, never consumed."""


@shared_task(name="bench.echo", ignore_result=True)  # type: ignore[untyped-decorator]
def echo(reply_key: str) -> None:
    """c. and i.: a task that tells the benchmark it ran."""
    push(reply_key, "1", ttl=60)


@shared_task(name="bench.driver_info", ignore_result=True)  # type: ignore[untyped-decorator]
def driver_info(reply_key: str) -> None:
    """h.: which wait function psycopg chose in this worker process, and whether gevent patched it."""
    import psycopg.waiting

    monkey = sys.modules.get("gevent.monkey")
    patched = bool(monkey and monkey.is_module_patched("select"))
    info = {
        "wait_function": getattr(psycopg.waiting.wait, "__name__", "?"),
        "select_patched": patched,
        "pid": os.getpid(),
    }
    push(reply_key, json.dumps(info), ttl=60)


@shared_task(name="bench.sleep", ignore_result=True)  # type: ignore[untyped-decorator]
def sleep(key: str, seconds: float) -> None:
    """h.: bare Celery's long task, the baseline of a live tracker: says it runs (a Redis INCR; the
    first also when, by the wall clock), then sleeps (a gevent sleep in a gevent worker) until the
    worker is killed or ``seconds`` pass."""
    if replies.worker_client().incr(key) == 1:
        replies.worker_client().set(f"{key}:first", time.time())
    time.sleep(min(float(seconds), 900.0))


@shared_task(name="bench.count", ignore_result=True)  # type: ignore[untyped-decorator]
def count(key: str, total: int) -> None:
    """k.: one Redis INCR; the first and the last of ``total`` record when they ran."""
    now = time.time()
    done = int(replies.worker_client().incr(key))
    if done == 1:
        replies.worker_client().set(f"{key}:first", now)
    if done == total:
        replies.worker_client().set(f"{key}:last", time.time())


@shared_task(name="bench.at", ignore_result=True)  # type: ignore[untyped-decorator]
def at(key: str, eta: float) -> None:
    """k.: a task sent with an ETA: says how late it ran."""
    push(key, json.dumps([eta, round(time.time() - eta, 4)]))
