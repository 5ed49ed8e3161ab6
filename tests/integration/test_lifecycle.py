"""The whole promise on real workers, on each stack: start, lookup, restart on crash, deregister."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import tracking
from tests.harness import Cluster, running, wait_for
from tests.integration.trackers import (
    BadState,
    Counter,
    Crasher,
    PermanentFinisher,
    SlowCounter,
    TemporaryCrasher,
)
from tracking import Status, registry
from tracking.models import workers


def test_the_readme_session_start_lookup_crash_restart_stop(cluster: Cluster, txid: str) -> None:
    ref = Counter.start(txid)
    assert ref.already_started is False and ref.status is Status.PENDING

    first = wait_for(lambda: running(Counter, txid), what="the tracker to run")
    assert first.task_id == ref.task_id
    assert first.worker is not None and first.worker.split("@")[0] in {"w1", "w2"}
    wait_for(lambda: (Counter.get_state(txid) or {}).get("ticks", 0) >= 3, what="a few ticks")

    Counter.stop(txid, reason="its_a_crash")
    second = wait_for(lambda: running(Counter, txid, other_than=first.task_id), what="the restart")
    assert second.restarts == 1
    assert second.epoch > first.epoch
    state = Counter.get_state(txid)
    assert state is not None and state["transaction_id"] == txid
    ticks_after_restart = state["ticks"]
    assert ticks_after_restart >= 3, "the restarted tracker kept its state"

    Counter.stop(txid)
    assert Counter.lookup(txid) is None
    with pytest.raises(tracking.NotFound):
        Counter.get_state(txid)
    with pytest.raises(tracking.NotFound):
        Counter.stop(txid)


def test_start_twice_gives_one_tracker(cluster: Cluster, txid: str) -> None:
    first = Counter.start(txid, until=10_000)
    second = Counter.start(txid, until=1)
    assert second.already_started is True
    assert second.task_id == first.task_id and second.epoch == first.epoch
    assert Counter.count() >= 1 and [r.transaction_id for r in Counter.list()].count(txid) == 1
    state = wait_for(lambda: Counter.get_state(txid), what="the first checkpoint")
    assert state["until"] == 10_000, "the second start changed nothing"
    Counter.stop(txid)


def test_a_tracker_that_always_crashes_ends_dead_after_max_restarts(cluster: Cluster, txid: str) -> None:
    Crasher.start(txid)
    wait_for(lambda: Crasher.lookup(txid) is None, timeout=60, what="the crasher to be dead")
    (dead,) = [r for r in Crasher.list(status="dead") if r.transaction_id == txid]
    assert dead.restarts == Crasher.max_restarts == 3
    assert dead.last_error is not None and "the source is on fire" in dead.last_error


def test_a_dead_tracker_is_started_afresh(cluster: Cluster, txid: str) -> None:
    TemporaryCrasher.start(txid)
    wait_for(
        lambda: (
            TemporaryCrasher.count(status="dead")
            and TemporaryCrasher.lookup(txid) is None
            and any(r.transaction_id == txid for r in TemporaryCrasher.list(status="dead"))
        )
    )
    again = TemporaryCrasher.start(txid)
    assert again.already_started is False and again.restarts == 0 and again.status is Status.PENDING
    wait_for(lambda: TemporaryCrasher.lookup(txid) is None, what="dead again")
    TemporaryCrasher.stop(txid)  # removes the dead entry
    assert not any(r.transaction_id == txid for r in TemporaryCrasher.list())


def test_a_temporary_tracker_is_never_restarted(cluster: Cluster, txid: str) -> None:
    TemporaryCrasher.start(txid)
    wait_for(lambda: any(r.transaction_id == txid for r in TemporaryCrasher.list(status="dead")))
    (dead,) = [r for r in TemporaryCrasher.list(status="dead") if r.transaction_id == txid]
    assert dead.restarts == 0


def test_a_permanent_tracker_is_restarted_after_done(cluster: Cluster, txid: str) -> None:
    PermanentFinisher.start(txid)
    ref = wait_for(
        lambda: (r := PermanentFinisher.lookup(txid)) and r.restarts >= 2 and r, what="two restarts"
    )
    assert ref.status in (Status.PENDING, Status.RUNNING, Status.FAILED)
    wait_for(lambda: (PermanentFinisher.get_state(txid) or {}).get("finished", 0) >= 2)
    PermanentFinisher.stop(txid)
    assert PermanentFinisher.lookup(txid) is None


def test_a_tick_returning_non_json_state_is_a_crash_and_keeps_the_last_good_state(
    cluster: Cluster, txid: str
) -> None:
    BadState.start(txid)
    wait_for(lambda: any(r.transaction_id == txid for r in BadState.list(status="dead")), what="dead")
    (dead,) = [r for r in BadState.list(status="dead") if r.transaction_id == txid]
    assert dead.last_error is not None and "StateNotSerializable" in dead.last_error
    assert BadState.get_state(txid) == {"ticks": 2}


def test_stop_does_not_wait_for_the_interval(cluster: Cluster, txid: str) -> None:
    SlowCounter.start(txid)
    wait_for(lambda: (SlowCounter.get_state(txid) or {}).get("ticks", 0) >= 1)
    SlowCounter.stop(txid, timeout=10)  # the interval is 60 s: this returns long before
    assert SlowCounter.lookup(txid) is None


def test_a_hundred_trackers_on_two_workers_all_finish_and_deregister(cluster: Cluster) -> None:
    ids = [f"batch_{i:03d}_{cluster.stack.queue}" for i in range(100)]
    for txid in ids:
        Counter.start(txid, until=5)
    wait_for(lambda: all(Counter.lookup(t) is None for t in ids), timeout=120, what="all 100 to finish")
    workers = {e for e in _workers_seen(cluster)}
    assert workers >= {"w1", "w2"}, workers


def _workers_seen(cluster: Cluster) -> set[str]:
    return {
        name
        for name in ("w1", "w2")
        if "tracking.Counter" in cluster.log(name) and "succeeded" in cluster.log(name)
    }


@pytest.mark.parametrize("terminate", [False, True])
def test_revoking_a_running_tracker_stops_it_as_shutdown(
    cluster: Cluster, txid: str, terminate: bool
) -> None:
    from tracking.celery import current_app

    Counter.start(txid)
    ref = wait_for(lambda: running(Counter, txid))
    current_app().control.revoke(ref.task_id, terminate=terminate)
    wait_for(lambda: Counter.lookup(txid) is None, what="the revoked tracker to be deregistered")
    assert not any(r.transaction_id == txid for r in Counter.list())


def test_an_entry_claimed_for_a_live_worker_that_runs_nothing_is_handed_off(
    cluster: Cluster, txid: str
) -> None:
    # As after a claim whose commit succeeded but whose answer was lost with the connection: the
    # entry is running under a live worker's lease, and no incarnation runs it there.
    settings = cluster.stack.settings()
    with registry.engine(settings).connect() as conn:
        worker_id = conn.execute(
            sa.select(workers.c.id).where(workers.c.hostname.like("w1@%"), workers.c.status == "alive")
        ).scalar_one()
    registry.start(settings, Counter.kind, txid, {}, Counter.policy)  # recorded, not published
    claimed = registry.claim(
        settings, Counter.kind, txid, 1, worker="w1@lost-answer", worker_id=worker_id, policy=Counter.policy
    )
    assert claimed is not None
    ref = wait_for(lambda: running(Counter, txid, after_epoch=1), what="the hand-off")
    assert ref.restarts == 0, "a hand-off, not a restart"
    wait_for(lambda: (Counter.get_state(txid) or {}).get("ticks", 0) >= 1, what="a tick")
    events = [e.event for e in registry.history(settings, Counter.kind, txid)]
    assert "handoff" in events
    Counter.stop(txid)
