"""Supervisor sweeps against the registry, with no worker running (so no other sweeper interferes)."""

from __future__ import annotations

import threading
import uuid
from functools import partial

import pytest
import sqlalchemy as sa

import tracking
from tests.harness import Stack, all_at_once
from tests.integration.trackers import Counter
from tracking import registry, supervisor
from tracking.client import Publishable
from tracking.exceptions import Fenced
from tracking.models import trackers, workers


@pytest.mark.parametrize("supervisors", [2, 3])
def test_supervisors_sweeping_at_once_restart_each_lost_tracker_exactly_once(
    stack: Stack, supervisors: int
) -> None:
    settings = stack.settings()
    lost_worker = f"ghost/{uuid.uuid4().hex}"
    registry.register_worker(settings, lost_worker, "ghost@nowhere", 1)
    ids = [f"txn_orphan_{uuid.uuid4().hex[:12]}_{i}" for i in range(40)]
    for txid in ids:
        registry.start(settings, Counter.kind, txid, {}, Counter.policy)
        assert (
            registry.claim(
                settings,
                Counter.kind,
                txid,
                1,
                worker="ghost@nowhere",
                worker_id=lost_worker,
                policy=Counter.policy,
            )
            is not None
        )
    with registry.engine(settings).begin() as conn:  # the ghost stopped renewing its lease long ago
        conn.execute(
            workers.update().where(workers.c.id == lost_worker).values(heartbeat_at=registry.db_now(-3600))
        )

    published: list[tuple[str, int]] = []
    lock = threading.Lock()

    def record(row: Publishable) -> None:
        with lock:
            published.append((row.transaction_id, row.epoch))

    all_at_once(
        [partial(supervisor.sweep, settings, record, name=f"test-supervisor-{n}") for n in range(supervisors)]
    )
    assert sorted(published) == sorted((txid, 2) for txid in ids), "each orphan published once, for epoch 2"
    with registry.engine(settings).connect() as conn:
        epochs = conn.execute(sa.select(trackers.c.epoch).where(trackers.c.transaction_id.in_(ids))).scalars()
        assert set(epochs) == {2}
    for txid in ids:
        Counter.stop(txid)


def _parked_entries(settings: tracking.Settings, count: int, wait: float) -> list[str]:
    """Entries claimed by a live (test) worker and parked until ``wait`` seconds from now."""
    worker_id = f"parker/{uuid.uuid4().hex}"
    registry.register_worker(settings, worker_id, "parker@here", 1)
    ids = [f"txn_parked_{uuid.uuid4().hex[:12]}_{i}" for i in range(count)]
    for txid in ids:
        row, _ = registry.start(settings, Counter.kind, txid, {}, Counter.policy)
        claimed = registry.claim(
            settings, Counter.kind, txid, 1, worker="parker@here", worker_id=worker_id, policy=Counter.policy
        )
        assert claimed is not None
        assert registry.park(settings, row.id, 1, {"ticks": 1}, wait)
    return ids


def test_wakers_running_at_once_wake_each_due_parked_tracker_exactly_once(stack: Stack) -> None:
    settings = stack.settings()
    ids = _parked_entries(settings, 30, wait=0.0)
    not_due = _parked_entries(settings, 3, wait=3600.0)
    found = all_at_once([partial(registry.wake_due, settings, limit=1000) for _ in range(3)])
    woken = [(r.transaction_id, r.epoch) for rows in found for r in rows]
    assert sorted(woken) == sorted((txid, 2) for txid in ids), "each woken once, under a new epoch"
    for txid in ids:
        row = registry.get(settings, Counter.kind, txid)
        assert row is not None and row.status == "pending" and row.state == {"ticks": 1}
        assert row.tick_at is not None, "the woken incarnation keeps the tick schedule"
    for txid in not_due:
        row = registry.get(settings, Counter.kind, txid)
        assert row is not None and row.status == "parked" and row.epoch == 1


def test_a_sweep_wakes_parked_trackers_left_due_for_a_lease_period_and_leaves_the_rest_to_wakers(
    stack: Stack,
) -> None:
    settings = stack.settings()
    ids = _parked_entries(settings, 5, wait=-(settings.lease_seconds + 1))
    just_due = _parked_entries(settings, 2, wait=0.0)
    published: list[str] = []
    counts = supervisor.sweep(settings, lambda row: published.append(row.transaction_id), name="test-wake")
    assert counts["woken"] >= len(ids)
    assert set(ids) <= set(published)
    assert not set(just_due) & set(published), "a worker's waker wakes these, in batches"
    for txid in just_due:  # no worker runs in this module: they would stay due for the next tests
        registry.request_stop(settings, Counter.kind, txid, "normal")


def test_a_sweep_publishes_the_parked_trackers_it_wakes_in_batches_as_a_worker_s_waker_does(
    stack: Stack,
) -> None:
    """Workers that fell a lease period behind are not handed one message (and one claim) per
    tick by the sweep: before, its woken entries were published one by one (at 1,000,000 parked
    trackers, 26,384 single messages in a window; 16 ms of worker CPU a tick against 0.5 ms in a
    batch)."""
    from tracking.worker import Batch, Waker

    settings = stack.settings()
    ids = _parked_entries(settings, 4, wait=-(settings.lease_seconds + 1))
    alone: list[str] = []
    batches: list[Batch] = []

    def publish(row: Publishable) -> None:
        alone.append(row.transaction_id)

    waker = Waker(settings, publish, batches.append)
    counts = supervisor.sweep(settings, publish, name="test-batches", publish_woken=waker.publish_woken)
    assert counts["woken"] >= len(ids) and counts["failed_publish"] == 0
    in_batches = {txid for batch in batches for txid, _epoch in batch.members}
    assert set(ids) <= in_batches and not set(ids) & set(alone)
    assert all(batch.kind == Counter.kind and len(batch.members) >= 2 for batch in batches)


def test_a_tracker_does_not_park_while_a_message_waits_and_a_superseded_one_cannot_park(
    stack: Stack,
) -> None:
    settings = stack.settings()
    worker_id = f"parker/{uuid.uuid4().hex}"
    registry.register_worker(settings, worker_id, "parker@here", 1)
    txid = f"txn_mail_{uuid.uuid4().hex}"
    row, _ = registry.start(settings, Counter.kind, txid, {}, Counter.policy)
    registry.claim(settings, Counter.kind, txid, 1, worker="w", worker_id=worker_id, policy=Counter.policy)
    message_id = registry.enqueue(settings, Counter.kind, txid, registry.MessageType.CAST, {"n": 1})
    assert not registry.park(settings, row.id, 1, {"ticks": 1}, 60.0)
    assert registry.get(settings, Counter.kind, txid).status == "running"  # type: ignore[union-attr]
    registry.handled(settings, row.id, 1, message_id, {"ticks": 1, "n": 1})
    with pytest.raises(Fenced):
        registry.park(settings, row.id, 2, {"ticks": 99}, 60.0)
    assert registry.park(settings, row.id, 1, {"ticks": 2}, 60.0)
    parked = registry.get(settings, Counter.kind, txid)
    assert parked is not None and parked.status == "parked" and parked.state == {"ticks": 2}
    assert parked.worker_id is None
    registry.enqueue(
        settings, Counter.kind, txid, registry.MessageType.CAST, {"n": 2}
    )  # a message wakes it now
    assert [r.transaction_id for r in registry.wake_due(settings)] == [txid]
