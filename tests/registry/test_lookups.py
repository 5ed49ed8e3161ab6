"""``registry.get`` off the general query path reads the same entry as that path does, and
``registry.find`` (``lookup``) what ``get`` reads of it but its state, arguments and policy, on
SQLite and PostgreSQL; both survive a pooled connection the server has closed."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import uuid

import psycopg
import pytest

from tracking import registry
from tracking.exceptions import RegistryNotMigrated
from tracking.models import Entry, Found, Status
from tracking.policy import RestartPolicy
from tracking.settings import Settings

KIND = "lookups"
POLICY = RestartPolicy(max_restarts=7)


def test_get_reads_an_entry_exactly_as_the_general_query_path_does(
    registry_settings: Settings, txid: str
) -> None:
    args = {"nested": {"list": [1, 2.5, None, "é"]}, "flag": True}
    row, _ = registry.start(registry_settings, KIND, txid, args, POLICY)
    worker_id = f"test/{uuid.uuid4().hex[:12]}"
    registry.register_worker(registry_settings, worker_id, "test@here", 1)
    running = registry.claim(
        registry_settings, KIND, txid, row.epoch, worker="test@here", worker_id=worker_id, policy=POLICY
    )
    assert running is not None
    registry.checkpoint(registry_settings, running.id, running.epoch, {"seen": [1, {"a": None}]})

    found = registry.get(registry_settings, KIND, txid)
    (listed,) = registry.select(registry_settings, kind=KIND)

    assert found == listed
    assert (
        found.args == args and found.state == {"seen": [1, {"a": None}]} and found.policy == POLICY.to_json()
    )
    assert found.heartbeat_at is not None and found.heartbeat_at.tzinfo is not None
    assert found.started_at.tzinfo is not None and found.worker == "test@here"
    assert registry.get(registry_settings, KIND, f"{txid}_unknown") is None


def test_get_of_a_pending_entry_has_no_lease(registry_settings: Settings, txid: str) -> None:
    row, _ = registry.start(registry_settings, KIND, txid, {}, POLICY)

    found = registry.get(registry_settings, KIND, txid)

    assert found == row and found is not None and found.heartbeat_at is None and found.state is None


def test_get_on_postgresql_replaces_a_pooled_connection_the_server_closed(
    pg_database: str, txid: str
) -> None:
    settings = Settings(database_url=pg_database)
    registry.migrate(settings)
    try:
        registry.start(settings, KIND, txid, {}, POLICY)
        assert registry.get(settings, KIND, txid) is not None  # a connection now waits in the pool
        with psycopg.connect(pg_database.replace("+psycopg", ""), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )

        found = registry.get(settings, KIND, txid)

        assert found is not None and found.transaction_id == txid
    finally:
        registry.dispose(settings)


def test_get_on_a_registry_never_migrated_says_so(database_url: str) -> None:
    settings = Settings(database_url=database_url, auto_migrate=False)
    try:
        with pytest.raises(RegistryNotMigrated):
            registry.get(settings, KIND, "t1")
    finally:
        registry.dispose(settings)


def test_lookups_spare_connections_are_closed_when_the_registry_is_disposed(
    pg_database: str, txid: str
) -> None:
    settings = Settings(database_url=pg_database)
    registry.migrate(settings)
    name = pg_database.rsplit("/", 1)[-1]
    with psycopg.connect(pg_database.replace("+psycopg", ""), autocommit=True) as admin:

        def ours() -> int:
            query = (
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = %s AND application_name LIKE 'tracking-%%'"
            )
            found = admin.execute(query, (name,)).fetchone()
            assert found is not None
            return int(found[0])

        try:
            registry.start(settings, KIND, txid, {}, POLICY)
            assert registry.get(settings, KIND, txid) is not None
            assert ours() >= 1
        finally:
            registry.dispose(settings)
        assert ours() == 0


def _lookup_in_child(database_url: str, txid: str) -> None:
    found = registry.get(Settings(database_url=database_url), KIND, txid)
    os._exit(0 if found is not None and found.transaction_id == txid else 3)


def test_a_forked_child_looks_up_on_connections_of_its_own(database_url: str, txid: str) -> None:
    settings = Settings(database_url=database_url)
    registry.migrate(settings)
    try:
        registry.start(settings, KIND, txid, {}, POLICY)
        assert registry.get(settings, KIND, txid) is not None  # the parent keeps a spare connection
        child = multiprocessing.get_context("fork").Process(
            target=_lookup_in_child, args=(database_url, txid)
        )
        child.start()
        child.join(60)

        assert child.exitcode == 0
        assert registry.get(settings, KIND, txid) is not None  # the parent's spare still works
    finally:
        registry.dispose(settings)


def test_get_many_reads_the_entries_of_more_ids_than_one_query_takes_as_get_reads_each(
    registry_settings: Settings, txid: str
) -> None:
    registered = [f"{txid}_{n:04}" for n in range(0, 2400, 2)]
    registry.start_many(registry_settings, KIND, registered, {"n": 1}, POLICY)
    asked = [f"{txid}_{n:04}" for n in range(2400)] + registered[:3]  # the odd ones are unknown

    found = registry.get_many(registry_settings, KIND, asked)

    assert sorted(e.transaction_id for e in found) == registered
    for e in found[:: len(found) // 7]:
        assert registry.get(registry_settings, KIND, e.transaction_id) == e
    assert registry.get_many(registry_settings, "another kind", registered) == []


def shown(entry: Entry) -> Found:
    """What lookup shows of an entry: its Found, field by field."""
    return Found(**{f.name: getattr(entry, f.name) for f in dataclasses.fields(Found)})


def test_find_reads_what_get_reads_but_the_state_arguments_and_policy(
    registry_settings: Settings, txid: str
) -> None:
    row, _ = registry.start(registry_settings, KIND, txid, {"big": "x" * 1000}, POLICY)
    assert registry.find(registry_settings, KIND, txid) == shown(row)  # pending: no lease
    worker_id = f"test/{uuid.uuid4().hex[:12]}"
    registry.register_worker(registry_settings, worker_id, "test@here", 1)
    running = registry.claim(
        registry_settings, KIND, txid, row.epoch, worker="test@here", worker_id=worker_id, policy=POLICY
    )
    assert running is not None
    registry.checkpoint(registry_settings, running.id, running.epoch, {"seen": 1})

    found = registry.find(registry_settings, KIND, txid)
    entry = registry.get(registry_settings, KIND, txid)

    assert entry is not None and found == shown(entry)
    assert found.status is Status.RUNNING and found.worker == "test@here"
    assert found.heartbeat_at is not None and found.heartbeat_at.tzinfo is not None
    assert found.started_at.tzinfo is not None
    assert registry.find(registry_settings, KIND, f"{txid}_unknown") is None


def test_find_many_reads_what_get_many_reads_but_the_state_arguments_and_policy(
    registry_settings: Settings, txid: str
) -> None:
    registered = [f"{txid}_{n:04}" for n in range(0, 2400, 2)]
    registry.start_many(registry_settings, KIND, registered, {"n": 1}, POLICY)
    asked = [f"{txid}_{n:04}" for n in range(2400)] + registered[:3]  # the odd ones are unknown

    found = registry.find_many(registry_settings, KIND, asked)

    assert found == [shown(e) for e in registry.get_many(registry_settings, KIND, asked)]
    assert sorted(f.transaction_id for f in found) == registered
    assert registry.find_many(registry_settings, "another kind", registered) == []
