"""``start_many`` and ``lookup_many`` with real workers, on SQLite and PostgreSQL: a batch is
recorded in one transaction (all or none), idempotent per ID, each new entry published once and
run; ``lookup_many`` finds the live ones by ID."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import orm

import tracking
import tracking.celery
from tests.harness import Cluster, running, wait_for
from tests.integration.trackers import Counter, TemporaryCrasher
from tracking import client, registry
from tracking.celery.publishing import publish_many_with
from tracking.client import Publishable
from tracking.policy import RestartPolicy

pytestmark = [pytest.mark.stacks("sqlite-embedded", "postgres-redis"), pytest.mark.cluster(workers=("w1",))]


@pytest.fixture(params=["one by one", "on one producer"])
def sent(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """The transaction IDs the test's client publishes (it publishes them as before), one publish
    each or, for a batch, on one producer (``publish_many``)."""
    before = client.current()
    seen: list[str] = []

    def publish(row: Publishable) -> None:
        seen.append(row.transaction_id)
        before.publish(row)

    many = None
    if request.param == "on one producer":
        on_one = publish_many_with(tracking.celery.current_app(), before.settings)

        def many(rows: Sequence[Publishable]) -> None:
            seen.extend(row.transaction_id for row in rows)
            on_one(rows)

    client.use(dataclasses.replace(before, publish=publish, publish_many=many))
    yield seen
    client.use(before)


def test_start_many_records_the_batch_publishes_each_new_entry_once_and_all_run(
    cluster: Cluster, sent: list[str], txid: str
) -> None:
    ids = [f"{txid}_{n}" for n in range(20)]
    first = Counter.start(ids[0])
    sent.clear()

    refs = Counter.start_many([*ids, ids[1]])  # one ID twice: started once

    assert list(refs) == ids
    assert refs[ids[0]].already_started and refs[ids[0]].task_id == first.task_id
    assert not any(refs[t].already_started for t in ids[1:])
    assert sorted(sent) == sorted(ids[1:])
    wait_for(
        lambda: (
            all(ref.status == "running" for ref in Counter.lookup_many(ids).values())
            and len(Counter.lookup_many(ids)) == len(ids)
        ),
        timeout=60,
        what="every tracker of the batch to run",
    )

    again = Counter.start_many(ids)
    assert all(ref.already_started for ref in again.values())
    assert sorted(sent) == sorted(ids[1:])  # nothing published twice


def test_a_batch_with_one_bad_id_records_nothing(cluster: Cluster, sent: list[str], txid: str) -> None:
    ids = [f"{txid}_ok", "", f"{txid}_ok2"]

    with pytest.raises(tracking.InvalidTransactionId):
        Counter.start_many(ids)

    assert Counter.lookup_many([ids[0], ids[2]]) == {}
    assert sent == []


def test_lookup_many_finds_the_live_trackers_by_id_and_leaves_out_unknown_and_dead_ones(
    cluster: Cluster, txid: str
) -> None:
    live, dead, unknown = f"{txid}_live", f"{txid}_dead", f"{txid}_unknown"
    Counter.start(live)
    TemporaryCrasher.start(dead)
    wait_for(lambda: running(Counter, live), timeout=30, what="the live one to run")
    settings = cluster.stack.settings()

    def is_dead() -> bool:
        entry = registry.get(settings, TemporaryCrasher.kind, dead)
        return entry is not None and entry.status == "dead"

    wait_for(is_dead, timeout=30, what="the temporary crasher to be dead")

    assert set(Counter.lookup_many([live, unknown])) == {live}
    assert TemporaryCrasher.lookup_many([dead]) == {}
    assert Counter.lookup_many([live])[live].status == "running"


def test_a_batch_the_database_refuses_midway_records_none_of_it(pg_database: str, txid: str) -> None:
    # Below the client's checks: PostgreSQL refuses an ID longer than its column, after the
    # batch's earlier IDs were inserted in the same transaction.
    settings = tracking.Settings(database_url=pg_database)
    registry.migrate(settings)
    try:
        with pytest.raises(tracking.RegistryRefused):
            registry.start_many(settings, "bulk", [f"{txid}_a", "z" * 300], {}, RestartPolicy())
        assert registry.get_many(settings, "bulk", [f"{txid}_a"]) == []
    finally:
        registry.dispose(settings)


def test_start_many_inside_a_session_takes_effect_only_if_it_commits(
    cluster: Cluster, sent: list[str], txid: str, tmp_path: Path
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.sqlite3'}")  # the registry is elsewhere
    ids = [f"{txid}_{n}" for n in range(3)]
    try:
        with orm.Session(engine) as session:
            session.begin()
            with tracking.in_transaction(session):
                waiting = Counter.start_many(ids)
            session.rollback()
        assert all(ref.on_commit for ref in waiting.values())
        assert Counter.lookup_many(ids) == {} and sent == []

        with orm.Session(engine) as session, session.begin(), tracking.in_transaction(session):
            Counter.start_many(ids)
        assert set(Counter.lookup_many(ids)) == set(ids) and sorted(sent) == sorted(ids)
    finally:
        engine.dispose()
