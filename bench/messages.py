"""i. `call` and `cast`.

One tracker (interval {interval:g} s) on a `-P threads -c 20` worker; {calls} calls (`call(id,
{{"n": i}})`, answered with the message) in blocks of 20, alternating with blocks of the bare Celery
round trip (`send_task` of a task that pushes to a Redis list the benchmark waits on with BLPOP,
through the same broker and worker) and of the raw SQL round trip (an INSERT of a message row into
a table shaped like `tracking_messages`, then a SELECT of it by id, through psycopg or sqlite3 in
autocommit: the least a mailbox in the database costs). On PostgreSQL the queuing statement
sends NOTIFY and the worker's listening connection wakes the tracker, whose statement recording
the answer announces it to the caller's listening connection (one per calling process); on
SQLite the worker's control poll (every {poll:g} s) finds the mail and the caller polls. Then
{casts} casts back to back from one thread (accepted/s), and the time from the first until the
tracker's checkpointed state counts all of them (handled/s); the baseline is the same number of
raw INSERTs of that row, one transaction each.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import psycopg

from bench import plots
from bench.context import Context, start_running
from bench.core import Section, Series, alternate, lat, ms, rate, secs, section
from bench.services import wait_until
from bench.trackers import MessageBench

TABLE = """CREATE TABLE IF NOT EXISTS bench_messages (id {id}, kind varchar(255) NOT NULL,
    transaction_id varchar(255) NOT NULL, type varchar(8) NOT NULL, status varchar(8) NOT NULL,
    body {json} NOT NULL, reply {json}, created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP)"""
INSERT = """INSERT INTO bench_messages (kind, transaction_id, type, status, body)
    VALUES ({}, {}, 'call', 'queued', {})"""
SELECT = "SELECT status, body FROM bench_messages WHERE id = {}"
STACKS = ("PostgreSQL + Redis (LISTEN/NOTIFY wake-up)", "SQLite + embedded broker (control polling)")
Raw = tuple[Callable[[str], Any], Callable[[Any], Any]]


def pg_raw(conn: psycopg.Connection[Any]) -> Raw:
    """psycopg on one autocommit connection: every statement its own transaction."""
    conn.execute(TABLE.format(id="bigserial PRIMARY KEY", json="jsonb"))
    insert, select = INSERT.format("%s", "%s", "%s::jsonb") + " RETURNING id", SELECT.format("%s")
    return (
        lambda body: conn.execute(insert, (MessageBench.kind, "raw", body)).fetchone()[0],  # type: ignore[index]
        lambda row_id: conn.execute(select, (row_id,)).fetchone(),
    )


def sqlite_raw(conn: sqlite3.Connection) -> Raw:
    """sqlite3 in autocommit mode on the registry's own file."""
    conn.execute(TABLE.format(id="INTEGER PRIMARY KEY AUTOINCREMENT", json="text"))
    insert, select = INSERT.format("?", "?", "?"), SELECT.format("?")
    return (
        lambda body: conn.execute(insert, (MessageBench.kind, "raw", body)).lastrowid,
        lambda row_id: conn.execute(select, (row_id,)).fetchone(),
    )


def measure(ctx: Context, settings: Any, raw_sql: Raw, calls: int, casts: int) -> dict[str, Any]:
    """call() against the bare Celery and raw SQL round trips; casts accepted and handled."""
    insert, select = raw_sql
    app, txid, body = (
        ctx.app(f"msg-{settings.queue}", settings),
        "msg",
        json.dumps({"n": 0, "hello": "world"}),
    )
    with ctx.fleet() as fleet:
        ctx.workers(fleet, [str(settings.queue).removeprefix(f"{ctx.base}-")], settings, concurrency=20)
        ctx.echo(app, settings.queue, timeout=60)
        start_running(MessageBench, [txid])

        def call(i: int) -> None:
            if (reply := MessageBench.call(txid, {"n": i}, timeout=30)) != {"n": i}:
                raise AssertionError(f"call {i} answered {reply!r}")

        def raw(_i: int) -> None:
            if select(insert(body)) is None:
                raise AssertionError("the raw INSERT was not found by its id")

        def echo(_i: int) -> None:
            ctx.echo(app, settings.queue, timeout=30)

        for i in range(5):  # warm-up
            for op in (call, echo, raw):
                op(i)
        out = dict(zip(("call", "celery", "raw"), alternate(calls, 20, call, echo, raw), strict=True))
        t0 = time.perf_counter()
        for i in range(casts):
            MessageBench.cast(txid, {"n": i})
        accepted = time.perf_counter() - t0
        wait_until(
            lambda: (MessageBench.get_state(txid) or {}).get("casts", 0) >= casts,
            300,
            0.01,
            f"{casts} casts handled",
        )
        handled = time.perf_counter() - t0
        raws = Series()
        raws.time(lambda: [insert(body) for _ in range(casts)])
        MessageBench.stop(txid, timeout=30)
        problems = fleet.problems()
    cast = {
        "accepted_per_s": casts / accepted,
        "handled_per_s": casts / handled,
        "handled_s": handled,
        "raw_insert_per_s": casts / raws[0],
    }
    return {**out, "cast": cast, "worker_log_problems": problems}


def on_postgres(ctx: Context, calls: int, casts: int) -> dict[str, Any]:
    with psycopg.connect(ctx.pg.conninfo, autocommit=True) as conn:
        return measure(ctx, ctx.settings("msg"), pg_raw(conn), calls, casts)


def on_sqlite(ctx: Context, calls: int, casts: int) -> dict[str, Any]:
    settings = ctx.embedded("msg-embedded")
    path = settings.database_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None, timeout=30)) as conn:
        return measure(ctx, settings, sqlite_raw(conn), calls, casts)


def run(ctx: Context) -> Section:
    calls, casts = ctx.pick(300, 20), ctx.pick(1000, 50)
    out = section(
        __doc__,
        interval=MessageBench.interval,
        calls=calls,
        casts=casts,
        poll=ctx.settings("msg").control_poll_seconds,
    )
    out.columns = (
        "stack", f"call() x{calls}: p50 / p99 / max", "bare Celery round trip p50 / p99",
        "raw INSERT + SELECT p50 / p99", "call() / Celery at p50",
        f"casts accepted/s ({casts} from one thread)", "casts handled/s by the tracker",
        "raw INSERTs/s, one transaction each", "accepted / raw INSERT rate",
    )  # fmt: skip
    for label, measure_on in zip(STACKS, (on_postgres, on_sqlite), strict=True):
        res = out.data[label] = out.attempt(label, measure_on, ctx, calls, casts)
        if res is None:
            out.rows.append([label, "FAILED"])
            continue
        c, celery, raw, cast = Series(res["call"]), Series(res["celery"]), Series(res["raw"]), res["cast"]
        verdict = out.goal(
            f"call() p50 within 2x a bare Celery round trip, {label}",
            f"p50 {ms(c.p50_ms)} against {ms(celery.p50_ms)}: {c.p50_ms / celery.p50_ms:.1f}x",
            c.p50_ms <= 2 * celery.p50_ms,
        )
        out.rows.append(
            [
                label, f"{ms(c.p50_ms)} / {ms(c.p99_ms)} / {ms(c.max_ms)}", lat(celery), lat(raw),
                f"{c.p50_ms / celery.p50_ms:.1f}x (goal 2x: {verdict})",
                rate(cast["accepted_per_s"]),
                f"{rate(cast['handled_per_s'])} (all within {secs(cast['handled_s'])} of the first cast)",
                rate(cast["raw_insert_per_s"]), f"{cast['accepted_per_s'] / cast['raw_insert_per_s']:.2f}x",
            ]
        )  # fmt: skip

    def paint(*axes: Any) -> None:
        for ax, (label, res) in zip(axes, out.data.items(), strict=True):
            kinds = (
                ("call", "call()", "-"),
                ("celery", "bare Celery round trip", "--"),
                ("raw", "raw SQL", ":"),
            )
            lines = [plots.cdf(res[key], what, style) for key, what, style in kinds] if res else []
            plots.chart(
                ax, lines, f"i. call, {label}", "round trip (ms, log scale)", "fraction of calls", log="x"
            )

    plots.draw(ctx, out, "messages.png", "i. call round trip against its baselines", paint, cols=2)
    return out
