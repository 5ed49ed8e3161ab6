"""``start`` on PostgreSQL in one statement (the entry and its ``started`` event), and the
correction it takes when its snapshot may have missed a concurrent life (``registry.starts`` gives
the argument): each race is built with real connections holding uncommitted writes, and each test
fails if the check that sends the start to its correction is removed."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from tests.harness import wait_for
from tests.registry.test_starts import KIND, POLICY, blocked_on_a_lock, finished, started_events
from tracking import registry
from tracking.exceptions import RegistryUnavailable
from tracking.models import Entry, events, token_floor, trackers
from tracking.settings import Settings


@pytest.fixture
def settings(pg_database: str) -> Iterator[Settings]:
    settings = Settings(database_url=pg_database, start_grace_seconds=600)
    registry.migrate(settings)
    try:
        yield settings
    finally:
        registry.dispose(settings)


@contextlib.contextmanager
def statements(settings: Settings) -> Iterator[list[str]]:
    """The statements this process sends to the registry meanwhile through SQLAlchemy: all but
    BEGIN, COMMIT and the start's own statement, which psycopg runs directly (``starts.run_start``)."""
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        sent.append(statement)

    eng = registry.engine(settings)
    sa.event.listen(eng, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(eng, "before_cursor_execute", record)


def start_behind(
    settings: Settings, other: sa.Connection, txid: str, many: bool, release: Callable[[], None]
) -> tuple[Entry, bool]:
    """Start ``txid`` in a thread while ``other`` holds its uncommitted writes; once the start waits
    on them, ``release()`` (which commits them). Returns what the start returned."""
    results: list[tuple[Entry, bool]] = []

    def start() -> None:
        if many:
            results.append(registry.start_many(settings, KIND, [txid, f"{txid}_2"], {}, POLICY)[txid])
        else:
            results.append(registry.start(settings, KIND, txid, {}, POLICY))

    thread = threading.Thread(target=start)
    thread.start()
    wait_for(blocked_on_a_lock(other.engine), interval=0.01, what="the start to wait on the writes")
    release()
    thread.join(30)
    assert results, "the start did not return"
    return results[0]


def a_whole_life(conn: sa.Connection, txid: str, started: int, ended: int) -> None:
    """On ``conn``, uncommitted: a life of ``txid`` started under epoch ``started`` and gone under
    ``ended`` (its row inserted, then deleted, as a concurrent start and its exit would leave it)."""
    conn.execute(
        trackers.insert().values(
            kind=KIND,
            transaction_id=txid,
            status="pending",
            epoch=started,
            task_id=f"other-{txid}",
            args={},
            policy=POLICY.to_json(),
            restart_times=[],
            started_at=registry.db_now(),
        )
    )
    for epoch, event in ((started, "started"), (ended, "stopped")):
        conn.execute(
            events.insert().values(
                kind=KIND, transaction_id=txid, epoch=epoch, at=registry.db_now(), event=event
            )
        )
    conn.execute(trackers.delete().where(trackers.c.transaction_id == txid))


def test_a_start_of_a_new_id_is_one_statement_and_no_correction(settings: Settings, txid: str) -> None:
    registry.start(settings, KIND, f"{txid}_warm", {}, POLICY)

    with statements(settings) as sent:
        row, created = registry.start(settings, KIND, txid, {}, POLICY)

    assert created and sent == []
    assert started_events(settings, txid) == [(row.epoch, None)]


def test_a_start_on_an_application_connection_that_has_not_begun_commits_with_it(
    settings: Settings, txid: str
) -> None:
    # SQLAlchemy 2's own style: connect, execute (which begins), commit. The start's statement
    # runs on the driver's connection, which SQLAlchemy does not see begin: before the fix the
    # caller's commit() did nothing and the entry was rolled back with the connection (review).
    with registry.engine(settings).connect() as conn:
        row, created = registry.start_on(settings, conn, KIND, txid, {}, POLICY)
        assert created and conn.in_transaction()
        conn.commit()
    assert registry.get(settings, KIND, txid) == row


def test_a_started_entry_is_what_the_registry_reads_back(settings: Settings, txid: str) -> None:
    # PostgreSQL's start returns only what the database decides (id, epoch, times): the rest of
    # the entry is built from the values it was given, and must equal what a read finds.
    args = {"amount": 1.5, "nested": {"list": [1, "é", None, True]}, "big": 2**62, "": "empty key"}

    row, created = registry.start(settings, KIND, txid, args, POLICY)

    assert created and registry.get(settings, KIND, txid) == row


def test_a_start_after_a_finished_life_is_one_statement_and_no_correction(
    settings: Settings, txid: str
) -> None:
    previous = finished(settings, txid)

    with statements(settings) as sent:
        row, created = registry.start(settings, KIND, txid, {}, POLICY)

    assert created and sent == [] and row.epoch > previous.epoch
    assert started_events(settings, txid)[-1] == (row.epoch, None)


@pytest.mark.parametrize("many", [False, True], ids=["start", "start_many"])
def test_a_start_that_waited_for_a_whole_other_life_takes_an_epoch_above_it(
    settings: Settings, txid: str, many: bool
) -> None:
    # A concurrent start of the ID committed after this start's snapshot, under the same epoch
    # (1: a new ID), and its life ended (its exit under epoch 4) before this insert went through:
    # the snapshot holds neither, but the started event collides.
    other = sa.create_engine(settings.database_url, poolclass=sa.NullPool)
    try:
        with other.connect() as conn:
            conn.begin()
            a_whole_life(conn, txid, started=1, ended=4)
            row, created = start_behind(settings, conn, txid, many, conn.commit)
    finally:
        other.dispose()

    assert created and row.epoch == 5
    stored = registry.get(settings, KIND, txid)
    assert stored is not None and stored.epoch == 5
    assert [epoch for epoch, _ in started_events(settings, txid)] == [1, 5]


@pytest.mark.parametrize("many", [False, True], ids=["start", "start_many"])
def test_a_start_while_a_prune_raised_the_token_floor_takes_an_epoch_above_it(
    settings: Settings, txid: str, many: bool
) -> None:
    # A prune raised the floor to 10 after this start's snapshot; a concurrent life that saw it
    # started under 11 and ended under 12 before this insert went through: no row in the
    # snapshot, no collision, only the floor row's new version says so.
    other = sa.create_engine(settings.database_url, poolclass=sa.NullPool)
    try:
        with other.connect() as prune, other.connect() as life:
            prune.begin()
            prune.execute(token_floor.update().where(token_floor.c.id == 1).values(epoch=10))
            life.begin()
            a_whole_life(life, txid, started=11, ended=12)

            def release() -> None:
                prune.commit()
                life.commit()

            row, created = start_behind(settings, life, txid, many, release)
    finally:
        other.dispose()

    assert created and row.epoch == 13
    stored = registry.get(settings, KIND, txid)
    assert stored is not None and stored.epoch == 13
    assert [epoch for epoch, _ in started_events(settings, txid)] == [11, 13]


def test_the_migration_keeps_started_events_of_a_reused_epoch_under_another_name(
    database_url: str, txid: str
) -> None:
    # Revision 0007 adds the unique index on started events; a registry that an older version
    # left with two of one epoch keeps both, all but the first renamed.
    settings = Settings(database_url=database_url)
    registry.migrate(settings, "0006")
    try:
        old = sa.create_engine(database_url, poolclass=sa.NullPool)  # registry.engine migrates SQLite
        with old.begin() as conn:
            for epoch in (1, 1, 2):
                conn.execute(
                    events.insert().values(
                        kind=KIND, transaction_id=txid, epoch=epoch, at=registry.db_now(), event="started"
                    )
                )
        old.dispose()
        registry.migrate(settings)

        kept = [(e.epoch, e.event) for e in registry.history(settings, KIND, txid)]
        assert kept == [(1, "started"), (1, "started (epoch reused)"), (2, "started")]
        row, created = registry.start(settings, KIND, txid, {}, POLICY)
        assert created and row.epoch == 3
    finally:
        registry.dispose(settings)


def test_a_start_on_a_connection_the_server_closed_is_retryable_and_the_next_one_starts(
    settings: Settings, txid: str
) -> None:
    # The start's statement runs on the driver's connection: a dead one is still translated
    # (retryable) and invalidated, so that the pool hands out a live one next.
    registry.start(settings, KIND, f"{txid}_warm", {}, POLICY)
    admin = sa.create_engine(settings.database_url, poolclass=sa.NullPool)
    try:
        with admin.connect() as conn:
            killed = conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        assert killed >= 1
    finally:
        admin.dispose()

    with pytest.raises(RegistryUnavailable):
        registry.start(settings, KIND, txid, {}, POLICY)
    row, created = registry.start(settings, KIND, txid, {}, POLICY)

    assert created and registry.get(settings, KIND, txid) == row
