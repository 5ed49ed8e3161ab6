"""``publish_many_with``: many trackers' messages sent on one producer, each as ``publish_with``
sends it (the same task, ID, arguments and queue), through an in-memory broker."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from celery import Celery

from tracking import signals
from tracking.celery import publish_with
from tracking.celery.publishing import publish_many_with
from tracking.celery.tasks import task_name
from tracking.client import Publication, Publishable, TrackerRef
from tracking.client.refs import announce_many
from tracking.models import Entry, Status
from tracking.settings import Settings

QUEUE = "publishing-test"


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("publishing-test", broker="memory://", set_as_current=False)
    yield app
    app.close()


def received(app: Celery, count: int) -> list[tuple[dict[str, Any], Any]]:
    """The headers and body of the next ``count`` messages of the queue."""
    out: list[tuple[dict[str, Any], Any]] = []
    with app.connection_for_read() as conn, conn.SimpleQueue(QUEUE) as queue:
        for _ in range(count):
            message = queue.get(timeout=5)
            out.append((message.headers, message.decode()))
            message.ack()
        assert queue.qsize() == 0
    return out


def test_many_messages_go_out_in_order_each_as_a_single_publish_sends_it(app: Celery) -> None:
    settings = Settings(database_url="sqlite:///unused.sqlite3", queue=QUEUE)
    rows = [Publication("pubkind", f"t{n}", n + 1, f"task-{n}") for n in range(3)]

    publish_many_with(app, settings)(rows)
    many = received(app, 3)
    publish_with(app, settings)(rows[0])
    (single,) = received(app, 1)

    for (headers, body), row in zip(many, rows, strict=True):
        assert headers["task"] == task_name("pubkind") and headers["id"] == row.task_id
        assert body[:2] == [[row.transaction_id], {"epoch": row.epoch}]
    assert (many[0][0]["task"], many[0][0]["id"], many[0][1]) == (
        single[0]["task"],
        single[0]["id"],
        single[1],
    )


def test_one_producer_is_acquired_for_the_whole_batch(app: Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(database_url="sqlite:///unused.sqlite3", queue=QUEUE)
    acquired: list[object] = []
    real = app.producer_or_acquire

    @contextlib.contextmanager
    def counted(producer: Any = None) -> Iterator[Any]:
        with real(producer) as got:
            acquired.append(got)
            yield got

    monkeypatch.setattr(app, "producer_or_acquire", counted)

    publish_many_with(app, settings)([Publication("pubkind", f"t{n}", 1, f"task-{n}") for n in range(5)])
    publish_many_with(app, settings)([])

    assert len(acquired) == 6  # the batch's, then each send_task given it back
    assert all(p is acquired[0] for p in acquired)
    assert len(received(app, 5)) == 5


def entry(txid: str) -> Entry:
    now = datetime.now(UTC)
    return Entry(
        id=1, kind="pubkind", transaction_id=txid, status=Status.PENDING, epoch=3, task_id=f"task-{txid}",
        worker=None, worker_id=None, args={}, state=None, policy={}, restarts=0, restart_times=[],
        backoff_step=0, stop_reason=None, last_error=None, started_at=now, claimed_at=None,
        checkpoint_at=None, due_at=None, tick_at=None, last_message_id=0, handled_message_id=0,
        republished=0,
    )  # fmt: skip


def test_a_batch_the_broker_refuses_is_logged_and_each_entry_still_announced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = [entry("t1"), entry("t2")]
    refs = [TrackerRef.from_row(row) for row in rows]
    started: list[str] = []
    singles: list[str] = []

    def refuse(_rows: Sequence[Publishable]) -> None:
        raise ConnectionError("broker down")

    def on_started(sender: str, transaction_id: str, **_: Any) -> None:
        started.append(transaction_id)

    signals.tracker_started.connect(on_started)
    try:
        announce_many(lambda row: singles.append(row.transaction_id), refuse, rows, refs)
    finally:
        signals.tracker_started.disconnect(on_started)

    assert started == ["t1", "t2"] and singles == []
    assert "2 pubkind trackers not all published yet: broker down" in caplog.text


def test_without_publish_many_or_for_one_entry_each_is_published_on_its_own() -> None:
    singles: list[str] = []
    batches: list[int] = []
    rows = [entry("t1"), entry("t2")]
    refs = [TrackerRef.from_row(row) for row in rows]

    announce_many(lambda row: singles.append(row.transaction_id), None, rows, refs)
    announce_many(
        lambda row: singles.append(row.transaction_id), lambda rs: batches.append(len(rs)), rows[:1], refs[:1]
    )
    announce_many(
        lambda row: singles.append(row.transaction_id), lambda rs: batches.append(len(rs)), rows, refs
    )

    assert singles == ["t1", "t2", "t1"] and batches == [2]
