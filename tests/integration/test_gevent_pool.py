"""The gevent pool: many trackers in one ``celery -A tracking worker -P gevent`` process.

PostgreSQL + Redis, each test on a registry and queue of its own (a warm shutdown republishes its
trackers, which must not reach the next test's worker).
"""

from __future__ import annotations

import pytest

import tracking
from tests.harness import Cluster, wait_for
from tests.integration.trackers import Mailman, SlowCounter
from tracking import Status

TRACKERS = 200


pytestmark = [
    pytest.mark.stacks("postgres-redis", each_test=True),
    pytest.mark.cluster(each_test=True),
]


def gevent_worker(cluster: Cluster, name: str, concurrency: int = TRACKERS + 50) -> None:
    """A real ``celery -A tracking worker -P gevent`` process, ready to consume."""
    cluster.worker(name, concurrency, pool="gevent")
    assert f"{concurrency} (gevent)" in cluster.log(name), "the worker's banner names its pool"


def refs(ids: dict[str, type[tracking.Tracker]]) -> dict[str, tracking.TrackerRef | None]:
    return {txid: cls.lookup(txid) for txid, cls in ids.items()}


def all_running_on(ids: dict[str, type[tracking.Tracker]], worker: str) -> dict[str, tracking.TrackerRef]:
    """Every tracker's ref if all run on ``worker`` (by node name), else an empty dict."""
    found = refs(ids)
    if all(
        ref is not None and ref.status is Status.RUNNING and (ref.worker or "").startswith(f"{worker}@")
        for ref in found.values()
    ):
        return {txid: ref for txid, ref in found.items() if ref is not None}
    return {}


def start_trackers(run_id: str) -> dict[str, type[tracking.Tracker]]:
    """One Mailman (answers calls) and TRACKERS - 1 SlowCounters (interval 60 s, never parked)."""
    ids: dict[str, type[tracking.Tracker]] = {f"txn_{run_id}_mail": Mailman}
    ids.update({f"txn_{run_id}_{i}": SlowCounter for i in range(TRACKERS - 1)})
    for txid, cls in ids.items():
        cls.start(txid)
    return ids


def test_two_hundred_trackers_run_in_one_gevent_worker_and_a_call_is_answered_while_they_run(
    cluster: Cluster, txid: str
) -> None:
    gevent_worker(cluster, "g1")
    ids = start_trackers(txid)
    wait_for(lambda: all_running_on(ids, "g1"), timeout=120, interval=0.2, what="all trackers running on g1")

    mail = f"txn_{txid}_mail"
    assert Mailman.call(mail, {"hello": [1, 2]}, timeout=30) == {"echo": {"hello": [1, 2]}}
    assert Mailman.call(mail, "seen", timeout=30) == []

    # The others ran on meanwhile: still running, on the same worker, the same incarnation.
    after = all_running_on(ids, "g1")
    assert len(after) == TRACKERS
    assert {ref.epoch for ref in after.values()} == {1}


@pytest.mark.fleet
def test_a_warm_shutdown_of_a_gevent_worker_hands_every_tracker_to_another_worker(
    cluster: Cluster, txid: str
) -> None:
    gevent_worker(cluster, "g1")
    ids = start_trackers(txid)
    before = wait_for(
        lambda: all_running_on(ids, "g1"), timeout=120, interval=0.2, what="all trackers running on g1"
    )
    gevent_worker(cluster, "g2")

    assert cluster.stop("g1", timeout=60) == 0  # SIGTERM: a warm shutdown

    after = wait_for(
        lambda: all_running_on(ids, "g2"), timeout=120, interval=0.2, what="all trackers running on g2"
    )
    assert all(after[t].epoch > before[t].epoch for t in ids), "each one runs under a new incarnation"
    assert all(after[t].restarts == before[t].restarts for t in ids), "a handoff is not a restart"
    assert Mailman.call(f"txn_{txid}_mail", "seen", timeout=30) == []
    assert "Traceback" not in cluster.log("g1")
