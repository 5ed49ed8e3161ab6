"""k.'s sweep and plots: how fast the workers tick parked trackers that are all due at once, against
the kind's batch size; and the lateness of k.'s windows against the registry's size."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from bench import pgstats, plots
from bench.context import Context
from bench.core import Section, spread
from bench.parkedrun import BACKLOG, ON_TIME, insert, sleep_until, tasks, usage
from bench.services import Fleet, wait_until
from bench.trackers import ParkedBench


def capacity(
    ctx: Context, fleet: Fleet, settings: Any, env: dict[str, str], batch: int, opts: dict[str, Any]
) -> dict[str, Any]:
    """Fresh workers whose kind ticks in batches of ``batch``; N entries all due within a second:
    the rate from the first due time to the last tick, and what each tick cost."""
    ctx.pg.truncate()
    names = [f"batch{batch}-{k + 1}" for k in range(opts["workers"])]
    env = {**env, "BENCH_PARKED_BATCH": str(batch)}
    workers = ctx.workers(fleet, names, settings, env=env, concurrency=opts["threads"])
    n, kind = opts["sweep_trackers"], ParkedBench.kind
    try:
        base = time.time() + 3.0
        insert(ctx, n, base, 1.0)
        sleep_until(base, workers)
        cpu0, pg0, msg0 = usage(workers, 1), pgstats.counters(ctx.pg.conninfo), tasks(ctx)
        finished = True
        try:
            wait_until(
                lambda: ctx.row(BACKLOG, ON_TIME, kind, base + 2.0)[0] == 0, opts["sweep_timeout"], 0.25
            )
        except TimeoutError:
            finished = False
        cpu1, pg1, msg1 = usage(workers, 1), pgstats.counters(ctx.pg.conninfo), tasks(ctx)
        read_at = time.time()
    finally:
        for worker in workers:
            worker.stop()
    with psycopg.connect(ctx.pg.conninfo, autocommit=True) as conn:
        sql = "SELECT state FROM tracking_trackers WHERE kind = %s"
        logs = [entry for (state,) in conn.execute(sql, (kind,)) for entry in (state or {}).get("log", [])]
    ticked = len(logs)
    last = max((t for _d, _s, t in logs), default=read_at) if finished else read_at
    seconds = max(1e-3, last - base)
    messages = sum(msg1.values()) - sum(msg0.values())
    out = {
        "batch": batch,
        "trackers": n,
        "ticked": ticked,
        "finished": finished,
        "seconds": seconds,
        "ticks_per_s": ticked / seconds,
        "cpu_ms_per_tick": 1000.0 * (sum(cpu1.values()) - sum(cpu0.values())) / ticked
        if ticked
        else float("nan"),
        "pg_per_tick": pgstats.per_tick(pg0, pg1, ticked),
        "messages_per_tick": messages / ticked if ticked else float("nan"),
        "late": spread([t - s for _d, s, t in logs]),
    }
    print(
        f"    batch {batch}: {out['ticks_per_s']:.0f} ticks/s, {out['cpu_ms_per_tick']:.2f} ms CPU/tick",
        flush=True,
    )
    return out


def rows(points: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for p in points:
        pg = p["pg_per_tick"]
        done = "" if p["finished"] else " (not all within the timeout)"
        out.append(
            [
                f"{p['batch']:,}",
                f"{p['ticks_per_s']:,.0f}{done}",
                f"{p['cpu_ms_per_tick']:.2f} ms",
                f"{p['messages_per_tick']:.4f}",
                f"{pg.get('statements', pg['scans']):.3f}",
                f"{pg['transactions']:.3f}",
                f"{p['ticked']:,} in {p['seconds']:.1f} s",
            ]
        )
    return out


COLUMNS = (
    "batch size",
    "ticks/s",
    "worker CPU per tick",
    "task messages per tick",
    "table scans per tick",
    "transactions per tick",
    "ticked",
)


def draw(
    ctx: Context, out: Section, points: list[dict[str, Any]], sizes: list[dict[str, Any]], o: Any
) -> None:
    """docs/bench/parked_batch.png and docs/bench/parked_lateness.png."""
    noop = next((r["baseline"]["noop"]["per_s"] for r in sizes if r and "baseline" in r), 0.0)
    if points:
        xs = [float(p["batch"]) for p in points]

        def paint_batch(ax1: Any, ax2: Any) -> None:
            lines: list[plots.Line] = [(xs, [p["ticks_per_s"] for p in points], "ticks/s", "o-")]
            if noop:
                lines.append(([xs[0], xs[-1]], [noop, noop], "bare Celery no-op tasks/s", "C2--"))
            need = 1_000_000 / o["interval"]
            title = f"{o['sweep_trackers']:,} parked trackers due at once"
            plots.chart(ax1, lines, title, "batch size", "ticks per second", log="x", goal=need)
            cost: list[plots.Line] = [
                (xs, [p["cpu_ms_per_tick"] for p in points], "worker CPU ms per tick", "o-"),
                (
                    xs,
                    [1000 * p["pg_per_tick"]["transactions"] for p in points],
                    "transactions per 1000 ticks",
                    "s-",
                ),
            ]
            plots.chart(ax2, cost, "cost per tick", "batch size", "per tick", log="xy")

        plots.draw(ctx, out, "parked_batch.png", "k. parked ticks against batch size", paint_batch, cols=2)
    ran = [r for r in sizes if r and "late_with_undelivered" in r]
    if len(ran) > 1:
        ns = [float(r["trackers"]) for r in ran]

        def paint_late(ax: Any) -> None:
            lines: list[plots.Line] = [
                (ns, [r["late_with_undelivered"][q] for r in ran], q, fmt)
                for q, fmt in (("p50", "o-"), ("p99", "s-"), ("max", "^:"))
            ]
            title = f"parked trackers, interval {o['interval']:g} s, batch {o['batch']}"
            plots.chart(ax, lines, title, "registered trackers", "lateness (s)", log="xy", goal=ON_TIME)

        plots.draw(ctx, out, "parked_lateness.png", "k. lateness against registry size", paint_late)
