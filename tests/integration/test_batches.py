"""Parked trackers due together are ticked in batches, each entry of a batch treated alone: one
superseded since its wake-up is left out, one that crashes or is Done exits under its own policy,
and the others park again. With real workers on each stack; the trackers tick every five minutes,
so they tick only when a test makes them due."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

import tracking
from tests.harness import Cluster, Stack, in_status, wait_for
from tests.integration.trackers import Batched, BulkBatched
from tracking import Status, registry
from tracking.celery import current_app
from tracking.celery.process import batch_task_name, publish_batch_with
from tracking.models import trackers
from tracking.registry.transitions import new_task_id
from tracking.worker import Batch

pytestmark = pytest.mark.cluster(workers=("b1",), beat=False)

KINDS = [Batched, BulkBatched]


def started(kind: type[Batched], thens: dict[str, str]) -> dict[str, tracking.TrackerRef]:
    """Trackers started with these ``then``s, each parked after its first tick."""
    for txid, then in thens.items():
        kind.start(txid, then=then)
    return {txid: parked_after(kind, txid, 0) for txid in thens}


def parked_after(kind: type[Batched], txid: str, epoch: int) -> tracking.TrackerRef:
    return wait_for(
        lambda: in_status(kind, txid, Status.PARKED, after_epoch=epoch), timeout=60, what=f"{txid} to park"
    )


def state(kind: type[Batched], txid: str) -> dict[str, Any]:
    found = kind.get_state(txid)
    assert found is not None
    return found


def make_due(stack: Stack, ids: list[str]) -> None:
    """Their next tick is due now: the workers' wakers find them."""
    with registry.engine(stack.settings()).begin() as conn:
        conn.execute(
            trackers.update()
            .where(trackers.c.transaction_id.in_(ids))
            .values(due_at=registry.db_now(-1), tick_at=registry.db_now(-1))
        )


def woken_by_hand(stack: Stack, ids: list[str], times: int = 1) -> None:
    """Woken as a waker wakes them (pending under a new epoch, their tick due), ``times`` times
    over, and published by nobody: the test publishes the batch itself. No sweep publishes them
    again for ten minutes."""
    with registry.engine(stack.settings()).begin() as conn:
        for _ in range(times):
            conn.execute(
                trackers.update()
                .where(trackers.c.transaction_id.in_(ids))
                .values(
                    status=Status.PENDING.value,
                    epoch=trackers.c.epoch + 1,
                    task_id=new_task_id(),
                    due_at=registry.db_now(600),
                    tick_at=registry.db_now(-1),
                )
            )


def epochs(stack: Stack, ids: list[str]) -> dict[str, int]:
    with registry.engine(stack.settings()).connect() as conn:
        rows = conn.execute(
            sa.select(trackers.c.transaction_id, trackers.c.epoch).where(trackers.c.transaction_id.in_(ids))
        )
        return {txid: epoch for txid, epoch in rows}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_parked_trackers_due_together_tick_in_one_batch(
    cluster: Cluster, stack: Stack, kind: type[Batched]
) -> None:
    ids = [f"txn_batch_{uuid.uuid4().hex[:10]}_{i}" for i in range(6)]
    first = started(kind, dict.fromkeys(ids, "tick"))
    make_due(stack, ids)
    for txid in ids:
        parked_after(kind, txid, first[txid].epoch)
        assert state(kind, txid)["ticks"] == 2
        assert state(kind, txid)["task"] == batch_task_name(kind.kind), "ticked in a batch"
    if kind is BulkBatched:  # the hook was called once for all of them: they were due together
        assert state(kind, ids[0])["seen"] == sorted(ids)
    for txid in ids:
        kind.stop(txid)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_a_batch_treats_a_superseded_a_crashing_and_a_finished_entry_each_alone(
    cluster: Cluster, stack: Stack, kind: type[Batched]
) -> None:
    tag = uuid.uuid4().hex[:8]
    old, crash, done, ok = (f"txn_{name}_{tag}" for name in ("old", "crash", "done", "ok"))
    started(kind, {old: "tick", crash: "crash", done: "done", ok: "tick"})
    woken_by_hand(stack, [old, crash, done, ok])
    named = epochs(stack, [old, crash, done, ok])
    woken_by_hand(stack, [old])  # woken again meanwhile: the batch's epoch for it is stale
    publish_batch_with(current_app(), stack.settings())(
        Batch(kind.kind, tuple((txid, named[txid]) for txid in (old, crash, done, ok)))
    )
    parked_after(kind, ok, named[ok] - 1)
    assert state(kind, ok)["ticks"] == 2 and state(kind, ok)["token"] == named[ok]
    wait_for(lambda: kind.lookup(done) is None, timeout=60, what="the finished tracker to leave")
    dead = wait_for(
        lambda: [r for r in kind.list(status="dead") if r.transaction_id == crash],
        timeout=60,
        what="the crashed tracker (no restarts allowed) to be dead",
    )
    assert dead[0].epoch == named[crash]
    # the superseded entry was left alone: still pending under its newer epoch, not ticked
    stale = kind.lookup(old)
    assert stale is not None and stale.status == "pending" and stale.epoch == named[old] + 1
    assert state(kind, old)["ticks"] == 1
    if kind is BulkBatched:  # the hook saw only the entries the batch holds
        assert state(kind, ok)["seen"] == sorted([crash, done, ok])
    for txid in (old, ok, crash):
        kind.stop(txid)


def test_a_batch_message_delivered_twice_ticks_each_entry_once(cluster: Cluster, stack: Stack) -> None:
    ids = [f"txn_twice_{uuid.uuid4().hex[:10]}_{i}" for i in range(3)]
    started(Batched, dict.fromkeys(ids, "tick"))
    woken_by_hand(stack, ids)
    named = epochs(stack, ids)
    batch = Batch(Batched.kind, tuple((txid, named[txid]) for txid in ids))
    publish = publish_batch_with(current_app(), stack.settings())
    publish(batch)
    publish(batch)  # the same message again (the same task ID): a broker's redelivery
    for txid in ids:
        parked_after(Batched, txid, named[txid] - 1)
    # a third delivery after they parked again claims nothing either
    publish(batch)
    wait_for(
        lambda: "batch of 3: 0 claimed" in cluster.log("b1"),
        timeout=60,
        what="the late delivery to be dropped",
    )
    for txid in ids:
        assert state(Batched, txid)["ticks"] == 2
        Batched.stop(txid)
