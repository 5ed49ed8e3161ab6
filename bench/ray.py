"""j. The Ray peer: named detached actors next to trackers.

`bench/raypeer.py` in a subprocess: {actors} named detached actors (`lifetime="detached"`,
`max_restarts=-1`, `num_cpus=0`), created one after another; {lookups} `ray.get_actor` of random
names; {calls} method calls to one actor; {kills} SIGKILL(s) of an actor's worker process, each
timed until the actor answers from a new process. Memory: VmRSS and Pss
(`/proc/<pid>/smaps_rollup`, shared pages split among the processes sharing them) of the actors'
processes, per actor. Ray runs with `ray.init(address="local", include_dashboard=False)` on
127.0.0.1, usage statistics off, an 80 MiB object store, its session folder in the run's temporary
folder; it is shut down and the folder removed afterwards. It is compared with the figures of b.,
c., e., h. and i. of the same run (run alone, those say "not run"). Needs the `ray` extra; without
it the section is reported as not run.
"""

from __future__ import annotations

import importlib.util
import shutil
from typing import Any

from bench import plots
from bench.context import Context
from bench.core import Section, Series, lat, ms, secs, section
from bench.services import run_json


def comparisons(ctx: Context) -> dict[str, Any]:
    """The figures of tracking this run measured that Ray's are set beside."""
    lookup, crash = ctx.earlier("lookup") or {}, ctx.earlier("crash") or {}
    messages, lost = ctx.earlier("messages") or {}, (ctx.earlier("lost") or {}).get("tracking") or [None]
    steps = [s for s in (ctx.earlier("capacity") or {}).get("steps", []) if "writes" in s]
    return {
        "lookup": lookup.get("PostgreSQL"),
        "call": next(iter(messages.values()), None),
        "crash": crash.get("running"),
        "lost": lost[0],
        "first": next((s for s in steps if s["to_running_s"] is not None), None),
        "last": steps[-1] if steps else None,
    }


def rows(res: dict[str, Any], t: dict[str, Any]) -> list[list[str]]:
    n, mem, first, last = res["actors"], res["memory"], t["first"], t["last"]
    gets, calls, rec = Series(res["get_actor"]), Series(res["call"]), Series(res["recovered"])
    lookup = Series(t["lookup"]["lookup"]) if t["lookup"] else None
    call = Series(t["call"]["call"]) if t["call"] else None
    crash = f"p50 {ms(Series(t['crash']).p50_ms)}" if t["crash"] else "not run"
    lost = "lost worker not run"
    if t["lost"]:
        lease, p50 = t["lost"]["timing"][1], Series(t["lost"]["recovered"]).p50_ms / 1000
        lost = f"lost worker (SIGKILL, lease {lease:g} s) p50 {secs(p50)}"
    started = "tracking: h. not run"
    if first:
        k, s = first["trackers"], first["to_running_s"]
        started = f"tracking, h.: {k:,} trackers running {secs(s)} after the first start() ({k / s:,.0f}/s)"
    per_tracker = last["rss_per_tracker_kib"] if last else 0
    rss = f"RSS {mem['actor_rss_kib'] / 1024:.1f} MiB, PSS {mem['actor_pss_kib'] / 1024:.1f} MiB per actor"
    own = f"Ray's own {mem['ray_processes']} processes {mem['ray_rss_kib'] / 1024:.0f} MiB RSS"
    return [
        [
            f"Ray {res['ray']}: create {n} named detached actors (max_restarts=-1)",
            f"all answering {secs(res['create_s'])} after the first ({n / res['create_s']:,.1f}/s);"
            f" ray.init {secs(res['init_s'])}",
            started,
            "",
        ],
        [
            "Ray: ray.get_actor(name)",
            lat(gets),
            f"tracking lookup(), PostgreSQL: {lat(lookup)}" if lookup else "b. not run",
            f"lookup() {lookup.p50_ms / gets.p50_ms:.0f}x at p50" if lookup else "",
        ],
        [
            "Ray: actor method call round trip",
            lat(calls),
            f"tracking call(), PostgreSQL + Redis: {lat(call)}" if call else "i. not run",
            f"call() {call.p50_ms / calls.p50_ms:.1f}x at p50" if call else "",
        ],
        [
            f"Ray: SIGKILL of an actor's process -> it answers again, {len(rec)} kill(s)",
            f"p50 {secs(rec.p50_ms / 1000)}, max {secs(rec.max_ms / 1000)}; each {', '.join(map(secs, rec))}",
            f"tracking: crash -> running {crash}; {lost}",
            "",
        ],
        [
            "Ray: memory per actor",
            f"{rss} (one process each); {own}",
            f"tracking, h.: {per_tracker * 1.024:.1f} KB RSS per tracker at {last['trackers']:,}"
            if last
            else "tracking: h. not run",
            f"{mem['actor_rss_kib'] / per_tracker:,.0f}x" if per_tracker > 0 else "",
        ],
    ]


def run(ctx: Context) -> Section:
    actors, lookups, calls, kills = ctx.pick(100, 3), ctx.pick(2000, 50), ctx.pick(300, 20), ctx.pick(5, 1)
    out = section(__doc__, actors=actors, lookups=lookups, calls=calls, kills=kills)
    if importlib.util.find_spec("ray") is None:
        out.blocks.append("NOT RUN: Ray is not installed in this environment (the `ray` extra).")
        print("    Ray is not installed (pip install -e '.[ray]'): the Ray peer was NOT run", flush=True)
        return out
    temp = ctx.tmp / "ray"
    try:
        res = run_json(
            "bench.raypeer", [str(actors), str(lookups), str(calls), str(kills), str(temp)], timeout=600
        )
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    t = comparisons(ctx)
    out.data = {"ray": res, "tracking": t}
    out.rows = rows(res, t)

    def paint(left: Any, right: Any) -> None:
        lines = [plots.cdf(res["get_actor"], "ray.get_actor(name)", "C1-")]
        lines.append(plots.cdf(res["call"], "Ray actor method call", "C1--"))
        if t["lookup"]:
            lines.append(plots.cdf(t["lookup"]["lookup"], "tracking lookup() (PostgreSQL)", "C0-"))
        if t["call"]:
            lines.append(plots.cdf(t["call"]["call"], "tracking call() (PostgreSQL + Redis)", "C0--"))
        plots.chart(left, lines, "lookup and call (CDF)", "latency (ms, log scale)", "fraction", log="x")
        mem, last = res["memory"], t["last"]
        bars = {"Ray actor\n(RSS)": mem["actor_rss_kib"], "Ray actor\n(PSS)": mem["actor_pss_kib"]}
        if last:
            bars[f"tracker, gevent\n(RSS, N={last['trackers']:,})"] = last["rss_per_tracker_kib"]
        right.bar(list(bars), [v / 1024 for v in bars.values()], color=["C1", "C1", "C0"][: len(bars)])
        right.set(
            yscale="log", ylabel="MiB per actor / tracker (log scale)", title="memory per actor / tracker"
        )

    plots.draw(
        ctx, out, "ray.png", f"j. Ray {res['ray']} named detached actors next to tracking", paint, cols=2
    )
    return out
