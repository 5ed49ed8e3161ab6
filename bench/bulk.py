"""l. Bulk source polling and a rate limit across workers (PostgreSQL + Redis).

The source is a fake one every worker process shares: each call is a Redis INCR of the kind's calls
and an INCRBY of the ticks it answers for, in one round trip. Entries are inserted straight into the
registry as `parked`, their first ticks spread evenly over one interval, and ticked by {workers} real
`celery -A tracking worker -P threads -c {threads}` processes (tracking's default timings). Bulk
polling: {trackers:,} trackers of `bench_bulk` (`batch_size = {batch}`, a `tick_many` that calls the
source once for the whole batch) and, in the same window, {single_trackers:,} of `bench_bulk_single`
(the same `batch_size`, no `tick_many`: each tick calls the source), both at an interval of
{interval:g} s; source calls and ticks counted over {window:g} s after {warmup:g} s of warm-up.
Issue 13's goal: source calls per tick well under 0.05 at batch 100 (here: under 0.05). How full a
batch gets is bounded by how many entries of the kind fall due between two waker rounds: a waker
sleeps the control poll (0.1 s) after a round that took fewer than its 500, and every worker
process runs one. Rate limit: {rate_trackers:,} trackers of `bench_rate` (`rate_limit = {rate:g}`
ticks a second, every worker together; `batch_size = 20`; interval {rate_interval:g} s, that is
{demand:,.0f} ticks a second wanted) on the same {workers} worker processes; ticks counted over
{rate_window:g} s after {warmup:g} s of warm-up (the bucket's burst spent). Its baseline, just
before on fresh workers: the same trackers of `bench_rate_free`, no limit. Goal: within 5 % of
the limit. Options: `BENCH_BULK_TRACKERS`, `BENCH_BULK_SINGLE_TRACKERS`, `BENCH_BULK_INTERVAL`,
`BENCH_BULK_BATCH`, `BENCH_BULK_WINDOW`, `BENCH_BULK_WARMUP`, `BENCH_BULK_WORKERS`,
`BENCH_BULK_THREADS`, `BENCH_BULK_RATE`, `BENCH_BULK_RATE_TRACKERS`, `BENCH_BULK_RATE_INTERVAL`,
`BENCH_BULK_RATE_WINDOW`.
"""

from __future__ import annotations

import time
from typing import Any

import tracking
from bench.context import TIMING, Context
from bench.core import Section, section
from bench.parkedrun import insert, sleep_until, usage
from bench.services import Fleet
from bench.trackers import BulkBench, BulkSingle, RateBench, RateFree

DEFAULTS = {k: getattr(tracking.Settings(), k) for k in TIMING}  # tracking's own timings


def options(ctx: Context) -> dict[str, Any]:
    o: dict[str, Any] = {
        "trackers": ctx.option("bulk", "trackers", ctx.pick(20_000, 500)),
        "single_trackers": ctx.option("bulk", "single_trackers", ctx.pick(2_000, 100)),
        "interval": ctx.option("bulk", "interval", ctx.pick(15.0, 5.0)),
        "batch": ctx.option("bulk", "batch", 100),
        "window": ctx.option("bulk", "window", ctx.pick(30.0, 10.0)),
        "warmup": ctx.option("bulk", "warmup", ctx.pick(5.0, 3.0)),
        "workers": ctx.option("bulk", "workers", 3),
        "threads": ctx.option("bulk", "threads", 8),
        "rate": ctx.option("bulk", "rate", ctx.pick(100.0, 20.0)),
        "rate_trackers": ctx.option("bulk", "rate_trackers", ctx.pick(400, 60)),
        "rate_interval": ctx.option("bulk", "rate_interval", 1.0),
        "rate_window": ctx.option("bulk", "rate_window", ctx.pick(30.0, 10.0)),
    }
    o["demand"] = o["rate_trackers"] / o["rate_interval"]
    return o


def counters(ctx: Context, kinds: list[str]) -> dict[str, dict[str, Any]]:
    """Each kind's source calls and ticks so far, and its ticks by worker process, read at once."""
    pipe = ctx.redis.pipeline(transaction=True)
    for kind in kinds:
        key = f"{ctx.redis_prefix}source:{kind}"
        pipe.get(f"{key}:calls")
        pipe.get(f"{key}:ticks")
        pipe.hgetall(f"{key}:by_process")
    got = pipe.execute()
    out = {}
    for k, kind in enumerate(kinds):
        calls, ticks, by = got[3 * k : 3 * k + 3]
        out[kind] = {
            "calls": int(calls or 0),
            "ticks": int(ticks or 0),
            "by": {a.decode(): int(b) for a, b in by.items()},
        }
    return out


def part(
    ctx: Context,
    fleet: Fleet,
    name: str,
    kinds: list[tuple[Any, int, float]],
    o: dict[str, Any],
    window: float,
) -> dict[str, Any]:
    """Fresh workers; the kinds' entries inserted; their counters over the window after a warm-up."""
    ctx.pg.truncate()
    env = {
        "BENCH_BULK_INTERVAL": repr(o["interval"]),
        "BENCH_BULK_BATCH": str(o["batch"]),
        "BENCH_BULK_RATE": repr(o["rate"]),
        "BENCH_BULK_RATE_INTERVAL": repr(o["rate_interval"]),
    }
    settings = ctx.settings("bulk", **DEFAULTS)
    names = [f"{name}{k + 1}" for k in range(o["workers"])]
    workers = ctx.workers(fleet, names, settings, env=env, concurrency=o["threads"])
    try:
        base = time.time() + 2.0
        for cls, n, interval in kinds:
            insert(ctx, n, base, interval, cls=cls)
        sleep_until(base + o["warmup"], workers)
        kinds_ = [cls.kind for cls, _n, _i in kinds]
        c0, t0, cpu0 = counters(ctx, kinds_), time.time(), sum(usage(workers, 1).values())
        sleep_until(t0 + window, workers)
        c1, t1, cpu1 = counters(ctx, kinds_), time.time(), sum(usage(workers, 1).values())
    finally:
        for worker in workers:
            worker.stop()
    out: dict[str, Any] = {"seconds": t1 - t0, "worker_cpu_s": cpu1 - cpu0, "problems": fleet.problems()}
    for kind in kinds_:
        a, b = c0[kind], c1[kind]
        by = {p: b["by"][p] - a["by"].get(p, 0) for p in b["by"]}
        out[kind] = {"calls": b["calls"] - a["calls"], "ticks": b["ticks"] - a["ticks"], "by_process": by}
    return out


def bulk_rows(out: Section, r: dict[str, Any], o: dict[str, Any]) -> list[list[str]]:
    bulk, single = r[BulkBench.kind], r[BulkSingle.kind]
    per = bulk["calls"] / bulk["ticks"] if bulk["ticks"] else float("nan")
    base = single["calls"] / single["ticks"] if single["ticks"] else float("nan")
    s = r["seconds"]
    mean = bulk["ticks"] / bulk["calls"] if bulk["calls"] else float("nan")
    what = f"l. source calls per tick, `tick_many`, batch {o['batch']}, {o['trackers']:,} trackers"
    what += f" at {o['interval']:g} s, {o['workers']} workers"
    got = f"{per:.4f} ({bulk['calls']:,} calls for {bulk['ticks']:,} ticks in {s:.0f} s,"
    verdict = out.goal(
        f"source calls per tick with a batch hook, batch {o['batch']}: under 0.05", f"{per:.4f}", per < 0.05
    )
    got += f" {bulk['ticks'] / s:,.0f} ticks/s; {mean:.1f} ticks a call); goal < 0.05: {verdict}"
    alone = f"`tick` alone, same batches, same window: {base:.4f}"
    alone += f" ({single['calls']:,} calls, {single['ticks']:,} ticks)"
    return [[what, got, alone, f"{base / per:.0f}x fewer calls" if per else "-"]]


def rate_rows(
    out: Section, free: dict[str, Any] | None, limited: dict[str, Any] | None, o: dict[str, Any]
) -> list[list[str]]:
    if limited is None:
        return []
    r = limited[RateBench.kind]
    got = r["ticks"] / limited["seconds"]
    share = got / o["rate"]
    split = " / ".join(
        f"{v / limited['seconds']:.1f}" for v in sorted(r["by_process"].values(), reverse=True)
    )
    base = "-"
    if free is not None:
        unlimited = free[RateFree.kind]["ticks"] / free["seconds"]
        base = f"no limit: {unlimited:,.1f} ticks/s ({o['demand']:,.0f} wanted)"
    what = f"l. rate limit {o['rate']:g} ticks/s on {o['workers']} worker processes,"
    what += f" {o['rate_trackers']:,} trackers wanting {o['demand']:,.0f}/s"
    text = f"{got:.2f} ticks/s over {limited['seconds']:.0f} s ({share * 100:.1f} % of the limit;"
    verdict = out.goal(
        f"a rate limit of {o['rate']:g} ticks/s held within 5 % across {o['workers']} worker processes",
        f"{got:.2f} ticks/s, {share * 100:.1f} % of the limit",
        abs(share - 1) <= 0.05,
    )
    text += f" by worker process {split}); goal within 5 %: {verdict}"
    return [[what, text, base, f"{share:.3f}x the limit"]]


def run(ctx: Context) -> Section:
    o = options(ctx)
    out = section(__doc__, **o)
    with ctx.fleet() as fleet:
        bulk = out.attempt(
            "bulk polling",
            part,
            ctx,
            fleet,
            "bulk",
            [(BulkBench, o["trackers"], o["interval"]), (BulkSingle, o["single_trackers"], o["interval"])],
            o,
            o["window"],
        )
        free_kind = [(RateFree, o["rate_trackers"], o["rate_interval"])]
        limit_kind = [(RateBench, o["rate_trackers"], o["rate_interval"])]
        free = out.attempt("no rate limit", part, ctx, fleet, "free", free_kind, o, o["rate_window"])
        limited = out.attempt("rate limit", part, ctx, fleet, "rate", limit_kind, o, o["rate_window"])
    out.data = {"options": o, "bulk": bulk, "free": free, "limited": limited}
    out.rows = (bulk_rows(out, bulk, o) if bulk else []) + rate_rows(out, free, limited, o)
    problems = [p for r in (bulk, free, limited) if r for p in r["problems"]]
    if problems:
        out.blocks.append(
            "Worker log problems:\n\n" + "\n".join(f"    {p}" for p in sorted(set(problems))[:20])
        )
    return out
