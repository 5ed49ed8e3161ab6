"""f. The supervisor's sweep against the size of the registry (PostgreSQL).

Sizes {sizes} rows in `tracking_trackers`, loaded with `INSERT ... SELECT generate_series` (97.5%
running spread over 50 live worker leases, 1% pending and 0.5% failed not yet due, 1% dead;
realistic 66-character IDs, JSON args, state and policy), then `VACUUM ANALYZE`.
`tracking.supervisor.sweep(settings, publish)` with a publish that only counts, run in the
benchmark's process; before each rescuing sweep the live leases are renewed and the lost worker's
lease (an hour old), its {lost} running entries and the {due} pending entries a minute past due
are put back; each rescuing sweep is followed by one with nothing to rescue; p50 of {runs} sweeps
per size. Per rescued entry: the p50 of a rescuing sweep minus the p50 of an idle one, divided by
the entries rescued. Baselines: `SELECT count(*) FROM tracking_trackers` through psycopg, and the
sweep's two main queries (captured from it, run through psycopg, rows fetched) with the planner's
`enable_indexscan`, `enable_indexonlyscan` and `enable_bitmapscan` off. Goal: under {goal:g} ms at
1,000,000 rows.
"""

from __future__ import annotations

from typing import Any

import psycopg

from bench import plots
from bench.context import Context
from bench.core import Section, Series, met, ms, section
from bench.sweepdata import SweepRegistry, captured, explain, literal_sql, main_queries, timed
from tracking import supervisor

GOAL_MS, GOAL_ROWS = 100.0, 1_000_000


def one_size(conn: Any, reg: SweepRegistry, settings: Any, size: int, runs: int) -> dict[str, Any]:
    """``runs`` rescuing sweeps (the registry reset before each), each followed by an idle one; the
    baselines; the plans of the two main queries."""
    published = [0]

    def publish(_row: Any) -> None:
        published[0] += 1

    grown = reg.grow(size)
    reg.reset()
    with captured(settings) as seen:  # warm-up, and what the sweep sends
        supervisor.sweep(settings, publish, name="bench")
    queries = main_queries(seen)
    rescue, idle = Series(), Series()
    expected = {"lost_workers": 1, "restarted": len(reg.lost_ids), "republished": len(reg.due_ids)}
    for _run in range(runs):
        reg.reset()
        published[0] = 0
        done = rescue.time(lambda: supervisor.sweep(settings, publish, name="bench"))
        if any(done[k] != v for k, v in expected.items()) or published[0] != len(reg.lost_ids + reg.due_ids):
            raise AssertionError(f"sweep did {done}, published {published[0]}; expected {expected}")
        done = idle.time(lambda: supervisor.sweep(settings, publish, name="bench"))
        if any(done.values()):
            raise AssertionError(f"a sweep with nothing to do did {done}")
    reg.reset()  # the queries below see what a rescuing sweep sees
    entry: dict[str, Any] = {
        "rows": size,
        "grow_s": grown,
        "statements": len(seen),
        "sweep": rescue,
        "idle": idle,
    }
    entry["count"] = timed(conn, ("SELECT count(*) FROM tracking_trackers", None), runs)
    for name, query in queries.items():
        entry[f"{name}_index"], entry[f"{name}_seq"] = (
            timed(conn, query, runs),
            timed(conn, query, runs, seq=True),
        )
        entry[f"{name}_plan"] = {"sql": literal_sql(*query), "plan": explain(conn, query)}
    return entry


def run(ctx: Context) -> Section:
    sizes = ctx.pick((10_000, 100_000, 1_000_000), (1_000, 3_000))
    runs, lost, due = ctx.pick(5, 3), 100, 20
    out = section(
        __doc__, sizes=", ".join(f"{n:,}" for n in sizes), lost=lost, due=due, runs=runs, goal=GOAL_MS
    )
    settings = ctx.settings(
        "sweep", heartbeat_seconds=5.0, lease_seconds=30.0, sweep_seconds=10.0, start_grace_seconds=30.0
    )
    with psycopg.connect(ctx.pg.conninfo, autocommit=True) as conn:
        reg = SweepRegistry(conn, lost, due)
        # smallest first: the registry grows between sizes
        steps = [one_size(conn, reg, settings, size, runs) for size in sizes]
    out.data = {"lost": lost, "due": due, "runs": runs, "sizes": steps}
    out.columns = (
        "rows", "sweep, rescuing", "per rescued entry", "sweep, nothing to rescue", "idle sweep / count(*)",
        "statements per rescuing sweep", "due query: indexed / index scans off",
        "orphans query: indexed / index scans off", "due + orphans: indexed / off", "SELECT count(*)",
        "bulk insert + VACUUM ANALYZE",
    )  # fmt: skip
    for e in steps:
        p50 = {k: v.p50_ms for k, v in e.items() if isinstance(v, Series)}
        out.rows.append(
            [
                f"{e['rows']:,}", ms(p50["sweep"]), ms((p50["sweep"] - p50["idle"]) / (lost + due)),
                ms(p50["idle"]), f"{p50['idle'] / p50['count']:.2f}x", str(e["statements"]),
                f"{ms(p50['due_index'])} / {ms(p50['due_seq'])}",
                f"{ms(p50['orphans_index'])} / {ms(p50['orphans_seq'])}",
                f"{ms(p50['due_index'] + p50['orphans_index'])} / {ms(p50['due_seq'] + p50['orphans_seq'])}",
                ms(p50["count"]), f"{e['grow_s']:.1f} s",
            ]
        )  # fmt: skip
    top = steps[-1]
    if top["rows"] >= GOAL_ROWS:
        verdict = f"{met(top['sweep'].p50_ms < GOAL_MS)} rescuing, {met(top['idle'].p50_ms < GOAL_MS)} idle"
        out.blocks.append(f"Goal: a sweep under {GOAL_MS:g} ms at {GOAL_ROWS:,} rows: {verdict}.")
    for name in ("due", "orphans"):
        plan = top[f"{name}_plan"]
        out.blocks.append(
            f"EXPLAIN (ANALYZE, BUFFERS) of the {name} query at {top['rows']:,} rows, in the state a rescuing"
            f" sweep meets (parameters written in):\n\n```sql\n{plan['sql']}\n```\n\n"
            f"```text\n{plan['plan']}\n```"
        )

    def paint(ax: Any) -> None:
        rows = [e["rows"] for e in steps]

        def p50(*keys: str) -> list[float]:
            return [sum(e[k].p50_ms for k in keys) for e in steps]

        lines: list[plots.Line] = [
            (rows, p50("sweep"), "sweep, rescuing (p50)", "o-"),
            (rows, p50("idle"), "sweep, nothing to rescue (p50)", "s-"),
            (rows, p50("count"), "SELECT count(*) (p50)", "^--"),
            (rows, p50("due_seq", "orphans_seq"), "due + orphans queries, index scans off (p50)", "v:"),
        ]
        title = "f. supervisor sweep against registry size (PostgreSQL)"
        plots.chart(ax, lines, title, "rows in tracking_trackers", "ms", log="xy", goal=GOAL_MS)

    plots.draw(ctx, out, "sweep.png", "f. sweep time against registry size", paint)
    return out
