"""An operator's registry operations, on SQLite and PostgreSQL: "restart now" of a failed entry
(``registry.hurry``), the workers with their lease age (``registry.worker_list``), and a start on
the application's own connection (``registry.start_on``), which commits or rolls back with it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.registry.test_transitions import KIND, POLICY, expire_lease, new_worker, started_and_claimed
from tracking import registry
from tracking.exceptions import NotFound
from tracking.models import WorkerStatus, events
from tracking.settings import Settings


def failed(settings: Settings, txid: str) -> registry.Entry:
    """An entry that crashed twice: the first restart is immediate, the second waits out a long
    backoff (POLICY: 300 s)."""
    running, worker = started_and_claimed(settings, txid)
    for _ in range(2):
        registry.exit_abnormally(settings, running.id, running.epoch, "crashed", "RuntimeError: boom")
        row = registry.get(settings, KIND, txid)
        assert row is not None
        if row.status == "failed":
            return row
        claimed = registry.claim(
            settings, KIND, txid, row.epoch, worker="test@here", worker_id=worker, policy=POLICY
        )
        assert claimed is not None
        running = claimed
    raise AssertionError("the second crash did not leave the entry failed")


def test_restart_now_makes_a_failed_entry_pending_at_once(registry_settings: Settings, txid: str) -> None:
    row = failed(registry_settings, txid)

    woken = registry.hurry(registry_settings, KIND, txid)

    assert woken is not None and woken.status == "pending"
    assert (woken.id, woken.epoch) == (row.id, row.epoch)
    assert registry.take_due(registry_settings) == []  # pending within its start grace, not due
    with registry.engine(registry_settings).connect() as conn:
        last = conn.execute(
            sa.select(events.c.event, events.c.detail)
            .where(events.c.transaction_id == txid)
            .order_by(events.c.id.desc())
            .limit(1)
        ).one()
    assert tuple(last) == ("restarting", "restart now (an operator)")


def test_restart_now_changes_nothing_unless_the_entry_is_failed(
    registry_settings: Settings, txid: str
) -> None:
    running, _worker = started_and_claimed(registry_settings, txid)

    assert registry.hurry(registry_settings, KIND, txid) is None

    now = registry.get(registry_settings, KIND, txid)
    assert now is not None
    assert (now.status, now.epoch, now.stop_reason) == ("running", running.epoch, None)


def test_restart_now_of_an_unknown_id_raises_not_found(registry_settings: Settings, txid: str) -> None:
    with pytest.raises(NotFound):
        registry.hurry(registry_settings, KIND, txid)


def test_the_worker_list_gives_each_process_its_lease_age_and_running_entries(
    registry_settings: Settings, txid: str
) -> None:
    _running, busy = started_and_claimed(registry_settings, txid)
    idle = new_worker(registry_settings)
    expire_lease(registry_settings, idle)

    listed = {w.id: w for w in registry.worker_list(registry_settings)}

    assert listed[busy].running == 1 and listed[idle].running == 0
    assert listed[busy].status is WorkerStatus.ALIVE
    assert 0 <= listed[busy].lease_age < 60
    assert listed[idle].lease_age >= 3600  # renewed an hour ago, by the database clock
    assert listed[busy].hostname == "test@here"


def test_a_start_on_the_application_s_connection_rolls_back_with_it(
    registry_settings: Settings, txid: str
) -> None:
    app_engine = sa.create_engine(registry_settings.database_url)
    try:
        with app_engine.connect() as conn:
            transaction = conn.begin()
            row, created = registry.start_on(registry_settings, conn, KIND, txid, {}, POLICY)
            assert created and row.status == "pending"
            transaction.rollback()
        assert registry.get(registry_settings, KIND, txid) is None

        with app_engine.connect() as conn, conn.begin():
            registry.start_on(registry_settings, conn, KIND, txid, {}, POLICY)
        assert registry.get(registry_settings, KIND, txid) is not None
    finally:
        app_engine.dispose()
