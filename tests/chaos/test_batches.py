"""Parked trackers ticked in batches while workers are killed and shut down: nothing lost, no stale
tick accepted (each tick is a fenced effect recorded with its token), and a warm shutdown is not a
crash. Each tick inserts its token into a side table only while its incarnation holds the entry."""

from __future__ import annotations

import signal
import uuid
from functools import partial

import pytest

from tests.chaos.test_workers import stale_registry_writes, stale_ticks_accepted
from tests.harness import TIMINGS, Cluster, wait_for
from tests.integration.trackers import ParkedRecorder

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.stacks("postgres-redis", "sqlite-embedded", tables=("ticks",)),
    pytest.mark.cluster(each_test=True),
]

N = 60


def ticks(ids: list[str]) -> dict[str, int]:
    return {txid: int((ParkedRecorder.get_state(txid) or {}).get("ticks", 0)) for txid in ids}


def each_ticked_since(ids: list[str], before: dict[str, int], more: int) -> bool:
    now = ticks(ids)
    return all(now[txid] >= before[txid] + more for txid in ids)


def started(cluster: Cluster, n: int) -> list[str]:
    """Two workers and beat, and ``n`` parked trackers each ticked a few times."""
    cluster.start("w1", "w2", beat=True)
    ids = [f"txn_pbatch_{uuid.uuid4().hex[:10]}_{i}" for i in range(n)]
    ParkedRecorder.start_many(ids)
    wait_for(
        lambda: each_ticked_since(ids, dict.fromkeys(ids, 0), 3), timeout=120, what="every tracker to tick"
    )
    return ids


def test_workers_killed_while_batches_run_lose_no_parked_tracker_and_accept_no_stale_tick(
    cluster: Cluster,
) -> None:
    ids = started(cluster, N)
    recovery = TIMINGS["lease_seconds"] + TIMINGS["sweep_seconds"] + 60
    for _ in range(3):
        before = ticks(ids)
        cluster.signal("w1", signal.SIGKILL)
        cluster.kill("w1")
        wait_for(
            partial(each_ticked_since, ids, before, 2), timeout=recovery, what="every tracker to tick on"
        )
        cluster.worker("w1")
    before = ticks(ids)
    wait_for(lambda: each_ticked_since(ids, before, 3), timeout=recovery, what="every tracker to tick on")
    assert all(ParkedRecorder.lookup(txid) is not None for txid in ids), "a tracker was lost"
    assert stale_ticks_accepted(cluster.stack, ids) == 0
    assert stale_registry_writes(cluster.stack, ids) == 0


def test_a_warm_shutdown_while_batches_run_hands_off_or_parks_every_tracker_without_a_crash(
    cluster: Cluster,
) -> None:
    ids = started(cluster, N)
    for _ in range(2):
        before = ticks(ids)
        cluster.stop("w1", timeout=30)
        wait_for(partial(each_ticked_since, ids, before, 2), timeout=60, what="every tracker to tick on")
        cluster.worker("w1")
    refs = [ParkedRecorder.lookup(txid) for txid in ids]
    assert all(ref is not None and ref.restarts == 0 for ref in refs), "a warm shutdown is not a crash"
    assert stale_ticks_accepted(cluster.stack, ids) == 0
    assert stale_registry_writes(cluster.stack, ids) == 0
