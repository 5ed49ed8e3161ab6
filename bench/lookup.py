"""b. `lookup()` against a raw SELECT of the same row.

{lookups} lookups of random IDs among {ids} registered ones, against the bare driver doing the
same read by the same unique key: the columns a reference shows, joined with the worker's lease
(`SELECT t.kind, ..., w.heartbeat_at FROM tracking_trackers t LEFT OUTER JOIN tracking_workers w
... WHERE t.kind = ... AND t.transaction_id = ...`; psycopg prepares it after five runs), on one
connection; the same IDs in the same order, alternating blocks of 100. `lookup()` reads its
statement, compiled once, on a connection of the registry's pool, in autocommit on PostgreSQL,
and validates the ID and builds the reference. Then `lookup_many` of all {ids} IDs in one call,
5 times: its time per ID beside lookup()'s p50.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
from collections.abc import Callable
from typing import Any

import psycopg

from bench import plots
from bench.context import Context
from bench.core import Section, Series, alternate, lat, ms, section
from bench.trackers import Idle

#: the same read as lookup's, written by hand: the columns a reference shows, with the lease
SQL = (
    "SELECT t.kind, t.transaction_id, t.status, t.epoch, t.task_id, t.worker, t.restarts, t.last_error,"
    " t.started_at, w.heartbeat_at FROM tracking_trackers t"
    " LEFT OUTER JOIN tracking_workers w ON w.id = t.worker_id WHERE t.kind = %s AND t.transaction_id = %s"
)


def latency(count: int, ids: list[str], raw: Callable[[str, str], Any]) -> dict[str, Any]:
    """``Idle.lookup`` of random registered IDs against ``raw(kind, txid)``."""
    for txid in ids:
        Idle.start(txid)
    rng = random.Random(1)
    order = [rng.choice(ids) for _ in range(count)]
    for txid in order[:50]:  # warm-up
        Idle.lookup(txid)
        raw(Idle.kind, txid)

    def ours(i: int) -> None:
        if Idle.lookup(order[i]) is None:
            raise AssertionError(f"lookup({order[i]!r}) of a registered ID found nothing")

    def bare(i: int) -> None:
        if raw(Idle.kind, order[i]) is None:
            raise AssertionError(f"the raw SELECT of {order[i]!r} found nothing")

    found, raws = alternate(count, 100, ours, bare)
    many = Series()
    for _ in range(5):
        if len(many.time(Idle.lookup_many, ids)) != len(ids):
            raise AssertionError("lookup_many of the registered IDs missed some")
    return {"lookup": found, "raw": raws, "lookup_many": many}


def on_postgres(ctx: Context, count: int, ids: list[str]) -> dict[str, Any]:
    ctx.app("lookup", ctx.settings("idle"))
    with psycopg.connect(ctx.pg.conninfo, autocommit=True) as conn:
        return latency(count, ids, lambda k, t: conn.execute(SQL, (k, t)).fetchone())


def on_sqlite(ctx: Context, count: int, ids: list[str]) -> dict[str, Any]:
    settings = ctx.embedded("idle-embedded")
    ctx.app("lookup-embedded", settings)
    sql = SQL.replace("%s", "?")
    with contextlib.closing(sqlite3.connect(settings.database_url.removeprefix("sqlite:///"))) as conn:
        return latency(count, ids, lambda k, t: conn.execute(sql, (k, t)).fetchone())


def run(ctx: Context) -> Section:
    count, registered = ctx.pick(2000, 50), ctx.pick(1000, 20)
    ids = [f"lookup-{i}" for i in range(registered)]
    out = section(__doc__, lookups=count, ids=registered)
    for label, raw, measure in (("PostgreSQL", "psycopg", on_postgres), ("SQLite", "sqlite3", on_sqlite)):
        res = out.data[label] = out.attempt(label, measure, ctx, count, ids)
        name = f"lookup() on {label}, {count} over {registered} IDs"
        if res is None:
            out.rows.append([name, "FAILED", "", ""])
            continue
        found, bare = Series(res["lookup"]), Series(res["raw"])
        ratio = f"{found.p50_ms / bare.p50_ms:.2f}x at p50"
        if label == "PostgreSQL":
            verdict = out.goal(
                "lookup() p50 within 1.3x a raw psycopg primary-key SELECT",
                f"p50 {ms(found.p50_ms)} against {ms(bare.p50_ms)}: {found.p50_ms / bare.p50_ms:.2f}x",
                found.p50_ms <= 1.3 * bare.p50_ms,
            )
            ratio += f" (goal 1.3x: {verdict})"
        out.rows.append([name, lat(found), f"{raw} SELECT {lat(bare)}", ratio])
        many = Series(res["lookup_many"])
        per_id = many.p50_ms / registered
        out.rows.append(
            [
                f"lookup_many() of {registered} IDs on {label}, 5 calls",
                f"p50 {ms(many.p50_ms)} a call, {ms(per_id)} an ID",
                f"lookup() p50 {ms(found.p50_ms)}",
                f"{found.p50_ms / per_id:.1f}x lookup()'s rate an ID",
            ]
        )

    def paint(ax: Any) -> None:
        lines = [
            plots.cdf(res[key], f"{what}, {label}", color + style)
            for (label, res), color in zip(out.data.items(), ("C0", "C1"), strict=True)
            if res is not None
            for key, what, style in (("lookup", "lookup()", "-"), ("raw", "raw SELECT", "--"))
        ]
        title = "b. lookup() against a raw SELECT of the same row (CDF)"
        plots.chart(ax, lines, title, "latency (ms, log scale)", "fraction of lookups", log="x")

    plots.draw(ctx, out, "lookup.png", "b. lookup() latency against a raw SELECT", paint)
    return out
