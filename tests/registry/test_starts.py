"""``start`` and ``start_many`` on their fast path (a batch inserted in one statement, its starts
recorded in one more) and off it (IDs registered already, dead ones, an insert that waited for an
earlier life's exit), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from tests.harness import wait_for
from tracking import registry
from tracking.models import Entry, events, trackers
from tracking.policy import Restart, RestartPolicy
from tracking.settings import Settings

KIND = "starts"
POLICY = RestartPolicy(max_restarts=1000, max_seconds=60, backoff=300, backoff_max=600)
TEMPORARY = RestartPolicy(restart=Restart.TEMPORARY)


def started_events(settings: Settings, txid: str) -> list[tuple[int, str | None]]:
    return [(e.epoch, e.detail) for e in registry.history(settings, KIND, txid) if e.event == "started"]


def finished(settings: Settings, txid: str) -> Entry:
    """Start ``txid``, claim it and finish it: the ID has a past life and no row."""
    row, _ = registry.start(settings, KIND, txid, {}, POLICY)
    worker_id = f"test/{txid[-12:]}"
    registry.register_worker(settings, worker_id, "test@here", 1)
    running = registry.claim(
        settings, KIND, txid, row.epoch, worker="test@here", worker_id=worker_id, policy=POLICY
    )
    assert running is not None
    registry.exit_normally(settings, running.id, running.epoch, "done", None)
    assert registry.get(settings, KIND, txid) is None
    return running


def test_start_of_a_new_id_records_the_entry_and_one_started_event_under_its_epoch(
    registry_settings: Settings, txid: str
) -> None:
    row, created = registry.start(registry_settings, KIND, txid, {"a": 1}, POLICY)

    assert created and (row.status, row.args, row.restarts) == ("pending", {"a": 1}, 0)
    assert row.policy == POLICY.to_json() and row.restart_times == [] and row.due_at is not None
    assert registry.get(registry_settings, KIND, txid) == row
    assert started_events(registry_settings, txid) == [(row.epoch, None)]


def test_start_many_of_new_ids_records_each_with_its_started_event(
    registry_settings: Settings, txid: str
) -> None:
    ids = [f"{txid}_{n:02}" for n in range(25)]

    found = registry.start_many(registry_settings, KIND, [*reversed(ids), ids[3]], {"b": 2}, POLICY)

    assert list(found) == ids  # sorted, each once
    assert all(created for _, created in found.values())
    assert len({row.task_id for row, _ in found.values()}) == len(ids)
    for t, (row, _) in found.items():
        assert (row.transaction_id, row.status, row.args) == (t, "pending", {"b": 2})
        assert registry.get(registry_settings, KIND, t) == row
        assert started_events(registry_settings, t) == [(row.epoch, None)]


def test_start_many_mixing_new_live_and_dead_ids_starts_the_new_and_dead_ones_only(
    registry_settings: Settings, txid: str
) -> None:
    live, dead, new = f"{txid}_a_live", f"{txid}_b_dead", f"{txid}_c_new"
    before, _ = registry.start(registry_settings, KIND, live, {}, POLICY)
    registry.start(registry_settings, KIND, dead, {}, TEMPORARY)
    with registry.engine(registry_settings).begin() as conn:
        conn.execute(trackers.update().where(trackers.c.transaction_id == dead).values(status="dead"))
    dead_row = registry.get(registry_settings, KIND, dead)
    assert dead_row is not None

    found = registry.start_many(registry_settings, KIND, [new, dead, live], {"c": 3}, POLICY)

    assert found[live] == (before, False)
    afresh, created = found[dead]
    assert (
        created and afresh.status == "pending" and afresh.epoch > dead_row.epoch and afresh.args == {"c": 3}
    )
    assert found[new][1] and found[new][0].status == "pending"
    assert started_events(registry_settings, dead)[-1] == (afresh.epoch, "started afresh after dead")
    assert started_events(registry_settings, new) == [(found[new][0].epoch, None)]
    assert started_events(registry_settings, live) == [(before.epoch, None)]


@pytest.mark.parametrize("many", [False, True], ids=["start", "start_many"])
def test_a_new_life_gets_an_epoch_above_the_previous_one(
    registry_settings: Settings, txid: str, many: bool
) -> None:
    previous = finished(registry_settings, txid)

    if many:
        row, created = registry.start_many(registry_settings, KIND, [txid, f"{txid}_other"], {}, POLICY)[txid]
    else:
        row, created = registry.start(registry_settings, KIND, txid, {}, POLICY)

    assert created and row.epoch > previous.epoch
    assert registry.get(registry_settings, KIND, txid) == row
    assert started_events(registry_settings, txid)[-1] == (row.epoch, None)


def test_start_many_in_the_callers_transaction_with_a_registered_id_leaves_it_usable(
    registry_settings: Settings, txid: str
) -> None:
    # On PostgreSQL the batch insert is undone to a savepoint when an ID is registered already:
    # the caller's transaction goes on, and its own writes stay.
    old, new = f"{txid}_old", f"{txid}_new"
    registry.start(registry_settings, KIND, old, {}, POLICY)
    with registry.engine(registry_settings).begin() as conn:
        registry.start_on(registry_settings, conn, KIND, f"{txid}_mine", {}, POLICY)
        found = registry.start_many(registry_settings, KIND, [new, old], {}, POLICY, conn)
        assert not found[old][1] and found[new][1]

    assert {
        e.transaction_id for e in registry.get_many(registry_settings, KIND, [old, new, f"{txid}_mine"])
    } == {
        old,
        new,
        f"{txid}_mine",
    }
    assert len(started_events(registry_settings, new)) == 1


def test_start_many_of_no_ids_does_nothing(registry_settings: Settings) -> None:
    assert registry.start_many(registry_settings, KIND, [], {}, POLICY) == {}


# -- PostgreSQL: an insert that waited for an earlier life's exit ------------------------------------


def blocked_on_a_lock(engine: sa.Engine) -> Callable[[], bool]:
    def blocked() -> bool:
        with engine.connect() as conn:
            found = conn.execute(
                sa.select(sa.func.count())
                .select_from(sa.table("pg_stat_activity", sa.column("wait_event_type"), sa.column("datname")))
                .where(
                    sa.column("wait_event_type") == "Lock", sa.column("datname") == sa.func.current_database()
                )
            ).scalar_one()
        return bool(found)

    return blocked


@pytest.mark.parametrize("many", [False, True], ids=["start", "start_many"])
def test_on_postgresql_a_start_that_waited_for_an_exit_gets_an_epoch_above_it(
    pg_database: str, txid: str, many: bool
) -> None:
    settings = Settings(database_url=pg_database)
    registry.migrate(settings)
    other = sa.create_engine(pg_database, poolclass=sa.NullPool)
    try:
        registry.start(settings, KIND, txid, {}, POLICY)
        results: list[tuple[Entry, bool]] = []

        def start() -> None:
            if many:
                results.append(registry.start_many(settings, KIND, [txid, f"{txid}_2"], {}, POLICY)[txid])
            else:
                results.append(registry.start(settings, KIND, txid, {}, POLICY))

        with other.begin() as conn:
            # An exit in flight: the row deleted and an event of a high epoch written, not committed.
            conn.execute(trackers.delete().where(trackers.c.transaction_id == txid))
            conn.execute(
                events.insert().values(
                    kind=KIND, transaction_id=txid, epoch=41, at=registry.db_now(), event="stopped"
                )
            )
            thread = threading.Thread(target=start)
            thread.start()
            wait_for(blocked_on_a_lock(other), interval=0.01, what="the start to wait for the exit")
        thread.join(30)

        assert results, "the start did not return"
        row, created = results[0]
        assert created and row.epoch == 42
        stored = registry.get(settings, KIND, txid)
        assert stored is not None and stored.epoch == 42
        assert started_events(settings, txid)[-1] == (42, None)
    finally:
        other.dispose()
        registry.dispose(settings)
