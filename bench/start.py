"""a. `start()` against a bare publish.

{count} distinct transaction IDs started one after another from one process (after 10 warm-up
calls), against `app.send_task` of a no-op task with the same arguments to the same queue through
the same app; alternating blocks, so that drift in the machine's load hits both alike. Then
`start_many` of {count} more distinct IDs in one call (one registry transaction, a publish each),
its rate beside start()'s of the same run. No worker
consumes the queue: this is the cost of recording and publishing. The embedded default is SQLite
(WAL) plus the embedded broker (`embedded://`, kombu's filesystem transport with atomic writes) in
a temporary folder. Settings: heartbeat {heartbeat_seconds:g} s, lease {lease_seconds:g} s, sweep
{sweep_seconds:g} s, start grace {start_grace_seconds:g} s; Celery configured with
`tracking.celery.recommended_config` (as in b., c., d., g. and i.).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.context import TIMING, Context
from bench.core import Section, Series, alternate, lat, rate, section
from bench.services import AMQP_URL
from bench.trackers import Idle
from tracking import Settings


def throughput(ctx: Context, stack: Callable[[], Settings], count: int, prefix: str) -> dict[str, Any]:
    """``Idle.start`` of ``count`` distinct IDs against ``send_task`` of a no-op task."""
    settings = stack()
    app = ctx.app(prefix, settings)

    def send(txid: str) -> None:
        app.send_task("bench.noop", args=[txid], kwargs={"epoch": 1}, queue=settings.queue, serializer="json")

    def start(i: int) -> None:
        if Idle.start(f"{prefix}-{i}").already_started:
            raise AssertionError(f"{prefix}-{i}, a new ID, came back already_started")

    for i in range(min(10, count)):  # warm-up: connections, producer pool, prepared statements
        Idle.start(f"{prefix}-warm-{i}")
        send(f"{prefix}-warm-{i}")
    starts, sends = alternate(count, max(10, count // 5), start, lambda i: send(f"{prefix}-{i}"))
    began = time.perf_counter()
    refs = Idle.start_many([f"{prefix}-many-{i}" for i in range(count)])
    many = time.perf_counter() - began
    if len(refs) != count or any(ref.already_started for ref in refs.values()):
        raise AssertionError("start_many of new IDs came back with IDs missing or already started")
    return {"count": count, "start": starts, "send": sends, "start_many_seconds": many}


def rows(label: str, res: dict[str, Any] | None) -> list[list[str]]:
    if res is None:
        return [[label, "FAILED", "", ""]]
    starts, sends = Series(res["start"]), Series(res["send"])
    start_rate, send_rate = len(starts) / sum(starts), len(sends) / sum(sends)
    many_rate = res["count"] / res["start_many_seconds"]
    return [
        [
            f"start() x{res['count']}, {label}",
            f"{rate(start_rate)} ({lat(starts)})",
            f"send_task {rate(send_rate)} ({lat(sends)})",
            f"{start_rate / send_rate:.2f}x the rate",
        ],
        [
            f"start_many() of {res['count']}, {label}",
            f"{rate(many_rate)} (one call, {res['start_many_seconds']:.2f} s)",
            f"start() {rate(start_rate)}",
            f"{many_rate / start_rate:.1f}x start()'s rate",
        ],
    ]


def run(ctx: Context) -> Section:
    count = ctx.pick(500, 20)
    out = section(__doc__, count=count, **TIMING)
    stacks = {
        "PostgreSQL + Redis": lambda: ctx.settings("idle"),
        "PostgreSQL + RabbitMQ": lambda: ctx.settings("idle-amqp", broker_url=AMQP_URL),
        "SQLite + filesystem (embedded)": lambda: ctx.embedded("idle-embedded"),
    }
    for n, (label, settings) in enumerate(stacks.items()):
        res = out.attempt(label, throughput, ctx, settings, count, f"start{n}")
        out.data[label] = res
        out.rows.extend(rows(label, res))
    return out
