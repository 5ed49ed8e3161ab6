"""The claim, the first write of every incarnation, on SQLite and PostgreSQL: each of its fencing
conditions refuses a claim alone, and a refused claim changes nothing, not even the history.

On PostgreSQL the claim is one statement, its update and the ``running`` event's insert (which
selects from the update's returned row); every case below fails if one of the update's conditions
(pending, the message's epoch, the claimer's lease: its row, alive, renewed within the lease by the
database clock) were dropped from it, or if the event were recorded for a claim that did not happen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from tests.registry.test_transitions import (
    KIND,
    POLICY,
    claim,
    delete_worker_row,
    entry,
    expire_lease,
    new_worker,
)
from tracking import registry
from tracking.models import WorkerStatus, events, trackers, workers
from tracking.settings import Settings


def history(settings: Settings, txid: str) -> list[tuple[int, str]]:
    """The entry's events, ``(epoch, event)`` in order."""
    with registry.engine(settings).connect() as conn:
        rows = conn.execute(
            sa.select(events.c.epoch, events.c.event)
            .where(events.c.kind == KIND, events.c.transaction_id == txid)
            .order_by(events.c.id)
        )
        return [(epoch, event) for epoch, event in rows]


def mark_worker(settings: Settings, worker_id: str, status: WorkerStatus) -> None:
    with registry.engine(settings).begin() as conn:
        conn.execute(workers.update().where(workers.c.id == worker_id).values(status=status.value))


def claim_twice(settings: Settings, epoch: int, worker_id: str, txid: str) -> int:
    """A message delivered twice: the first delivery's claim went through; the second's epoch."""
    assert claim(settings, txid, epoch, worker_id) is not None
    return epoch


def lease(change: Callable[[Settings, str], None]) -> Callable[[Settings, int, str, str], int]:
    """A refusal by the claimer's lease: ``change`` done to it, the message's own epoch named."""

    def refusal(settings: Settings, epoch: int, worker_id: str, _txid: str) -> int:
        change(settings, worker_id)
        return epoch

    return refusal


#: each way a claim must be refused: what to do, given the fresh pending entry's epoch, a worker
#: with a live lease and the transaction ID; returns the epoch the claim names
REFUSALS: dict[str, Callable[[Settings, int, str, str], int]] = {
    "a stale epoch (an older incarnation's message)": lambda _s, epoch, _w, _t: epoch - 1,
    "a later epoch (no such incarnation yet)": lambda _s, epoch, _w, _t: epoch + 1,
    "not pending: claimed already (a message delivered twice)": claim_twice,
    "the lease expired by the database clock": lease(expire_lease),
    "the lease row is gone": lease(delete_worker_row),
    "the lease was declared lost": lease(lambda s, w: mark_worker(s, w, WorkerStatus.LOST)),
    "the lease was given up": lease(lambda s, w: mark_worker(s, w, WorkerStatus.STOPPED)),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_claim_missing_one_condition_is_refused_and_changes_nothing(
    registry_settings: Settings, txid: str, case: str
) -> None:
    settings = registry_settings
    row, _ = registry.start(settings, KIND, txid, {"a": 1}, POLICY)
    worker_id = new_worker(settings)
    epoch = REFUSALS[case](settings, row.epoch, worker_id, txid)
    before, events_before = _snapshot(settings, txid), history(settings, txid)

    assert claim(settings, txid, epoch, worker_id) is None
    assert _snapshot(settings, txid) == before, "a refused claim changed the entry"
    assert history(settings, txid) == events_before, "a refused claim recorded an event"


def test_a_claim_records_one_running_event_under_its_epoch_in_the_same_write(
    registry_settings: Settings, txid: str
) -> None:
    settings = registry_settings
    row, _ = registry.start(settings, KIND, txid, {}, POLICY)
    worker_id = new_worker(settings)

    running = claim(settings, txid, row.epoch, worker_id)

    assert running is not None and (running.status, running.epoch) == ("running", row.epoch)
    assert (running.worker_id, running.worker) == (worker_id, "test@here")
    assert running.db_now is not None
    assert history(settings, txid) == [(row.epoch, "started"), (row.epoch, "running")]
    after = entry(settings, txid)
    assert after is not None and (after.status, after.worker_id) == ("running", worker_id)


def test_a_woken_tracker_is_claimed_without_a_new_start_event(registry_settings: Settings, txid: str) -> None:
    """A parked tracker woken for its tick (``tick_at`` kept) is not a new start."""
    settings = registry_settings
    row, _ = registry.start(settings, KIND, txid, {}, POLICY)
    with registry.engine(settings).begin() as conn:
        conn.execute(trackers.update().where(trackers.c.id == row.id).values(tick_at=registry.db_now(5)))
    events_before = history(settings, txid)

    woken = claim(settings, txid, row.epoch, new_worker(settings))

    assert woken is not None and woken.status == "running" and woken.tick_at is not None
    assert history(settings, txid) == events_before


def _snapshot(settings: Settings, txid: str) -> dict[str, Any]:
    with registry.engine(settings).connect() as conn:
        found = conn.execute(
            sa.select(trackers).where(trackers.c.kind == KIND, trackers.c.transaction_id == txid)
        ).mappings()
        return dict(found.one())
