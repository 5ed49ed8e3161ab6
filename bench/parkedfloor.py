"""k.'s floor: the registry writes of a parked tick in raw SQL, nothing else.

A batched parked tick writes its row three times: the waker makes it pending under a new epoch,
the worker claims it and parks it again with its new state (see ``tracking.registry``). Here the
same three writes, one statement a batch each, run from plain psycopg connections, as many
processes as the run has worker processes, on the same registry as the tracking run: no Celery, no
broker, no SQLAlchemy, a tick that only counts. What tracking adds on top is the distance between
this rate and its own.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from typing import Any

import psycopg

from bench.context import Context
from bench.parkedrun import insert
from bench.trackers import ParkedBench

WAKE = """WITH due AS (
    SELECT id FROM tracking_trackers WHERE status = 'parked' AND due_at <= to_timestamp(%s)
    ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED)
UPDATE tracking_trackers t SET status = 'pending', epoch = t.epoch + 1, task_id = gen_random_uuid()::text,
    due_at = now() + interval '30 s', republished = 0
FROM due WHERE t.id = due.id AND t.status = 'parked'
RETURNING t.transaction_id, t.epoch"""
CLAIM = """UPDATE tracking_trackers t SET status = 'running', worker = 'floor', worker_id = %s,
    claimed_at = now(), due_at = NULL, republished = 0, policy = %s::jsonb
FROM jsonb_to_recordset(%s::jsonb) AS b(t text, e bigint)
WHERE t.kind = %s AND t.transaction_id = b.t AND t.epoch = b.e AND t.status = 'pending'
RETURNING t.id, t.epoch, t.state"""
PARK = """UPDATE tracking_trackers t SET status = 'parked', state = b.state, checkpoint_at = now(),
    worker = NULL, worker_id = NULL, due_at = now() + make_interval(secs => %s),
    tick_at = now() + make_interval(secs => %s)
FROM jsonb_to_recordset(%s::jsonb) AS b(id bigint, epoch bigint, state jsonb)
WHERE t.id = b.id AND t.epoch = b.epoch AND t.status = 'running'
RETURNING t.id"""


def floor(ctx: Context, trackers: int, opts: dict[str, Any]) -> dict[str, Any]:
    """``trackers`` parked entries, the first ``due`` of them due at once: the rate at which
    ``opts["workers"]`` processes of raw SQL wake, claim and park them in batches of
    ``opts["batch"]``. Leaves the registry empty."""
    due = min(trackers, max(20_000, trackers // 20))
    ctx.pg.truncate()
    try:
        # the first ``due`` entries' ticks are in the past, the others' spread over the interval
        base = time.time() - opts["interval"] * due / trackers
        insert(ctx, trackers, base, opts["interval"])
        spawn = multiprocessing.get_context("spawn")
        results, go = spawn.Queue(), spawn.Event()
        # only the first ``due`` entries: the others come due at the rate the run needs, and
        # ticking them too would measure that rate, not the floor's
        cutoff = base + opts["interval"] * due / trackers
        args = (ctx.pg.conninfo, opts["batch"], opts["interval"], cutoff, results, go)
        procs = [spawn.Process(target=_cycle, args=(f"floor-{k}", *args)) for k in range(opts["workers"])]
        for proc in procs:
            proc.start()
        for _ in procs:  # each connected and ready: the clock starts when all are
            results.get(timeout=120)
        began = time.monotonic()
        go.set()
        got = [results.get(timeout=900) for _ in procs]
        seconds = time.monotonic() - began
        for proc in procs:
            proc.join(30)
    finally:
        ctx.pg.truncate()
    ticks = sum(n for n, _cpu in got)
    out = {
        "trackers": trackers,
        "due": due,
        "ticks": ticks,
        "seconds": seconds,
        "ticks_per_s": ticks / seconds,
        "client_cpu_ms_per_tick": 1000.0 * sum(cpu for _n, cpu in got) / ticks if ticks else float("nan"),
    }
    print(f"    floor of the writes at {trackers:,}: {out['ticks_per_s']:.0f} ticks/s", flush=True)
    return out


def _cycle(
    name: str, conninfo: str, batch: int, interval: float, cutoff: float, results: Any, go: Any
) -> None:
    """One process: once ``go`` is set, wake, claim and park batches until nothing due by ``cutoff``
    (a Unix time) is left; puts
    "ready" first, then (ticks, CPU seconds)."""
    policy = json.dumps(ParkedBench.policy.to_json())
    with psycopg.connect(conninfo, autocommit=True) as conn:
        results.put("ready")
        go.wait()
        ticks, cpu = 0, time.process_time()
        while True:
            woken = conn.execute(WAKE, (cutoff, batch)).fetchall()
            if not woken:
                break
            named = json.dumps([{"t": t, "e": e} for t, e in woken])
            claimed = conn.execute(CLAIM, (name, policy, named, ParkedBench.kind)).fetchall()
            states = [{"id": i, "epoch": e, "state": {**s, "ticks": s["ticks"] + 1}} for i, e, s in claimed]
            parked = conn.execute(PARK, (interval, interval, json.dumps(states))).fetchall()
            ticks += len(parked)
    results.put((ticks, time.process_time() - cpu))
