"""A start inside the application's own SQLAlchemy session, with real workers, on SQLite and
PostgreSQL: the tracker exists (entry and message) only if the session commits.

Two ways (``tracking.client.joined``): the application's database is the registry's (the entry is
written on the session's connection), or another one (the start is made after the commit). "No
message" is observed on the publish itself: the test's client counts what it sends to the broker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import orm

import tracking
from tests.harness import Cluster, observe, running, wait_for
from tests.integration.trackers import Counter
from tracking import client, registry
from tracking.client import Publishable

pytestmark = [pytest.mark.stacks("sqlite-embedded", "postgres-redis"), pytest.mark.cluster(workers=("w1",))]

ORDERS = "test_app_orders"


class Rollback(Exception):
    """Raised inside the session's transaction to roll it back."""


@dataclasses.dataclass
class Sent:
    """The messages the test's client published, by transaction ID."""

    txids: list[str] = dataclasses.field(default_factory=list)


@pytest.fixture
def sent(cluster: Cluster) -> Iterator[Sent]:
    """The current client, publishing as before and noting each message it sends."""
    before = client.current()
    seen = Sent()

    def publish(row: Publishable) -> None:
        seen.txids.append(row.transaction_id)
        before.publish(row)

    client.use(dataclasses.replace(before, publish=publish))
    yield seen
    client.use(before)


def app_engine(url: str) -> sa.Engine:
    """The application's own engine, with a table of orders."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE IF NOT EXISTS {ORDERS} (id VARCHAR(255) PRIMARY KEY)"))
    return engine


@pytest.fixture
def same_database(cluster: Cluster) -> Iterator[sa.Engine]:
    """An application engine on the registry's own database."""
    engine = app_engine(cluster.stack.settings().database_url)
    yield engine
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {ORDERS}"))
    engine.dispose()


@pytest.fixture
def other_database(tmp_path: Path) -> Iterator[sa.Engine]:
    """An application engine on a database of its own (the registry is elsewhere)."""
    engine = app_engine(f"sqlite:///{tmp_path / 'app.sqlite3'}")
    yield engine
    engine.dispose()


def order_and_start(engine: sa.Engine, txid: str, *, commit: bool) -> tracking.TrackerRef:
    """Write an order and start its tracker in one session transaction, then commit or roll back."""
    ref: tracking.TrackerRef | None = None
    try:
        with orm.Session(engine) as session, session.begin():
            session.execute(sa.text(f"INSERT INTO {ORDERS} (id) VALUES (:id)"), {"id": txid})
            with tracking.in_transaction(session):
                ref = Counter.start(txid)
            if not commit:
                raise Rollback
    except Rollback:
        pass
    assert ref is not None
    return ref


def orders(engine: sa.Engine, txid: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.text(f"SELECT count(*) FROM {ORDERS} WHERE id = :id"), {"id": txid}).scalar_one()
        )


def test_a_rolled_back_session_leaves_no_entry_and_no_message(
    cluster: Cluster, same_database: sa.Engine, sent: Sent, txid: str
) -> None:
    ref = order_and_start(same_database, txid, commit=False)

    assert ref.status == "pending" and not ref.on_commit  # written on the session's connection
    assert orders(same_database, txid) == 0
    assert registry.get(cluster.stack.settings(), Counter.kind, txid) is None
    assert sent.txids == []
    assert observe(lambda: Counter.lookup(txid) is not None, seconds=1.0) is None


def test_a_committed_session_runs_the_tracker_and_publishes_once(
    cluster: Cluster, same_database: sa.Engine, sent: Sent, txid: str
) -> None:
    # On SQLite the order's INSERT holds the write lock until the commit: a start on a connection
    # of its own would wait for it and fail ("database is locked"); on the session's it cannot.
    ref = order_and_start(same_database, txid, commit=True)

    assert orders(same_database, txid) == 1 and not ref.already_started
    found = wait_for(lambda: running(Counter, txid), timeout=30, what="the tracker to run")
    assert found.epoch == ref.epoch and found.task_id == ref.task_id
    assert sent.txids == [txid]


def test_with_the_registry_elsewhere_the_start_waits_for_the_commit(
    cluster: Cluster, other_database: sa.Engine, sent: Sent, txid: str
) -> None:
    ref = order_and_start(other_database, txid, commit=True)

    assert ref.on_commit and ref.task_id == "" and ref.epoch == 0
    found = wait_for(lambda: running(Counter, txid), timeout=30, what="the tracker to run")
    assert found.epoch >= 1
    assert sent.txids == [txid]


def test_with_the_registry_elsewhere_a_rollback_starts_nothing(
    cluster: Cluster, other_database: sa.Engine, sent: Sent, txid: str
) -> None:
    order_and_start(other_database, txid, commit=False)

    assert orders(other_database, txid) == 0
    assert observe(lambda: Counter.lookup(txid) is not None, seconds=1.0) is None
    assert sent.txids == []


def test_a_second_start_in_a_committed_transaction_leaves_the_running_tracker_alone(
    cluster: Cluster, other_database: sa.Engine, sent: Sent, txid: str
) -> None:
    first = Counter.start(txid)
    wait_for(lambda: running(Counter, txid), timeout=30, what="the tracker to run")

    again = order_and_start(other_database, txid, commit=True)

    assert again.on_commit  # nothing known before the commit; start is idempotent after it
    found = Counter.lookup(txid)
    assert found is not None and found.task_id == first.task_id
    assert sent.txids == [txid]
