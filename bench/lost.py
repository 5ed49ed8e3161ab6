"""e. A lost worker (SIGKILL) to its trackers running on another worker.

{trackers} trackers (interval {interval:g} s) run on one worker subprocess, `celery -A tracking worker -P
threads -c 50` on PostgreSQL + Redis, started in a session of its own; a second one is started and
has registered its lease. Then `os.killpg(pgid, SIGKILL)` on the first, and per tracker the time
from the kill until `lookup(id)` (all of them polled in turn) shows it running on the second worker
under a higher epoch. Supervision is the surviving worker's own periodic sweep (no beat process
runs): it declares the killed process lost once its lease has expired by the database clock and
restarts its trackers at once. Expected: between lease - heartbeat and lease + sweep, plus
dispatch. "lost declared" is the time from the kill (database clock) to the `worker_lost` event the
sweep wrote; the time from its first such event to its last is given too. {kills} kill(s) per
setting: each time a fresh worker is started first, and the trackers hop to it; every incarnation
runs past its restart-intensity window (`max_seconds` = 2 s) before the next kill, so every restart
is a first, immediate one.

The baseline is plain Celery (`bench/plainapp.py`, no `tracking`): one long task with
`acks_late=True` and `reject_on_worker_lost=True` runs on worker X (`-P prefork -c 1`, prefetch
multiplier 1); worker Y has started and run a task; X's process group is SIGKILLed, and the time
until the task runs again (on Y) is measured, waiting at most {bound:g} s on Redis with its default
visibility_timeout ({default:g} s: the message stays in Redis' unacked set until then), on Redis with
visibility_timeout {short:g} s and the restore sweep every second (`unacked_restore_interval=1`,
`unacked_restore_throttle=1`; with kombu's defaults it runs only about every 100 s), and on
RabbitMQ, which requeues the unacknowledged message as soon as the dead worker's connection closes.
One task per broker. `reject_on_worker_lost` itself plays no part here: the pool's parent process
dies too, so nobody is left to reject the message.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from kombu.transport.redis import Channel

from bench import plots, redelivery
from bench.context import Context, start_running
from bench.core import Section, Series, ms, secs, section
from bench.services import Worker, wait_until
from bench.trackers import LostBench

DEFAULT_VISIBILITY = Channel.visibility_timeout  # kombu's, for Redis


def recover(ctx: Context, ids: list[str], victim: Worker, survivor: Worker, timeout: float) -> dict[str, Any]:
    """SIGKILL ``victim``, on which every tracker runs; poll ``lookup`` of each until it runs on
    ``survivor`` under a higher epoch. Seconds from the kill per tracker, and to each ``worker_lost``
    event (database clock)."""
    before = {txid: LostBench.lookup(txid) for txid in ids}
    for txid, ref in before.items():
        if ref is None or ref.status != "running" or not (ref.worker or "").startswith(f"{victim.name}@"):
            raise AssertionError(f"{txid} is not running on {victim.name} before the kill: {ref}")
    killed_at: datetime = ctx.scalar("SELECT clock_timestamp()")
    t0 = time.monotonic()
    victim.kill()
    recovered: dict[str, float] = {}

    def moved() -> bool:
        for txid in sorted(set(ids) - set(recovered)):
            ref, old = LostBench.lookup(txid), before[txid]
            if ref and ref.status == "running" and old and ref.epoch > old.epoch and ref.worker:
                if ref.worker.startswith(f"{survivor.name}@"):
                    recovered[txid] = time.monotonic() - t0
        return len(recovered) == len(ids)

    wait_until(moved, timeout, interval=0.002, what=f"{len(ids)} trackers running on {survivor.name}")
    sql = (  # the first worker_lost event of each tracker
        "SELECT coalesce(array_agg(d ORDER BY d), '{}') FROM (SELECT extract(epoch FROM min(at) - %s) AS d"
        " FROM tracking_events WHERE kind = %s AND event = 'worker_lost' AND at >= %s"
        " GROUP BY transaction_id) AS lost"
    )
    declared = [float(x) for x in ctx.scalar(sql, killed_at, LostBench.kind, killed_at)]
    return {"recovered": [recovered[t] for t in ids], "detected": declared}


def series(
    ctx: Context, index: int, timing: tuple[float, float, float], count: int, kills: int
) -> dict[str, Any]:
    """Start the trackers on a first worker alone, then ``kills`` times: start the next worker, let
    every incarnation run past its restart-intensity window, SIGKILL the one running them."""
    heartbeat, lease, sweep = timing
    # The trackers of an earlier series are still registered (handed off when its workers shut
    # down): this series' sweeps would publish them to its own workers, which then carried both
    # series, more trackers than their pool has threads (those left pending never ran)
    ctx.pg.truncate()
    settings = ctx.settings(
        f"lost{index}",
        heartbeat_seconds=heartbeat,
        lease_seconds=lease,
        sweep_seconds=sweep,
        start_grace_seconds=lease,
    )
    ctx.app(f"lost{index}", settings)
    ids = [f"lost{index}-{i}" for i in range(count)]
    recovered, detected, spread = Series(), Series(), Series()
    with ctx.fleet() as fleet:
        (victim,) = ctx.workers(fleet, [f"lost{index}a"], settings)
        start_running(LostBench, ids)
        since = time.monotonic()
        for k in range(kills):
            (survivor,) = ctx.workers(fleet, [f"lost{index}{chr(ord('b') + k)}"], settings)
            if k > 0:  # past max_seconds a restart is immediate: the first-restart path, no backoff
                time.sleep(max(0.0, LostBench.max_seconds + 0.5 - (time.monotonic() - since)))
            got = recover(ctx, ids, victim, survivor, timeout=lease + sweep + 30)
            since, victim = time.monotonic(), survivor
            recovered += got["recovered"]
            detected += got["detected"]
            spread.append(max(got["detected"]) - min(got["detected"]) if got["detected"] else float("nan"))
        problems = fleet.problems()
    return {
        "timing": timing,
        "recovered": recovered,
        "detected": detected,
        "spread": spread,
        "problems": problems,
    }


def rows(res: dict[str, Any] | None, timing: tuple[float, ...], plain: dict[str, Any], n: str) -> list[str]:
    heartbeat, lease, sweep = timing
    name = f"lease {lease:g} s / sweep {sweep:g} s / heartbeat {heartbeat:g} s, {n}"
    short = plain["redis_short"]
    baseline = (
        f"plain Celery, late ack: RabbitMQ {redelivery.figure(plain['amqp'])}; Redis (visibility_timeout"
        f" {short['options']['visibility_timeout'] if short else '?'} s) {redelivery.figure(short)}; Redis"
        f" (visibility_timeout {DEFAULT_VISIBILITY:g} s, the default) {redelivery.figure(plain['redis'])}"
    )
    if res is None:
        return [name, "FAILED", baseline, ""]
    rec, det = res["recovered"], res["detected"]
    figure = (
        f"p50 {secs(rec.p50_ms / 1000)}, p99 {secs(rec.p99_ms / 1000)}, max {secs(rec.max_ms / 1000)} "
        f"(lost declared: p50 {secs(det.p50_ms / 1000)}; first to last restart of one sweep: "
        f"p50 {ms(res['spread'].p50_ms)})"
    )
    fastest = (short or {}).get("recovered_s")
    vt = short["options"]["visibility_timeout"] if short else 0
    return [
        name,
        figure,
        baseline,
        f"{rec.p50_ms / 1000 / fastest:.2f}x Redis {vt:g} s at p50" if fastest else "",
    ]


def paint(ax: Any, ours: list[dict[str, Any]], plain: dict[str, Any]) -> None:
    ax.boxplot([r["recovered"] for r in ours], whis=(0, 100))
    ax.set_xticks(
        range(1, len(ours) + 1), [f"lease {r['timing'][1]:g} s\nsweep {r['timing'][2]:g} s" for r in ours]
    )
    lines: list[plots.Line] = []
    for k, (heartbeat, lease, sweep) in enumerate(r["timing"] for r in ours):
        lines += [([k + 0.7, k + 1.3], [y, y], "", "C7-") for y in (lease - heartbeat, lease + sweep)]
    for key, label, fmt in (("amqp", "RabbitMQ", "C2--"), ("redis_short", "Redis, short visibility", "C3--")):
        if recovered := (plain[key] or {}).get("recovered_s"):
            lines.append(([0.5, len(ours) + 0.5], [recovered] * 2, f"plain Celery, {label}", fmt))
    title = "e. lost worker recovery (grey: lease - heartbeat, lease + sweep)"
    plots.chart(ax, lines, title, "", "seconds from SIGKILL to running again")


def run(ctx: Context) -> Section:
    count, kills = ctx.pick(30, 3), ctx.pick(3, 1)
    timings = ctx.pick([(0.5, 3.0, 1.0), (1.0, 6.0, 2.0)], [(0.5, 3.0, 1.0)])
    bound, short = ctx.pick(60.0, 3.0), ctx.pick(10.0, 3.0)
    params = {
        "trackers": count,
        "interval": LostBench.interval,
        "kills": kills,
        "bound": bound,
        "short": short,
    }
    out = section(__doc__, default=DEFAULT_VISIBILITY, **params)
    ours = [
        out.attempt(f"lease {t[1]:g} s", series, ctx, i, t, count, kills) for i, t in enumerate(timings, 1)
    ]
    plain = redelivery.baselines(ctx, out, bound, short)
    out.data = {"tracking": ours, "celery": plain}
    out.rows = [
        rows(res, t, plain, f"N={count} x {kills} kill(s)") for t, res in zip(timings, ours, strict=True)
    ]
    done = [r for r in ours if r is not None]
    plots.draw(
        ctx, out, "lost_worker.png", "e. lost-worker recovery against lease settings", paint, done, plain
    )
    return out
