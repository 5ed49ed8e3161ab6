"""a. `start()` against its floor and a bare publish.

{count} distinct transaction IDs started one after another from one process (after 10 warm-up
calls), against `app.send_task` of a no-op task with the same arguments to the same queue through
the same app, and against start's floor: the bare driver (psycopg or sqlite3) inserting a row of
`tracking_trackers` with `INSERT ... ON CONFLICT DO NOTHING` and committing, then that `send_task`
(goal: start() at 0.8x the floor's rate or more); alternating blocks, so that drift in the
machine's load hits all three alike. Then `start_many` of {many} more distinct IDs in one call
(one registry transaction; past 8 new entries, one fan-out message per 1,000 that a worker turns
into their tracker messages), its rate beside start()'s of the same run (goal: 10x). No worker
consumes the queue: this is the cost of recording and publishing. The embedded default is SQLite
(WAL) plus the embedded broker (`embedded://`, kombu's filesystem transport with atomic writes) in
a temporary folder. Settings: heartbeat {heartbeat_seconds:g} s, lease {lease_seconds:g} s, sweep
{sweep_seconds:g} s, start grace {start_grace_seconds:g} s; Celery configured with
`tracking.celery.recommended_config` (as in b., c., d., g. and i.).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from bench.context import TIMING, Context
from bench.core import Section, Series, alternate, lat, rate, section
from bench.services import AMQP_URL
from bench.trackers import Idle
from tracking import Settings

FLOOR = (
    "INSERT INTO tracking_trackers (kind, transaction_id, status, epoch, task_id, args, policy,"
    " restart_times, started_at) VALUES (%s, %s, 'pending', 1, %s, '{{}}', '{{}}', '[]', {now})"
    " ON CONFLICT DO NOTHING"
)


@contextlib.contextmanager
def floor_insert(ctx: Context, settings: Settings) -> Iterator[Callable[[str], None]]:
    """The bare driver's INSERT ... ON CONFLICT DO NOTHING of a tracker row, committed."""
    if settings.database_url.startswith("sqlite"):
        sql = FLOOR.replace("%s", "?").format(now="CURRENT_TIMESTAMP")
        with contextlib.closing(sqlite3.connect(settings.database_url.removeprefix("sqlite:///"))) as lite:
            lite.execute("PRAGMA busy_timeout=30000")

            def insert_lite(txid: str) -> None:
                lite.execute(sql, ("bench-floor", txid, str(uuid.uuid4())))
                lite.commit()

            yield insert_lite
        return
    with psycopg.connect(ctx.pg.conninfo) as conn:
        sql_pg = FLOOR.format(now="now()")

        def insert_pg(txid: str) -> None:
            conn.execute(sql_pg, ("bench-floor", txid, str(uuid.uuid4())))
            conn.commit()

        yield insert_pg


def throughput(
    ctx: Context, stack: Callable[[], Settings], count: int, many: int, prefix: str
) -> dict[str, Any]:
    """``Idle.start`` of ``count`` distinct IDs against ``send_task`` of a no-op task and against
    the floor; then ``Idle.start_many`` of ``many`` IDs."""
    settings = stack()
    app = ctx.app(prefix, settings)

    def send(txid: str) -> None:
        app.send_task("bench.noop", args=[txid], kwargs={"epoch": 1}, queue=settings.queue, serializer="json")

    def start(i: int) -> None:
        if Idle.start(f"{prefix}-{i}").already_started:
            raise AssertionError(f"{prefix}-{i}, a new ID, came back already_started")

    with floor_insert(ctx, settings) as insert:

        def floor(i: int) -> None:
            insert(f"{prefix}-floor-{i}")
            send(f"{prefix}-floor-{i}")

        for i in range(min(10, count)):  # warm-up: connections, producer pool, prepared statements
            Idle.start(f"{prefix}-warm-{i}")
            send(f"{prefix}-warm-{i}")
            insert(f"{prefix}-warm-{i}")
        starts, sends, floors = alternate(
            count, max(10, count // 5), start, lambda i: send(f"{prefix}-{i}"), floor
        )
    began = time.perf_counter()
    refs = Idle.start_many([f"{prefix}-many-{i}" for i in range(many)])
    seconds = time.perf_counter() - began
    if len(refs) != many or any(ref.already_started for ref in refs.values()):
        raise AssertionError("start_many of new IDs came back with IDs missing or already started")
    return {
        "count": count,
        "start": starts,
        "send": sends,
        "floor": floors,
        "many": many,
        "start_many_seconds": seconds,
    }


def rows(out: Section, label: str, res: dict[str, Any] | None) -> list[list[str]]:
    if res is None:
        return [[label, "FAILED", "", ""]]
    starts, sends, floors = Series(res["start"]), Series(res["send"]), Series(res["floor"])
    start_rate, send_rate = len(starts) / sum(starts), len(sends) / sum(sends)
    floor_rate = len(floors) / sum(floors)
    many_rate = res["many"] / res["start_many_seconds"]
    near_floor = out.goal(
        f"start() at least 0.8x its floor, {label}",
        f"{rate(start_rate)} against {rate(floor_rate)}: {start_rate / floor_rate:.2f}x",
        start_rate >= 0.8 * floor_rate,
    )
    tenfold = out.goal(
        f"start_many() of {res['many']:,} at least 10x start(), {label}",
        f"{rate(many_rate)} against {rate(start_rate)}: {many_rate / start_rate:.1f}x",
        many_rate >= 10 * start_rate,
    )
    return [
        [
            f"start() x{res['count']}, {label}",
            f"{rate(start_rate)} ({lat(starts)})",
            f"floor (INSERT ... ON CONFLICT + commit + send_task) {rate(floor_rate)} ({lat(floors)}); "
            f"send_task alone {rate(send_rate)} ({lat(sends)})",
            f"{start_rate / floor_rate:.2f}x the floor's rate "
            f"(goal 0.8x: {near_floor}); {start_rate / send_rate:.2f}x send_task's",
        ],
        [
            f"start_many() of {res['many']}, {label}",
            f"{rate(many_rate)} (one call, {res['start_many_seconds']:.2f} s)",
            f"start() {rate(start_rate)}",
            f"{many_rate / start_rate:.1f}x start()'s rate (goal 10x: {tenfold})",
        ],
    ]


def run(ctx: Context) -> Section:
    count, many = ctx.pick(500, 20), ctx.pick(1000, 20)
    out = section(__doc__, count=count, many=many, **TIMING)
    stacks = {
        "PostgreSQL + Redis": lambda: ctx.settings("idle"),
        "PostgreSQL + RabbitMQ": lambda: ctx.settings("idle-amqp", broker_url=AMQP_URL),
        "SQLite + filesystem (embedded)": lambda: ctx.embedded("idle-embedded"),
    }
    for n, (label, settings) in enumerate(stacks.items()):
        res = out.attempt(label, throughput, ctx, settings, count, many, f"start{n}")
        out.data[label] = res
        out.rows.extend(rows(out, label, res))
    return out
