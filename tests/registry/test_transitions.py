"""Registry transitions, one example each: the cases the model-based test found or must never lose.

Each test drives the registry's operations (and the supervisor's sweep) directly, on SQLite and on
PostgreSQL, and moves the database's clock by SQL (a heartbeat or an event made older), never by
sleeping.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from tracking import registry, supervisor
from tracking.client import Publishable
from tracking.exceptions import Fenced
from tracking.models import Entry, events, trackers, workers
from tracking.policy import Restart, RestartPolicy
from tracking.registry import rows
from tracking.settings import Settings

KIND = "transitions"
#: restarts allowed; a backoff long enough that a "failed" entry never becomes due by itself
POLICY = RestartPolicy(max_restarts=1000, max_seconds=60, backoff=300, backoff_max=600)
PERMANENT = dataclasses.replace(POLICY, restart=Restart.PERMANENT)


def new_worker(settings: Settings) -> str:
    worker_id = f"test/{uuid.uuid4().hex[:12]}"
    registry.register_worker(settings, worker_id, "test@here", 1)
    return worker_id


def claim(
    settings: Settings, txid: str, epoch: int, worker_id: str, policy: RestartPolicy = POLICY
) -> Entry | None:
    return registry.claim(settings, KIND, txid, epoch, worker="test@here", worker_id=worker_id, policy=policy)


def started_and_claimed(settings: Settings, txid: str, policy: RestartPolicy = POLICY) -> tuple[Entry, str]:
    """A new entry claimed by a new worker with a live lease: ``(running row, worker id)``."""
    row, created = registry.start(settings, KIND, txid, {}, policy)
    assert created
    worker_id = new_worker(settings)
    running = claim(settings, txid, row.epoch, worker_id, policy)
    assert running is not None and running.status == "running"
    return running, worker_id


def expire_lease(settings: Settings, worker_id: str) -> None:
    """The worker stopped renewing an hour ago, by the database clock."""
    with registry.engine(settings).begin() as conn:
        conn.execute(
            workers.update().where(workers.c.id == worker_id).values(heartbeat_at=registry.db_now(-3600))
        )


def delete_worker_row(settings: Settings, worker_id: str) -> None:
    with registry.engine(settings).begin() as conn:
        conn.execute(workers.delete().where(workers.c.id == worker_id))


def sweep(settings: Settings) -> list[Publishable]:
    """One sweep; returns the rows it published."""
    published: list[Publishable] = []
    supervisor.sweep(settings, published.append, name="test-supervisor")
    return published


def entry(settings: Settings, txid: str) -> Entry | None:
    return registry.get(settings, KIND, txid)


# -- (a) claims need a live lease; no entry is stranded under a worker with no live lease -----------


def test_a_claim_by_a_worker_whose_lease_expired_is_refused(registry_settings: Settings, txid: str) -> None:
    row, _ = registry.start(registry_settings, KIND, txid, {}, POLICY)
    worker_id = new_worker(registry_settings)
    expire_lease(registry_settings, worker_id)

    assert claim(registry_settings, txid, row.epoch, worker_id) is None
    after = entry(registry_settings, txid)
    assert after is not None and (after.status, after.epoch) == ("pending", row.epoch)


def test_a_claim_by_a_worker_whose_lease_row_is_gone_is_refused(
    registry_settings: Settings, txid: str
) -> None:
    row, _ = registry.start(registry_settings, KIND, txid, {}, POLICY)
    worker_id = new_worker(registry_settings)
    delete_worker_row(registry_settings, worker_id)

    assert claim(registry_settings, txid, row.epoch, worker_id) is None
    after = entry(registry_settings, txid)
    assert after is not None and after.status == "pending"


def test_a_claim_that_commits_after_a_sweep_declared_its_worker_lost_is_refused(
    registry_settings: Settings, txid: str
) -> None:
    worker_id = new_worker(registry_settings)
    expire_lease(registry_settings, worker_id)
    sweep(registry_settings)  # declares the worker lost (and forgets its row: it runs nothing)
    row, _ = registry.start(registry_settings, KIND, txid, {}, POLICY)

    assert claim(registry_settings, txid, row.epoch, worker_id) is None


@pytest.mark.parametrize("how", ["row deleted", "row marked lost"])
def test_an_entry_running_under_a_worker_with_no_live_lease_row_is_rescued_by_one_sweep(
    registry_settings: Settings, txid: str, how: str
) -> None:
    running, worker_id = started_and_claimed(registry_settings, txid)
    if how == "row deleted":
        delete_worker_row(registry_settings, worker_id)
    else:
        with registry.engine(registry_settings).begin() as conn:
            conn.execute(workers.update().where(workers.c.id == worker_id).values(status="lost"))

    published = sweep(registry_settings)

    after = entry(registry_settings, txid)
    assert after is not None
    assert after.status == "pending" and after.epoch > running.epoch
    assert [(r.transaction_id, r.epoch) for r in published] == [(txid, after.epoch)]


# -- (b) the fencing token never goes back, across lives ----------------------------------------------


def test_a_fresh_start_after_a_finish_gets_a_greater_epoch(registry_settings: Settings, txid: str) -> None:
    running, _ = started_and_claimed(registry_settings, txid)
    registry.exit_normally(registry_settings, running.id, running.epoch, "done", None)
    assert entry(registry_settings, txid) is None

    again, created = registry.start(registry_settings, KIND, txid, {}, POLICY)

    assert created
    assert again.epoch > running.epoch


def test_an_old_message_of_the_first_life_cannot_claim_the_next(
    registry_settings: Settings, txid: str
) -> None:
    running, worker_id = started_and_claimed(registry_settings, txid)
    registry.exit_normally(registry_settings, running.id, running.epoch, "done", None)
    again, _ = registry.start(registry_settings, KIND, txid, {}, POLICY)

    assert claim(registry_settings, txid, running.epoch, worker_id) is None
    after = entry(registry_settings, txid)
    assert after is not None and (after.status, after.epoch) == ("pending", again.epoch)


def test_a_fresh_start_after_a_stop_while_pending_gets_a_greater_epoch(
    registry_settings: Settings, txid: str
) -> None:
    first, _ = registry.start(registry_settings, KIND, txid, {}, POLICY)
    assert registry.request_stop(registry_settings, KIND, txid, "normal")[0] == "removed"

    again, created = registry.start(registry_settings, KIND, txid, {}, POLICY)

    assert created and again.epoch > first.epoch


def test_a_fresh_start_after_the_history_was_pruned_still_gets_a_greater_epoch(
    registry_settings: Settings, txid: str
) -> None:
    settings = dataclasses.replace(registry_settings, events_retention_seconds=3600)
    running, _ = started_and_claimed(settings, txid)
    registry.exit_normally(settings, running.id, running.epoch, "done", None)
    with registry.engine(settings).begin() as conn:
        conn.execute(events.update().where(events.c.transaction_id == txid).values(at=registry.db_now(-7200)))
    sweep(settings)
    assert registry.history(settings, KIND, txid) == []

    again, created = registry.start(settings, KIND, txid, {}, POLICY)

    assert created and again.epoch > running.epoch


# -- (c) start on PostgreSQL when the row it conflicted with leaves before it is read -----------------


def test_start_on_postgresql_inserts_again_when_the_conflicting_row_is_deleted_meanwhile(
    pg_database: str, txid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(database_url=pg_database)
    registry.migrate(settings)
    other = sa.create_engine(pg_database, poolclass=sa.NullPool)
    try:
        registry.start(settings, KIND, txid, {"life": 1}, POLICY)
        real_one = rows._one
        deleted: list[bool] = []

        def one_after_a_delete(conn: sa.Connection, *where: Any, lock: bool = False) -> Any:
            # The insert conflicted; just before the entry is read, another session deletes it.
            if lock and not deleted:
                with other.begin() as conn2:
                    conn2.execute(
                        trackers.delete().where(trackers.c.kind == KIND, trackers.c.transaction_id == txid)
                    )
                deleted.append(True)
            return real_one(conn, *where, lock=lock)

        monkeypatch.setattr("tracking.registry.entries._one", one_after_a_delete)

        row, created = registry.start(settings, KIND, txid, {"life": 2}, POLICY)

        assert deleted, "the race was not reproduced: start no longer reads the entry it conflicted with"
        assert created and row.status == "pending" and row.args == {"life": 2}
        stored = entry(settings, txid)
        assert stored is not None and stored.id == row.id
    finally:
        other.dispose()
        registry.dispose(settings)


# -- (d) a normal stop wins over whatever happens meanwhile -------------------------------------------


@pytest.mark.parametrize("reason", ["normal", "shutdown"])
def test_a_normal_stop_wins_over_a_crash(registry_settings: Settings, txid: str, reason: str) -> None:
    running, worker_id = started_and_claimed(registry_settings, txid)
    assert registry.request_stop(registry_settings, KIND, txid, reason)[0] == "requested"

    registry.exit_abnormally(registry_settings, running.id, running.epoch, "crashed", "boom")

    assert entry(registry_settings, txid) is None
    assert claim(registry_settings, txid, running.epoch + 1, worker_id) is None


def test_a_normal_stop_wins_over_a_handoff(registry_settings: Settings, txid: str) -> None:
    running, worker_id = started_and_claimed(registry_settings, txid)
    registry.request_stop(registry_settings, KIND, txid, "normal")

    republished = registry.hand_off(registry_settings, [(running.id, running.epoch)], "shutting down")

    assert [r for r in republished if r.transaction_id == txid] == []
    assert entry(registry_settings, txid) is None
    assert claim(registry_settings, txid, running.epoch + 1, worker_id) is None


def test_a_normal_stop_wins_over_a_permanent_trackers_done(registry_settings: Settings, txid: str) -> None:
    running, _ = started_and_claimed(registry_settings, txid, PERMANENT)
    registry.request_stop(registry_settings, KIND, txid, "normal")

    registry.exit_abnormally(registry_settings, running.id, running.epoch, "done", None, normal=True)

    assert entry(registry_settings, txid) is None


@pytest.mark.parametrize("how", ["lease expired", "row deleted"])
def test_a_normal_stop_wins_over_a_lost_worker(registry_settings: Settings, txid: str, how: str) -> None:
    _running, worker_id = started_and_claimed(registry_settings, txid)
    registry.request_stop(registry_settings, KIND, txid, "normal")
    if how == "lease expired":
        expire_lease(registry_settings, worker_id)
    else:
        delete_worker_row(registry_settings, worker_id)

    published = sweep(registry_settings)

    assert entry(registry_settings, txid) is None
    assert published == []


def test_a_normal_stop_wins_over_a_later_abnormal_stop(registry_settings: Settings, txid: str) -> None:
    running, _ = started_and_claimed(registry_settings, txid)
    registry.request_stop(registry_settings, KIND, txid, "normal")
    registry.request_stop(registry_settings, KIND, txid, "its_a_crash")

    registry.exit_abnormally(registry_settings, running.id, running.epoch, "stopped", "its_a_crash")

    assert entry(registry_settings, txid) is None


def test_an_abnormal_stop_recorded_before_a_handoff_ends_a_temporary_tracker(
    registry_settings: Settings, txid: str
) -> None:
    temporary = dataclasses.replace(POLICY, restart=Restart.TEMPORARY)
    running, worker_id = started_and_claimed(registry_settings, txid, temporary)
    registry.request_stop(registry_settings, KIND, txid, "its_a_crash")

    republished = registry.hand_off(registry_settings, [(running.id, running.epoch)], "shutting down")

    assert republished == []
    after = entry(registry_settings, txid)
    assert after is not None and after.status == "dead", "the handoff brought a stopped tracker back"


def test_an_abnormal_stop_recorded_before_a_handoff_counts_as_a_restart(
    registry_settings: Settings, txid: str
) -> None:
    running, _ = started_and_claimed(registry_settings, txid)
    registry.request_stop(registry_settings, KIND, txid, "its_a_crash")

    republished = registry.hand_off(registry_settings, [(running.id, running.epoch)], "shutting down")

    after = entry(registry_settings, txid)
    assert after is not None and (after.status, after.restarts) == ("pending", 1)
    assert after.stop_reason is None and after.epoch > running.epoch
    assert [(r.transaction_id, r.epoch) for r in republished] == [(txid, after.epoch)]


# -- (e) a worker loss restarts at once and leaves the backoff alone ----------------------------------


def test_worker_losses_in_a_row_each_restart_at_once_without_raising_the_backoff(
    registry_settings: Settings, txid: str
) -> None:
    row, _ = registry.start(registry_settings, KIND, txid, {}, POLICY)
    epochs = [row.epoch]
    for loss in range(3):
        worker_id = new_worker(registry_settings)
        assert claim(registry_settings, txid, epochs[-1], worker_id) is not None, f"claim after loss {loss}"
        expire_lease(registry_settings, worker_id)

        published = sweep(registry_settings)

        after = entry(registry_settings, txid)
        assert after is not None
        assert after.status == "pending", f"loss {loss + 1} left it {after.status} (backoff)"
        assert after.backoff_step == 0 and after.epoch > epochs[-1]
        assert [(r.transaction_id, r.epoch) for r in published] == [(txid, after.epoch)]
        epochs.append(after.epoch)
    final = entry(registry_settings, txid)
    assert final is not None and final.restarts == 3  # each loss still counts toward intensity


def test_a_worker_loss_after_a_crash_restarts_at_once(registry_settings: Settings, txid: str) -> None:
    running, _ = started_and_claimed(registry_settings, txid)
    registry.exit_abnormally(registry_settings, running.id, running.epoch, "crashed", "boom")
    crashed = entry(registry_settings, txid)
    assert crashed is not None and crashed.status == "pending"  # the first restart is immediate
    worker_id = new_worker(registry_settings)
    assert claim(registry_settings, txid, crashed.epoch, worker_id) is not None
    expire_lease(registry_settings, worker_id)

    sweep(registry_settings)

    after = entry(registry_settings, txid)
    assert after is not None and after.status == "pending"
    assert after.backoff_step == crashed.backoff_step


# -- each message is handled once, in order -------------------------------------------------------


def test_a_message_is_handled_once_and_in_order(registry_settings: Settings, txid: str) -> None:
    running, _ = started_and_claimed(registry_settings, txid)
    first = registry.enqueue(registry_settings, KIND, txid, registry.MessageType.CAST, {"n": 1})
    second = registry.enqueue(registry_settings, KIND, txid, registry.MessageType.CAST, {"n": 2})
    incarnation = (running.id, running.epoch)

    with pytest.raises(Fenced):  # out of order: the first one is still queued
        registry.handled(registry_settings, *incarnation, second, {"seen": [2]})
    registry.handled(registry_settings, *incarnation, first, {"seen": [1]})
    # Again, as a retry whose first answer was lost: accepted, and nothing is written twice.
    registry.handled(registry_settings, *incarnation, first, {"seen": [1, 1]})
    again = entry(registry_settings, txid)
    assert again is not None and again.state == {"seen": [1]}
    registry.handled(registry_settings, *incarnation, second, {"seen": [1, 2]})

    after = entry(registry_settings, txid)
    assert after is not None and after.state == {"seen": [1, 2]}
    assert registry.mailbox(registry_settings, KIND, txid, after=0) == []


# -- (f) the exit history is pruned by the sweep ---------------------------------------------------


def _add_events(settings: Settings, txid: str, count: int, age: float) -> None:
    rows = [{"kind": KIND, "transaction_id": txid, "epoch": 1, "event": "crashed"} for _ in range(count)]
    with registry.engine(settings).begin() as conn:
        conn.execute(events.insert().values(at=registry.db_now(-age)), rows)


def _count_events(settings: Settings, txid: str) -> int:
    with registry.engine(settings).connect() as conn:
        stmt = sa.select(sa.func.count()).select_from(events).where(events.c.transaction_id == txid)
        return int(conn.execute(stmt).scalar_one())


def test_events_older_than_the_retention_are_pruned_by_the_sweep(
    registry_settings: Settings, txid: str
) -> None:
    settings = dataclasses.replace(registry_settings, events_retention_seconds=3600)
    _add_events(settings, txid, 5, age=7200)
    _add_events(settings, txid, 3, age=60)

    sweep(settings)

    assert _count_events(settings, txid) == 3
    assert [e.event for e in registry.history(settings, KIND, txid)] == ["crashed"] * 3


def test_old_events_are_pruned_in_batches_until_none_is_left(registry_settings: Settings, txid: str) -> None:
    settings = dataclasses.replace(registry_settings, events_retention_seconds=3600)
    _add_events(settings, txid, 2500, age=7200)
    _add_events(settings, txid, 2, age=60)

    left = [_count_events(settings, txid)]
    while left[-1] > 2 and len(left) <= 10:
        sweep(settings)
        left.append(_count_events(settings, txid))
        assert left[-1] < left[-2], f"a sweep pruned nothing: {left}"

    assert left[-1] == 2, f"old events left after {len(left) - 1} sweeps: {left}"


def test_the_events_retention_is_read_from_the_environment() -> None:
    settings = Settings.from_env({"TRACKING_EVENTS_RETENTION_SECONDS": "86400"})
    assert settings.events_retention_seconds == 86400
