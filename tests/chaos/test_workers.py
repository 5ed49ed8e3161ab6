"""Workers killed, paused and shut down under load: nothing lost, never two live incarnations."""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from tests.harness import TIMINGS, Cluster, Stack, wait_for
from tests.integration.trackers import TICKS_TABLE, Recorder, SlowRecorder
from tracking import Status, registry
from tracking.models import events

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.stacks("postgres-redis", "postgres-rabbitmq", "sqlite-embedded", tables=("ticks",)),
    pytest.mark.cluster(each_test=True),
]


def start_many(n: int, prefix: str, tracker: type[Recorder] = Recorder, **args: Any) -> list[str]:
    """Start ``n`` trackers with new IDs (``prefix``, then random), with ``args``; returns the IDs."""
    ids = [f"{prefix}_{uuid.uuid4().hex[:10]}_{i}" for i in range(n)]
    for txid in ids:
        tracker.start(txid, **args)
    return ids


def all_running(
    ids: list[str], worker: str, epoch: int | None = None, tracker: type[Recorder] = Recorder
) -> bool:
    refs = [tracker.lookup(t) for t in ids]
    return all(
        r is not None
        and r.status is Status.RUNNING
        and r.worker is not None
        and r.worker.startswith(f"{worker}@")
        and (epoch is None or r.epoch == epoch)
        for r in refs
    )


def stale_ticks_accepted(stack: Stack, ids: list[str]) -> int:
    """Per ID, ticks of an older epoch recorded after the first tick of a newer one (must be 0)."""
    stale = 0
    with registry.engine(stack.settings()).connect() as conn:
        for txid in ids:
            epochs = conn.execute(
                sa.text(f"SELECT epoch FROM {TICKS_TABLE} WHERE txid = :t ORDER BY id"), {"t": txid}
            ).scalars()
            highest = 0
            for epoch in epochs:
                if epoch < highest:
                    stale += 1
                highest = max(highest, epoch)
    return stale


def done_counts(stack: Stack, ids: list[str]) -> Counter[str]:
    """Per ID, how many times it finished (its "done" events): once each, none lost or run twice."""
    with registry.engine(stack.settings()).connect() as conn:
        return Counter(
            conn.execute(
                sa.select(events.c.transaction_id).where(
                    events.c.event == "done", events.c.transaction_id.in_(ids)
                )
            ).scalars()
        )


def stale_registry_writes(stack: Stack, ids: list[str]) -> int:
    """Events an old incarnation recorded after its entry moved to a newer epoch (must be 0)."""
    with registry.engine(stack.settings()).connect() as conn:
        rows = conn.execute(
            sa.select(events.c.transaction_id, events.c.epoch)
            .where(events.c.transaction_id.in_(ids))
            .order_by(events.c.id)
        ).all()
    highest: dict[str, int] = {}
    stale = 0
    for txid, epoch in rows:
        if epoch < highest.get(txid, 0):
            stale += 1
        highest[txid] = max(highest.get(txid, 0), epoch)
    return stale


def test_a_killed_worker_s_trackers_all_run_on_a_new_worker_with_one_incarnation_each(
    cluster: Cluster,
) -> None:
    cluster.worker("w1")
    cluster.beat()
    ids = start_many(50, "kill")
    wait_for(lambda: all_running(ids, "w1"), timeout=60, what="50 trackers running on w1")
    wait_for(lambda: all((Recorder.get_state(t) or {}).get("ticks", 0) >= 2 for t in ids), timeout=30)

    cluster.signal("w1", signal.SIGKILL)
    killed_at = time.monotonic()
    cluster.kill("w1")
    cluster.worker("w2")
    budget = TIMINGS["lease_seconds"] + TIMINGS["sweep_seconds"] + 30
    wait_for(lambda: all_running(ids, "w2", epoch=2), timeout=budget, what="all 50 running on w2")
    print(
        f"\nrecovery of 50 trackers after SIGKILL: {time.monotonic() - killed_at:.1f} s "
        f"(lease {TIMINGS['lease_seconds']} s, sweep {TIMINGS['sweep_seconds']} s)"
    )
    assert all(ref is not None and ref.restarts == 1 for ref in (Recorder.lookup(t) for t in ids))
    wait_for(lambda: all((Recorder.get_state(t) or {}).get("ticks", 0) >= 4 for t in ids), timeout=30)
    assert stale_ticks_accepted(cluster.stack, ids) == 0
    assert stale_registry_writes(cluster.stack, ids) == 0


def test_warm_shutdown_hands_every_tracker_off_at_once_without_counting_a_crash(cluster: Cluster) -> None:
    n = 500
    cluster.worker("w1", concurrency=n + 20)
    ids = start_many(n, "handoff", SlowRecorder)
    wait_for(lambda: all_running(ids, "w1", tracker=SlowRecorder), timeout=120, what=f"{n} running on w1")
    cluster.worker("w2", concurrency=n + 20)

    began = time.monotonic()
    code = cluster.stop("w1", timeout=30)
    exited = time.monotonic() - began
    print(f"\nwarm shutdown of a worker with {n} trackers: exited in {exited:.1f} s (code {code})")
    assert exited < 10, "the worker waited for its trackers instead of handing them off"
    wait_for(lambda: all_running(ids, "w2", tracker=SlowRecorder), timeout=60, what=f"all {n} running on w2")
    refs = [SlowRecorder.lookup(t) for t in ids]
    assert all(r is not None and r.restarts == 0 and r.epoch == 2 for r in refs), "a handoff is not a crash"
    assert stale_ticks_accepted(cluster.stack, ids) == 0
