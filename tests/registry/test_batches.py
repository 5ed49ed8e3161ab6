"""Batched claims and parks of parked trackers: each entry of a batch is fenced alone.

On SQLite and PostgreSQL; time moves by SQL (an entry made due), never by sleeping.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.registry.test_transitions import KIND, POLICY, claim, new_worker
from tracking import registry
from tracking.exceptions import Fenced
from tracking.models import MessageType, Status, trackers
from tracking.settings import Settings

INTERVAL = 300.0


def parked(settings: Settings, txids: list[str], worker_id: str) -> dict[str, int]:
    """Entries started, claimed, parked, then made due and woken: ``{txid: pending epoch}``."""
    for txid in txids:
        row, _ = registry.start(settings, KIND, txid, {}, POLICY)
        running = claim(settings, txid, row.epoch, worker_id)
        assert running is not None
        assert registry.park(settings, running.id, running.epoch, {"n": 0}, INTERVAL)
    make_due(settings, txids)
    woken = {r.transaction_id: r.epoch for r in registry.wake_due(settings, 1000)}
    assert set(woken) == set(txids)
    return woken


def make_due(settings: Settings, txids: list[str]) -> None:
    with registry.engine(settings).begin() as conn:
        conn.execute(
            trackers.update()
            .where(trackers.c.transaction_id.in_(txids))
            .values(due_at=registry.db_now(-1), tick_at=registry.db_now(-1))
        )


def claim_batch(settings: Settings, members: list[tuple[str, int]], worker_id: str) -> list[registry.Entry]:
    return registry.claim_batch(
        settings, KIND, members, worker="test@here", worker_id=worker_id, policy=POLICY
    )


def test_a_batch_claims_every_entry_still_pending_under_its_epoch_and_leaves_out_a_superseded_one(
    registry_settings: Settings,
) -> None:
    worker_id = new_worker(registry_settings)
    woken = parked(registry_settings, ["b-1", "b-2", "b-3"], worker_id)
    # b-2 was claimed through another message (its own live incarnation) meanwhile
    assert claim(registry_settings, "b-2", woken["b-2"], worker_id) is not None
    members = [(txid, epoch) for txid, epoch in woken.items()] + [("b-unknown", 7)]
    got = claim_batch(registry_settings, members, worker_id)
    assert sorted(r.transaction_id for r in got) == ["b-1", "b-3"]
    assert all(r.status is Status.RUNNING and r.worker_id == worker_id for r in got)
    assert all(r.db_now is not None and r.tick_at is not None for r in got)
    # the same batch delivered twice claims nothing more
    assert claim_batch(registry_settings, members, worker_id) == []


def test_a_batch_is_not_claimed_by_a_worker_whose_lease_expired(registry_settings: Settings) -> None:
    from tests.registry.test_transitions import expire_lease

    worker_id = new_worker(registry_settings)
    woken = parked(registry_settings, ["x-1", "x-2"], worker_id)
    late = new_worker(registry_settings)
    expire_lease(registry_settings, late)
    assert claim_batch(registry_settings, list(woken.items()), late) == []
    assert {r.status for r in registry.get_many(registry_settings, KIND, ["x-1", "x-2"])} == {Status.PENDING}


def test_a_batch_parks_each_entry_with_its_own_state_one_interval_after_its_tick(
    registry_settings: Settings,
) -> None:
    worker_id = new_worker(registry_settings)
    woken = parked(registry_settings, ["p-1", "p-2"], worker_id)
    rows = {r.transaction_id: r for r in claim_batch(registry_settings, list(woken.items()), worker_id)}
    states = [(rows[t].id, rows[t].epoch, {"n": i, "txid": t}) for i, t in enumerate(sorted(rows))]
    assert registry.park_batch(registry_settings, states, INTERVAL) == {r.id for r in rows.values()}
    for i, txid in enumerate(sorted(rows)):
        after = registry.get(registry_settings, KIND, txid)
        assert after is not None and after.status is Status.PARKED and after.worker_id is None
        assert after.state == {"n": i, "txid": txid}
        before = rows[txid].tick_at
        assert before is not None and after.tick_at is not None and after.due_at == after.tick_at
        assert after.tick_at - before == timedelta(seconds=INTERVAL)


def test_a_batch_entry_that_fell_a_whole_interval_behind_ticks_next_an_interval_from_now(
    registry_settings: Settings,
) -> None:
    worker_id = new_worker(registry_settings)
    woken = parked(registry_settings, ["l-1"], worker_id)
    with registry.engine(registry_settings).begin() as conn:
        conn.execute(
            trackers.update().where(trackers.c.transaction_id == "l-1").values(tick_at=registry.db_now(-3600))
        )
    (row,) = claim_batch(registry_settings, list(woken.items()), worker_id)
    assert registry.park_batch(registry_settings, [(row.id, row.epoch, {})], INTERVAL) == {row.id}
    after = registry.get(registry_settings, KIND, "l-1")
    assert after is not None and after.tick_at is not None and row.db_now is not None
    assert abs((after.tick_at - row.db_now).total_seconds() - INTERVAL) < 60, "not caught up at once"


def test_a_batch_leaves_out_an_entry_with_mail_waiting_and_one_fenced_and_parks_the_rest(
    registry_settings: Settings,
) -> None:
    worker_id = new_worker(registry_settings)
    woken = parked(registry_settings, ["m-1", "m-2", "m-3"], worker_id)
    rows = {r.transaction_id: r for r in claim_batch(registry_settings, list(woken.items()), worker_id)}
    registry.enqueue(registry_settings, KIND, "m-1", MessageType.CAST, {"hello": 1})
    # m-2 is handed off meanwhile (its worker shut down): its epoch moves on
    registry.hand_off(registry_settings, [(rows["m-2"].id, rows["m-2"].epoch)], "test")
    states = [(r.id, r.epoch, {"ticked": True}) for r in rows.values()]
    assert registry.park_batch(registry_settings, states, INTERVAL) == {rows["m-3"].id}
    # the caller tells the two apart: the one with mail still holds its entry, the other is fenced
    registry.checkpoint(registry_settings, rows["m-1"].id, rows["m-1"].epoch, {"ticked": True})
    with pytest.raises(Fenced):
        registry.checkpoint(registry_settings, rows["m-2"].id, rows["m-2"].epoch, {"ticked": True})
    m1 = registry.get(registry_settings, KIND, "m-1")
    assert m1 is not None and m1.status is Status.RUNNING and m1.state == {"ticked": True}


def test_a_batch_of_more_than_the_most_entries_is_refused_and_changes_nothing(
    registry_settings: Settings,
) -> None:
    worker_id = new_worker(registry_settings)
    woken = parked(registry_settings, ["big-1"], worker_id)
    members = list(woken.items()) + [(f"none-{i}", 1) for i in range(registry.MAX_BATCH)]
    with pytest.raises(ValueError, match="at most"):
        claim_batch(registry_settings, members, worker_id)
    with pytest.raises(ValueError, match="at most"):
        registry.park_batch(registry_settings, [(i, 1, {}) for i in range(registry.MAX_BATCH + 1)], 1.0)
    row = registry.get(registry_settings, KIND, "big-1")
    assert row is not None and row.status is Status.PENDING
    with registry.engine(registry_settings).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(trackers)).scalar_one() == 1
