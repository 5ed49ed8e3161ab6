"""``publish_many_with``: many trackers' messages sent on one producer, each as ``publish_with``
sends it (the same task, ID, arguments and queue), or past a few as fan-out messages that a worker
turns into those same messages; through an in-memory broker."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from celery import Celery

from tracking import signals
from tracking.celery import publish_with
from tracking.celery.process import batch_task_name, publish_batch_with, task_name
from tracking.celery.publishing import FAN_OUT_ABOVE, FAN_OUT_TASK, fan_out_rows, publish_many_with
from tracking.celery.tasks import MAX_FAN_OUT, malformed_fan_out
from tracking.client import Publication, Publishable, TrackerRef
from tracking.client.refs import announce_many
from tracking.models import Entry, Status
from tracking.settings import Settings
from tracking.tracker import Tracker
from tracking.worker import Batch

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


class Pubkind(Tracker):
    """A kind this process knows, for the fan-out messages' checks."""

    kind = "pubkind"


def test_more_entries_than_the_threshold_go_out_as_fan_out_messages_of_at_most_max_fan_out(
    app: Celery,
) -> None:
    settings = Settings(database_url="sqlite:///unused.sqlite3", queue=QUEUE)
    rows = [Publication("pubkind", f"t{n}", n + 1, f"task-{n}") for n in range(2 * MAX_FAN_OUT + 1)]

    publish_many_with(app, settings)(rows[: FAN_OUT_ABOVE + 1])
    publish_many_with(app, settings)(rows)

    messages = received(app, 4)
    assert all(headers["task"] == FAN_OUT_TASK for headers, _ in messages)
    assert [len(body[0][0]) for _, body in messages] == [FAN_OUT_ABOVE + 1, MAX_FAN_OUT, MAX_FAN_OUT, 1]
    sent = [row for _, body in messages[1:] for row in body[0][0]]
    assert sent == [[r.kind, r.transaction_id, r.epoch, r.task_id] for r in rows]
    assert FAN_OUT_TASK in app.tasks and not app.tasks[FAN_OUT_TASK].acks_late


def test_a_fan_out_sends_each_entry_the_message_a_single_publish_sends(app: Celery) -> None:
    settings = Settings(database_url="sqlite:///unused.sqlite3", queue=QUEUE)
    rows = [Publication("pubkind", f"t{n}", n + 1, f"task-{n}") for n in range(3)]

    assert fan_out_rows(app, rows, settings, "fan-out-id") == "sent 3"
    fanned = received(app, 3)
    for row in rows:
        publish_with(app, settings)(row)
    singles = received(app, 3)

    assert [(h["task"], h["id"], body) for h, body in fanned] == [
        (h["task"], h["id"], body) for h, body in singles
    ]


def test_a_fan_out_the_broker_refuses_midway_says_how_many_it_did_not_send(
    app: Celery, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(database_url="sqlite:///unused.sqlite3", queue=QUEUE)
    rows = [Publication("pubkind", f"t{n}", 1, f"task-{n}") for n in range(3)]
    real = app.send_task
    calls: list[str] = []

    def fails_third(name: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        if len(calls) == 3:
            raise ConnectionError("broker down")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(app, "send_task", fails_third)

    assert fan_out_rows(app, rows, settings, "fan-out-id") == "sent 2 of 3"
    assert "fan-out fan-out-id: 1 of 3 pubkind trackers not published yet" in caplog.text
    assert len(received(app, 2)) == 2


TASK = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize(
    "rows",
    [
        None,
        {"pubkind": "t1"},
        "pubkind",
        [],
        [["pubkind", "t1", 1, TASK]] * (MAX_FAN_OUT + 1),
        [["pubkind", "t1", 1]],
        [("pubkind", "t1", 1, TASK)],
        [["pubkind", "t1", 1, TASK, "extra"]],
        [["pubkind", "t1", 1, TASK], "t2"],
        [["no-such-kind", "t1", 1, TASK]],
        [[None, "t1", 1, TASK]],
        [["pubkind", "", 1, TASK]],
        [["pubkind", "a\x00b", 1, TASK]],
        [["pubkind", "x" * 300, 1, TASK]],
        [["pubkind", 17, 1, TASK]],
        [["pubkind", "t1", None, TASK]],
        [["pubkind", "t1", 0, TASK]],
        [["pubkind", "t1", True, TASK]],
        [["pubkind", "t1", 1.0, TASK]],
        [["pubkind", "t1", "1", TASK]],
        [["pubkind", "t1", 2**63, TASK]],
        [["pubkind", "t1", 1, None]],
        [["pubkind", "t1", 1, ""]],
        [["pubkind", "t1", 1, "x" * 65]],
        [["pubkind", "t1", 1, "a b"]],
        [["pubkind", "t1", 1, TASK], ["pubkind", "t2", -1, TASK]],
    ],
)
def test_a_malformed_fan_out_message_is_refused_with_a_reason(rows: object) -> None:
    problem = malformed_fan_out(rows)
    assert problem is not None and len(problem) < 400


def test_a_well_formed_fan_out_message_passes() -> None:
    rows = [["pubkind", "t1", 1, TASK], ["pubkind", "émoji 🙂 ; DROP", 2**63 - 1, "task-2"]]
    assert malformed_fan_out(rows) is None


@pytest.mark.parametrize("route", ["tracking.*", "tracking.pubkind"])
def test_a_fan_out_message_follows_the_route_of_its_trackers_task(app: Celery, route: str) -> None:
    # An app installed onto with its own task_routes for the tracker tasks (and no
    # TRACKING_QUEUE): the fan-out must reach the workers of that queue, which know the kinds,
    # not the default queue, which may have no consumer or workers of another app.
    app.conf.task_routes = {route: {"queue": QUEUE}}
    settings = Settings(database_url="sqlite:///unused.sqlite3")
    rows = [Publication("pubkind", f"t{n}", n + 1, f"task-{n}") for n in range(FAN_OUT_ABOVE + 1)]

    publish_many_with(app, settings)(rows)

    ((headers, body),) = received(app, 1)
    assert headers["task"] == FAN_OUT_TASK and len(body[0][0]) == len(rows)
    with app.connection_for_read() as conn, conn.SimpleQueue("celery") as default:
        assert default.qsize() == 0


def test_a_fan_out_message_names_trackers_of_one_kind_only(app: Celery) -> None:
    settings = Settings(database_url="sqlite:///unused.sqlite3", queue=QUEUE)
    kinds = ["pubkind"] * 5 + ["other"] * 5 + ["pubkind"] * 2
    rows = [Publication(kind, f"t{n}", n + 1, f"task-{n}") for n, kind in enumerate(kinds)]

    publish_many_with(app, settings)(rows)

    bodies = [body[0][0] for _, body in received(app, 3)]
    assert [{row[0] for row in rows} for rows in bodies] == [{"pubkind"}, {"other"}, {"pubkind"}]
    assert [row for rows in bodies for row in rows] == [
        [r.kind, r.transaction_id, r.epoch, r.task_id] for r in rows
    ]


@pytest.mark.parametrize("route", ["tracking.*", "tracking.pubkind"])
def test_a_batch_of_parked_trackers_follows_the_route_of_their_task(app: Celery, route: str) -> None:
    # As a fan-out: an app's own route for the kind's tracker task (no TRACKING_QUEUE) also takes
    # the batch message of that kind, to the workers that run it, not to the default queue.
    app.conf.task_routes = {route: {"queue": QUEUE}}
    settings = Settings(database_url="sqlite:///unused.sqlite3")

    publish_batch_with(app, settings)(Batch("pubkind", (("t1", 1), ("t2", 2))))

    ((headers, body),) = received(app, 1)
    assert headers["task"] == batch_task_name("pubkind") and body[0] == [[["t1", 1], ["t2", 2]]]
    with app.connection_for_read() as conn, conn.SimpleQueue("celery") as default:
        assert default.qsize() == 0
