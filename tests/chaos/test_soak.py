"""The soak: hundreds of trackers on three workers, a random worker SIGKILLed every 10 to 20 s.

Bounded: ``SOAK_SECONDS`` of faults (default 240), then the trackers settle. At the end: lost 0,
finished twice 0, stale (overlapping) incarnations accepted 0, and recovery after a lost worker
within lease + sweep + 3 s at p99, from the SIGKILL to the new incarnation's first tick (a worker
loss restarts without the crash backoff); the recovery times are printed.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import time
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from bench.machine import LoadMonitor
from tests.chaos.test_workers import done_counts, stale_ticks_accepted
from tests.harness import TIMINGS, Cluster, Stack, during, wait_for
from tests.integration.trackers import TICKS_TABLE, SlowRecorder
from tracking import registry
from tracking.models import events

pytestmark = [pytest.mark.chaos, pytest.mark.soak, pytest.mark.stacks("postgres-redis", tables=("ticks",))]

TRACKERS = int(os.environ.get("SOAK_TRACKERS", "500"))
SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "240"))
WORKERS = ("w1", "w2", "w3")


def _as_datetime(value: object) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def recovery_seconds(
    stack: Stack, ids: list[str], kills: list[datetime]
) -> tuple[list[float], list[float], list[tuple[float, float]]]:
    """Per worker loss: from the SIGKILL to the first tick of the new incarnation (the recovery),
    from the last tick of the lost incarnation to that first tick (the gap in its ticks, which
    also holds up to one interval from its last tick to the kill), and the recovery in two parts:
    from the kill to the sweep that declared the loss, and from that sweep to the first tick."""
    with registry.engine(stack.settings()).connect() as conn:
        lost = conn.execute(
            sa.select(events.c.transaction_id, events.c.epoch, events.c.at).where(
                events.c.event == "worker_lost", events.c.transaction_id.in_(ids)
            )
        ).all()
        ticks = conn.execute(
            sa.text(f"SELECT txid, epoch, min(at), max(at) FROM {TICKS_TABLE} GROUP BY txid, epoch")
        ).all()
    span = {(t, e): (_as_datetime(first), _as_datetime(last)) for t, e, first, last in ticks}
    recoveries, gaps, parts = [], [], []
    for txid, epoch, declared in lost:
        old, new = span.get((txid, epoch)), span.get((txid, epoch + 1))
        if not (old and new):
            continue
        gaps.append((new[0] - old[1]).total_seconds())
        # The kill that lost it: the first one after its last tick (kills are 10 to 20 s apart,
        # and it ticked every 2 s until its worker died).
        killed = next((k for k in kills if k >= old[1]), None)
        if killed is not None and killed <= new[0]:
            recoveries.append((new[0] - killed).total_seconds())
            declared = _as_datetime(declared)
            parts.append(((declared - killed).total_seconds(), (new[0] - declared).total_seconds()))
    return recoveries, gaps, parts


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


@pytest.mark.timeout(SOAK_SECONDS + 600)  # the faults, then up to 4 minutes for the trackers to finish
def test_a_random_worker_killed_every_ten_to_twenty_seconds_loses_nothing_and_runs_nothing_twice(
    stack: Stack,
) -> None:
    rng = random.Random(int(os.environ.get("SOAK_SEED", "7")))
    with Cluster(stack, concurrency=TRACKERS + 20) as cluster:
        cluster.start(*WORKERS, beat=True)
        # Each tracker finishes after 1 to 3.5 minutes of ticks, so that kills land throughout.
        ids = [f"soak_{uuid.uuid4().hex[:10]}_{i}" for i in range(TRACKERS)]
        for txid in ids:
            SlowRecorder.start(txid, until=rng.randint(30, 105))

        kills: list[datetime] = []  # by this host's clock, which PostgreSQL's clock_timestamp() shares
        began = time.monotonic()
        # The host's load while the faults run: timing figures from a saturated 2-core box say
        # little (RELIABILITY.md's validity guard), so the run says whether it was noisy.
        with LoadMonitor() as load:
            while time.monotonic() - began < SOAK_SECONDS:
                for _left in during(rng.uniform(10, 20), interval=1.0):  # the fault rate, not a wait
                    pass
                victim = rng.choice(WORKERS)
                kills.append(datetime.now(UTC))
                cluster.signal(victim, signal.SIGKILL)
                cluster.kill(victim)
                cluster.worker(victim)
        host = load.summary()

        settle = TIMINGS["lease_seconds"] + TIMINGS["sweep_seconds"] + 240
        wait_for(
            lambda: SlowRecorder.count() == 0, timeout=settle, interval=1.0, what="every tracker to finish"
        )

    done = done_counts(stack, ids)
    with registry.engine(stack.settings()).connect() as conn:
        # What followed each worker loss, per tracker: a restart at once, never a backoff.
        history = conn.execute(
            sa.select(events.c.transaction_id, events.c.event)
            .where(events.c.transaction_id.in_(ids))
            .order_by(events.c.transaction_id, events.c.id)
        ).all()
    backoffs_after_loss = sum(
        1
        for before, after in zip(history, history[1:], strict=False)
        if before.transaction_id == after.transaction_id
        and before.event == "worker_lost"
        and after.event == "backoff"
    )
    lost = [t for t in ids if done[t] == 0]
    twice = [t for t in ids if done[t] > 1]
    recoveries, gaps, parts = recovery_seconds(stack, ids, kills)
    detected, picked_up = [d for d, _ in parts], [p for _, p in parts]
    p99 = _p99(recoveries)
    bound = TIMINGS["lease_seconds"] + TIMINGS["sweep_seconds"] + 3
    print(
        f"\nsoak: {TRACKERS} trackers, 3 workers, {len(kills)} SIGKILLs in {SOAK_SECONDS:.0f} s; "
        f"lost {len(lost)}, finished twice {len(twice)}, restarts after worker loss {len(gaps)}; "
        f"recovery (SIGKILL to the new incarnation's first tick) p50 "
        f"{statistics.median(recoveries) if recoveries else float('nan'):.1f} s, p99 {p99:.1f} s, "
        f"max {max(recoveries, default=float('nan')):.1f} s over {len(recoveries)} "
        f"(lease {TIMINGS['lease_seconds']} s, sweep {TIMINGS['sweep_seconds']} s; "
        f"p99 within lease + sweep + 3 s = {bound:.0f} s: {'met' if p99 <= bound else 'NOT met'}); "
        f"gap in ticks (last tick of the lost incarnation to the first of the new, interval "
        f"{SlowRecorder.interval:.0f} s) p50 {statistics.median(gaps) if gaps else float('nan'):.1f} s, "
        f"p99 {_p99(gaps):.1f} s; of the recovery, SIGKILL to the sweep that declared the loss p50 "
        f"{statistics.median(detected) if detected else float('nan'):.1f} s, p99 {_p99(detected):.1f} s, "
        f"and that sweep to the first tick p50 "
        f"{statistics.median(picked_up) if picked_up else float('nan'):.1f} s, p99 {_p99(picked_up):.1f} s; "
        f"backoffs after a worker loss {backoffs_after_loss}; host while faults ran: {host['line']}"
    )
    assert kills
    assert len(recoveries) == len(gaps), "a worker loss whose kill was not found"
    assert lost == []
    assert twice == []
    assert stale_ticks_accepted(stack, ids) == 0
    # Timing is reported, not asserted (a busy 2-core host); the mechanism behind it is asserted.
    assert backoffs_after_loss == 0, "a worker loss must restart its trackers at once, not after a backoff"
