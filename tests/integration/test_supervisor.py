"""Supervisor sweeps against the registry, with no worker running (so no other sweeper interferes)."""

from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy as sa

from tests.integration.harness import Stack
from tests.integration.trackers import Counter
from tracking import registry, supervisor
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

    def record(row: registry.Row) -> None:
        with lock:
            published.append((row["transaction_id"], row["epoch"]))

    barrier = threading.Barrier(supervisors)
    errors: list[BaseException] = []

    def sweep(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            supervisor.sweep(settings, record, name=f"test-supervisor-{n}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=sweep, args=(n,)) for n in range(supervisors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(published) == sorted((txid, 2) for txid in ids), "each orphan published once, for epoch 2"
    with registry.engine(settings).connect() as conn:
        epochs = conn.execute(sa.select(trackers.c.epoch).where(trackers.c.transaction_id.in_(ids))).scalars()
        assert set(epochs) == {2}
    for txid in ids:
        Counter.stop(txid)
