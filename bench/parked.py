"""k. Parked trackers: many sparse trackers on a handful of worker slots (PostgreSQL + Redis).

{sizes} rows are inserted straight into the registry as `parked` (tracker `bench_parked`, `park =
True`, `batch_size = {batch}`: the waker publishes the entries of the kind woken together as one
message of at most that many, claimed and parked again in one statement each), their first ticks
spread evenly over one interval of {interval:g} s from {lead:g} s after the insert; {workers} real
`celery -A tracking worker -P threads -c {threads}` processes (tracking's
default timings) wake, tick and park them again. Each tick records in its state when it was due and
when it ran: lateness against the runtime's schedule (the inserted `tick_at`, then the previous
tick plus the interval) and against the fixed one (first due + k x interval). A sampler counts
running (slots in use), pending (woken, not claimed) and overdue parked entries every second.
Window: {windows} from the first due tick, then a drain of at most a fifth of it (at most 120 s).
Ticks lost: ticks of the fixed schedule in the window that had not run when the states were read
after the drain. Issue 13's goal, at 1,000,000 trackers: lateness p99 (the ticks not run counted at
their age) under {on_time:g} s, ticks lost 0. Per tick over the window: the workers' CPU (their process
groups' user + system time), the task messages the workers ran (counted by a `task_prerun` hook,
one Redis HINCRBY each), and PostgreSQL's own counters of the run's database: transactions
(`pg_stat_database`), and, as `pg_stat_statements` is {statements}, table scans (sequential + index,
`pg_stat_user_tables`, over the registry's tables) standing in for the statements that read or write
a table, and rows written; the sampler's own reads (one count every 1 s, every 5 s above 100,000
rows) are among them. Registry size: `pg_total_relation_size` of `tracking_trackers` (heap,
indexes, TOAST) and `tracking_events`, after the insert and at the end of the window. The sweep:
{sweep_trackers:,} entries all due within 1 s, ticked by fresh workers of each batch size in
{sweep}: ticks/s from the first due time to the last tick, and the cost per tick. The baselines
(with the smallest size) use fresh workers of the same kind on the same Redis: a task doing one Redis
INCR, {noop_tasks:,} of them queued before the workers start, and N tasks sent with an ETA over one
interval (what Celery itself would do: the workers hold every one unacknowledged until it is due),
the lateness of those due in the first {baseline_window:g} s. The floor, before each size on the
same registry: the three writes of a batched tick (wake, claim, park) in raw SQL from as many
processes as there are workers, a twentieth of the entries (at least 20,000) due at once
(`bench/parkedfloor.py`). Options, from the environment:
`BENCH_PARKED_TRACKERS` (comma-separated sizes, `none` for the sweep alone), `BENCH_PARKED_BATCH`,
`BENCH_PARKED_INTERVAL`,
`BENCH_PARKED_WINDOW` (seconds, or one per size, comma-separated), `BENCH_PARKED_SWEEP` (batch sizes,
`none` to skip), `BENCH_PARKED_SWEEP_TRACKERS`, `BENCH_PARKED_SWEEP_TIMEOUT`, `BENCH_PARKED_ETA`
(`yes` or `no`: the ETA baseline), `BENCH_PARKED_FLOOR` (`yes` or `no`: the floor),
`BENCH_PARKED_START_GRACE` (the workers' start grace:
{start_grace:g} s in this run; tracking's default is 30 s),
`BENCH_PARKED_WORKERS`, `BENCH_PARKED_THREADS`, `BENCH_PARKED_LEAD`,
`BENCH_PARKED_BASELINE` (`first`, `none` or `only`), `BENCH_PARKED_BASELINE_WINDOW`,
`BENCH_PARKED_NOOP_TASKS`. Standalone runs: [bench-parked.md](bench-parked.md).
"""

from __future__ import annotations

from typing import Any

import tracking
from bench import parkedfloor, parkedsweep, pgstats
from bench.context import TIMING, Context
from bench.core import Section, counts, met, ms, secs, section, table
from bench.parkedrun import ON_TIME, celery_baselines, window
from bench.trackers import HISTORY

#: issue 13's goal for parked trackers: this many, over a window of this many seconds
GOAL_TRACKERS, GOAL_WINDOW = 1_000_000, 600.0
DEFAULTS = {k: getattr(tracking.Settings(), k) for k in TIMING}  # tracking's own timings
EVENTS = """SELECT coalesce(json_object_agg(event, n), '{}') FROM
    (SELECT event, count(*) AS n FROM tracking_events GROUP BY event) AS e"""


def options(ctx: Context) -> dict[str, Any]:
    o: dict[str, Any] = {
        "sizes": ctx.option("parked", "trackers", ctx.pick("100000,300000,1000000", "300")),
        "batch": ctx.option("parked", "batch", ctx.pick(500, 50)),
        "sweep": ctx.option("parked", "sweep", ctx.pick("1,10,50,200,500", "1,50")),
        "sweep_trackers": ctx.option("parked", "sweep_trackers", ctx.pick(20_000, 300)),
        "sweep_timeout": ctx.option("parked", "sweep_timeout", ctx.pick(150.0, 30.0)),
        "eta": ctx.option("parked", "eta", "yes"),
        "floor": ctx.option("parked", "floor", "yes"),
        "start_grace": ctx.option("parked", "start_grace", float(DEFAULTS["start_grace_seconds"])),
        "interval": ctx.option("parked", "interval", ctx.pick(300.0, 5.0)),
        "workers": ctx.option("parked", "workers", ctx.pick(2, 1)),
        "threads": ctx.option("parked", "threads", 16),
        "lead": ctx.option("parked", "lead", 5.0),
        "baseline": ctx.option("parked", "baseline", "first"),
        "noop_tasks": ctx.option("parked", "noop_tasks", ctx.pick(20_000, 500)),
    }
    o["window"] = ctx.option("parked", "window", ctx.pick("120,120,600", "15"))
    o["baseline_window"] = ctx.option("parked", "baseline_window", 60.0)
    return o


def for_size(o: dict[str, Any], k: int) -> dict[str, Any]:
    """The options of the k-th size: its window and drain."""
    windows = [float(w) for w in str(o["window"]).split(",")]
    w = windows[min(k, len(windows) - 1)]
    out = {**o, "window": w, "drain": min(120.0, max(10.0, w / 5))}
    out["baseline_window"] = min(o["baseline_window"], w)
    if (w + out["drain"]) / o["interval"] >= HISTORY:
        raise ValueError(f"window + drain spans more than {HISTORY - 1} intervals: states forget ticks")
    return out


def one_size(ctx: Context, trackers: int, opts: dict[str, Any], baseline: bool) -> dict[str, Any]:
    settings = ctx.settings("parked", **{**DEFAULTS, "start_grace_seconds": opts["start_grace"]})
    env = worker_env(ctx, opts)
    ctx.pg.truncate()
    out: dict[str, Any] = {"trackers": trackers}
    if opts["floor"] == "yes":
        out["floor"] = parkedfloor.floor(ctx, trackers, opts)
    with ctx.fleet() as fleet:

        def start(prefix: str) -> list[Any]:
            names = [f"{prefix}{k + 1}" for k in range(opts["workers"])]
            return ctx.workers(fleet, names, settings, env=env, concurrency=opts["threads"])

        if opts["baseline"] != "only":
            workers = start("parked")
            out.update(window(ctx, workers, trackers, opts))
            for worker in workers:
                worker.stop()  # warm shutdown: hands off its running trackers
            out["events"] = ctx.scalar(EVENTS)
            ctx.pg.truncate()
        if baseline:
            out["baseline"] = celery_baselines(ctx, start, trackers, {**opts, "queue": settings.queue})
        out["worker_log_problems"] = fleet.problems()
    return out


def worker_env(ctx: Context, opts: dict[str, Any]) -> dict[str, str]:
    return {
        "BENCH_PARKED_INTERVAL": repr(opts["interval"]),
        "BENCH_PARKED_BATCH": str(opts["batch"]),
        "BENCH_COUNT_TASKS": f"{ctx.redis_prefix}tasks",
    }


def sweep(ctx: Context, o: dict[str, Any]) -> list[dict[str, Any]]:
    """Ticks/s against batch size (parkedsweep.capacity for each)."""
    if str(o["sweep"]).strip() in ("", "none"):
        return []
    settings = ctx.settings("parked", **{**DEFAULTS, "start_grace_seconds": o["start_grace"]})
    points = []
    with ctx.fleet() as fleet:
        for batch in (int(b) for b in str(o["sweep"]).split(",")):
            points.append(parkedsweep.capacity(ctx, fleet, settings, worker_env(ctx, o), batch, o))
    return points


def _lat(s: dict[str, float]) -> str:
    return " / ".join(ms(s[q] * 1000) for q in ("p50", "p99", "max"))


def _pair(s: dict[str, float]) -> str:
    return f"{s['p50']:.0f} / {s['max']:.0f}"


def _rss(before: dict[str, float], after: dict[str, float]) -> str:
    return ", ".join(f"{k}: {before.get(k, 0) / 1024:.0f} -> {v / 1024:.0f} MiB" for k, v in after.items())


def figures(out: Section, r: dict[str, Any], o: dict[str, Any]) -> list[tuple[str, str]]:
    """The figures of one size: (what, value)."""
    slots, cores = o["workers"] * o["threads"], r["worker_cpu_cores"]
    drained = f"{r['drained_in_s']:.1f} s" if r["drained_in_s"] is not None else "not finished"
    e, on_time = r["at_end"], f"{ON_TIME:g} s"
    per_tick = f"{1000.0 * sum(cores.values()) / r['ticks_per_s']:.2f} ms" if r["ticks_per_s"] else "-"
    p99 = r["late_with_undelivered"]["p99"]
    ok, measured = p99 < ON_TIME and r["lost"] == 0, f"p99 {secs(p99)}, lost {r['lost']:,}"
    if r["trackers"] >= GOAL_TRACKERS:  # the goal holds over a window of GOAL_WINDOW at least
        what = f"{r['trackers']:,} parked trackers at {o['interval']:g} s: lateness p99 < {ON_TIME:g} s"
        what += f" and ticks lost 0 over {GOAL_WINDOW:g} s"
        verdict = out.goal(what, f"{measured} over {o['window']:g} s", ok and o["window"] >= GOAL_WINDOW)
    else:
        verdict = met(ok)
    goal = f"{measured}: {verdict}"
    return [
        (f"goal (issue 13, at 1,000,000): lateness p99 < {ON_TIME:g} s, ticks lost 0", goal),
        ("batch size (the kind's `batch_size`)", f"{o['batch']}"),
        ("worker processes x threads = slots", f"{o['workers']} x {o['threads']} = {slots}"),
        ("window from the first due tick", f"{o['window']:g} s; {r['insert_s']:.1f} s to insert the rows"),
        ("ticks due per second (N / interval)", f"{r['trackers'] / o['interval']:.1f}"),
        (
            f"floor: the same writes in raw SQL, {o['workers']} processes, entries due at once: ticks/s",
            _floor(r, o),
        ),
        ("ticks delivered per second (mean over the window)", f"{r['ticks_per_s']:.1f}"),
        (f"... of them within {on_time} of their scheduled time", f"{r['on_time_per_s']:.1f}"),
        ("ticks/s per 1 s bucket: p50 / max", _pair(r["by_second"])),
        ("ticks/s in the last tenth of the window", f"{r['last_tenth_per_s']:.1f}"),
        ("lateness vs the runtime's schedule, p50 / p99 / max", f"{_lat(r['late'])} (n={r['late']['n']:,})"),
        (
            "... counting the ticks not run by the read at their age",
            f"{_lat(r['late_with_undelivered'])} ({r['undelivered']:,} not run)",
        ),
        ("lateness vs the fixed schedule (first due + k x interval)", _lat(r["late_due"])),
        (f"share of ticks within {on_time}", f"{r['on_time_share'] * 100:.1f} %"),
        ("worker slots in use (running, 1 s samples): p50 / max", f"{_pair(r['running'])} of {slots}"),
        ("woken, not yet claimed (pending): p50 / max", _pair(r["pending"])),
        (f"parked and overdue by > {on_time}: p50 / max", _pair(r["overdue"])),
        (
            "at the end of the window: overdue parked / pending / oldest behind",
            f"{e['overdue_parked']:,} / {e['pending']:,} / {e['behind_s']:.1f} s",
        ),
        (
            "after the drain: ticks of the window not run",
            f"{r['not_run_after_drain']:,} ({drained} of at most {o['drain']:g} s)",
        ),
        ("worker RSS idle -> max in the window", _rss(r["rss_idle_kib"], r["rss_max_kib"])),
        (
            "CPU in the window: workers / host busy (100 % = every core)",
            f"{' + '.join(f'{v:.2f}' for v in cores.values())} cores / {r['host_cpu_busy'] * 100:.0f} %",
        ),
        ("worker CPU per delivered tick", per_tick),
        ("ticks lost (fixed schedule, in the window, not run by the read)", f"{r['lost']:,}"),
        ("task messages the workers ran, per tick in the window", f"{r['messages_per_tick']:.4f}"),
        ("PostgreSQL per tick in the window", pgstats.statement_line(r["pg_per_tick"])),
        ("registry on disk after the insert", pgstats.size_line(r["size_start"], r["trackers"])),
        ("registry on disk at the end of the window", pgstats.size_line(r["size_end"], r["trackers"])),
        ("registry events during the run", counts(r["events"])),
    ]


def _floor(r: dict[str, Any], o: dict[str, Any]) -> str:
    f = r.get("floor")
    if f is None:
        return "not run"
    due = r["trackers"] / o["interval"]
    return (
        f"{f['ticks_per_s']:,.0f} ({f['ticks_per_s'] / due:.2f}x the ticks due; {f['ticks']:,} of"
        f" {f['due']:,} ticked in {f['seconds']:.1f} s,"
        f" client CPU {f['client_cpu_ms_per_tick']:.3f} ms a tick)"
    )


def baseline_table(b: dict[str, Any], o: dict[str, Any]) -> str:
    nb, eta = b["noop"], b["eta"]
    rows = [
        (
            f"a task doing one Redis INCR, {nb['tasks']:,} queued before the workers start: tasks/s",
            f"{nb['per_s']:.0f}",
        ),
        (
            "... worker CPU per task (from the workers' registration to the last task)",
            f"{nb['cpu_ms_per_task']:.2f} ms",
        ),
    ]
    if eta is not None:
        rows += eta_rows(eta, o)
    workers = f"{o['workers']} x {o['threads']} threads"
    head = f"Baselines: plain Celery tasks through fresh workers of the same kind ({workers}), same Redis:"
    return head + "\n\n" + table(("figure", "value"), rows)


def eta_rows(eta: dict[str, Any], o: dict[str, Any]) -> list[tuple[str, str]]:
    ran = f"{eta['ran']:,} of {eta['due_in_window']:,} ran"
    return [
        (
            f"{eta['tasks']:,} tasks sent with an ETA spread over {o['interval']:g} s: publish time",
            secs(eta["publish_s"]),
        ),
        (
            "... messages held unacknowledged by the workers (Redis `unacked`) before the first is due / max",
            f"{eta['unacked_before_due']:,} / {eta['unacked_max']:,}",
        ),
        ("... all taken from the queue after", secs(eta["reserved_s"])),
        ("... held unacknowledged at the end of the window", f"{eta['unacked_at_end']:,}"),
        ("... worker RSS before -> peak", _rss(eta["rss_before_kib"], eta["rss_peak_kib"])),
        (f"... lateness of those due in the first {eta['window']:g} s ({ran})", _lat(eta["late"])),
        (
            "kombu's Redis `visibility_timeout` (a later ETA is delivered again)",
            f"{eta['visibility_timeout']:g} s",
        ),
    ]


def run(ctx: Context) -> Section:
    o = options(ctx)
    sizes = [int(n) for n in str(o["sizes"]).split(",") if n.strip() not in ("", "none")]
    windows = ", ".join(f"{for_size(o, k)['window']:g} s" for k in range(len(sizes)))
    statements = "preloaded" if "statements" in pgstats.counters(ctx.pg.conninfo) else "not preloaded here"
    text = {**o, "sizes": " and ".join(f"{n:,}" for n in sizes), "windows": windows}
    out = section(__doc__, **text, on_time=ON_TIME, statements=statements)
    smallest = sizes.index(min(sizes)) if sizes else -1
    done = [
        out.attempt(
            f"{n:,} trackers", one_size, ctx, n, for_size(o, k), k == smallest and o["baseline"] != "none"
        )
        for k, n in enumerate(sizes)
    ]
    points = out.attempt("batch-size sweep", sweep, ctx, o) or []
    out.data = {"options": o, "sizes": done, "sweep": points}
    ran = [(r, for_size(o, k)) for k, r in enumerate(done) if r is not None and "ticks_per_s" in r]
    if ran:
        columns = [figures(out, r, ro) for r, ro in ran]
        out.columns = ("figure", *(f"{r['trackers']:,} trackers" for r, _o in ran))
        out.rows = [[what, *(col[i][1] for col in columns)] for i, (what, _v) in enumerate(columns[0])]
    if points:
        head = f"Batch size: {o['sweep_trackers']:,} parked entries all due within 1 s, fresh workers each:"
        out.blocks.append(head + "\n\n" + table(parkedsweep.COLUMNS, parkedsweep.rows(points)))
    out.blocks += [baseline_table(r["baseline"], o) for r in done if r and "baseline" in r]
    parkedsweep.draw(ctx, out, points, [r for r in done if r], o)
    problems = [p for r in done if r for p in r["worker_log_problems"]]
    if problems:
        out.blocks.append("Worker log problems:\n\n" + "\n".join(f"    {p}" for p in problems[:20]))
    return out
