"""Sparse trackers park between ticks: they hold no worker slot, and lookup, call, cast, stop and
restarts behave as for a running tracker. On each stack, with one worker of three slots."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

import tracking
from tests.harness import Cluster, in_status, wait_for
from tests.integration.trackers import ParkedMailman, Sparse
from tracking import Status

SLOTS = 3


#: one worker with only a few slots: more trackers than slots run only if parking frees them
pytestmark = pytest.mark.cluster(workers=("p1",), beat=False, concurrency=SLOTS)


def ticks(tracker: type[tracking.Tracker], txid: str) -> int:
    state = tracker.get_state(txid)
    return 0 if state is None else int(state["ticks"])


def ticked(tracker: type[tracking.Tracker], txid: str, at_least: int) -> Callable[[], bool]:
    """A condition for ``wait_for``: the tracker has ticked ``at_least`` times."""
    return lambda: ticks(tracker, txid) >= at_least


def state_of(tracker: type[tracking.Tracker], txid: str) -> dict[str, Any]:
    """The tracker's state, which it has: it has ticked."""
    state = tracker.get_state(txid)
    assert state is not None, f"{txid} has no state"
    return state


def parked(tracker: type[tracking.Tracker], txid: str) -> tracking.TrackerRef:
    return wait_for(lambda: in_status(tracker, txid, Status.PARKED), what=f"{txid} to park")


def test_more_sparse_trackers_than_worker_slots_all_tick(cluster: Cluster) -> None:
    ids = [f"txn_sparse_{uuid.uuid4().hex[:10]}_{i}" for i in range(4 * SLOTS)]
    for txid in ids:
        Sparse.start(txid)
    for txid in ids:  # a tracker that held its slot between ticks would starve the others
        wait_for(ticked(Sparse, txid, 3), timeout=90, what=f"{txid} to tick 3 times")
    ref = parked(Sparse, ids[0])
    assert ref.worker is None and ref.heartbeat_at is None
    assert ref.epoch > 1, "each wake-up is a new incarnation with a new fencing token"
    for txid in ids:
        Sparse.stop(txid)
        assert Sparse.lookup(txid) is None


def test_a_parked_tracker_handles_casts_and_answers_a_call_without_ticking_early(
    cluster: Cluster, txid: str
) -> None:
    ParkedMailman.start(txid)
    first = parked(ParkedMailman, txid)
    assert ticks(ParkedMailman, txid) == 1
    ParkedMailman.cast(txid, {"n": 1})
    ParkedMailman.cast(txid, {"n": 2})
    assert ParkedMailman.call(txid, "seen", timeout=20) == [1, 2]
    again = wait_for(
        lambda: in_status(ParkedMailman, txid, Status.PARKED, after_epoch=first.epoch),
        what="the tracker to park again",
    )
    assert again.restarts == 0, "a wake-up is not a restart"
    assert ticks(ParkedMailman, txid) == 1, "its next tick is still five minutes away"
    ParkedMailman.stop(txid)
    assert ParkedMailman.lookup(txid) is None
    with pytest.raises(tracking.NotFound):
        ParkedMailman.get_state(txid)


def test_an_abnormal_stop_of_a_parked_tracker_restarts_it_with_its_state(cluster: Cluster, txid: str) -> None:
    ParkedMailman.start(txid)
    first = parked(ParkedMailman, txid)
    ParkedMailman.cast(txid, {"n": 7})
    wait_for(lambda: state_of(ParkedMailman, txid)["seen"] == [7], what="the cast to be handled")
    parked(ParkedMailman, txid)
    ParkedMailman.stop(txid, reason="crash")
    restarted = wait_for(
        lambda: (
            (r := ParkedMailman.lookup(txid)) is not None and r.restarts == 1 and r.epoch > first.epoch and r
        ),
        what="the restart",
    )
    assert restarted.status in (Status.PENDING, Status.RUNNING, Status.PARKED)
    # A restart ticks at once (its schedule is not kept) and parks again, with the state it had.
    wait_for(lambda: ticks(ParkedMailman, txid) == 2, what="the restarted tracker to tick")
    parked(ParkedMailman, txid)
    assert state_of(ParkedMailman, txid)["seen"] == [7]
    ParkedMailman.stop(txid)


def test_parked_trackers_go_on_after_their_worker_is_killed(cluster: Cluster) -> None:
    ids = [f"txn_sparse_kill_{uuid.uuid4().hex[:10]}_{i}" for i in range(2 * SLOTS)]
    for txid in ids:
        Sparse.start(txid)
    for txid in ids:
        wait_for(ticked(Sparse, txid, 2), timeout=60, what=f"{txid} to tick")
    cluster.kill("p1")
    before = {txid: ticks(Sparse, txid) for txid in ids}
    cluster.worker("p2", concurrency=SLOTS)
    for txid in ids:  # parked ones are woken by the new worker; one caught ticking is restarted
        wait_for(
            ticked(Sparse, txid, before[txid] + 2),
            timeout=60,
            what=f"{txid} to tick on the new worker",
        )
    for txid in ids:
        Sparse.stop(txid)
