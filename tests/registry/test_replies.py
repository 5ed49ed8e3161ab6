"""A call's answer reaches its caller: on PostgreSQL announced to the one listening connection its
process keeps (``tracking.client.replies``), on SQLite found by polling. On a real registry, with
no worker: the test plays the tracker's side, reading the mailbox and recording each message
handled as an incarnation does (``registry.mailbox``, ``registry.handled``)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import tracking
from tests.harness import migrated, wait_for
from tests.harness.threads import all_at_once
from tracking import registry
from tracking.client import Client, replies
from tracking.models import Entry, MessageStatus, MessageType
from tracking.policy import RestartPolicy
from tracking.settings import Settings

KIND = "replies"


@pytest.fixture
def pg_settings(pg_database: str) -> Iterator[Settings]:
    with migrated(Settings(database_url=pg_database)) as settings:
        yield settings


@pytest.fixture(autouse=True)
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiting caller never reads the registry for its own sake: on PostgreSQL an answer that
    was not announced would leave the call waiting past the test's timeout."""
    monkeypatch.setattr(replies, "PATIENCE", 600.0)


def running(settings: Settings, txid: str) -> Entry:
    """An entry claimed by a worker of the test's own: the test handles its messages."""
    row, _ = registry.start(settings, KIND, txid, {}, RestartPolicy())
    worker_id = f"test/{txid[-12:]}"
    registry.register_worker(settings, worker_id, "test@here", 1)
    claimed = registry.claim(
        settings, KIND, txid, row.epoch, worker="test@here", worker_id=worker_id, policy=RestartPolicy()
    )
    assert claimed is not None
    return claimed


def client(settings: Settings) -> Client:
    return Client(settings, publish=lambda _row: None)  # nothing is published: no worker runs


def handle_all(settings: Settings, row: Entry, after: int = 0) -> int:
    """Handle the queued messages as the tracker would: each call answered with its message."""
    for message in registry.mailbox(settings, KIND, row.transaction_id, after=after):
        registry.handled(settings, row.id, row.epoch, message.id, {"last": message.id}, reply=message.body)
        after = message.id
    return after


@contextlib.contextmanager
def tracker(settings: Settings, row: Entry, ready: Callable[[], bool] = lambda: True) -> Iterator[None]:
    """Play the tracker on a thread (once ``ready()``), until the block ends."""
    stop = threading.Event()

    def run() -> None:
        wait_for(lambda: ready() or stop.is_set(), what="the caller to wait")
        after = 0
        while not stop.is_set():
            after = handle_all(settings, row, after)
            stop.wait(0.005)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)  # before the registry's connections are closed


def replies_connections(settings: Settings) -> int:
    with registry.engine(settings).connect() as conn:
        query = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = :name AND datname = current_database()"
        )
        name = f"tracking-{os.getpid()}-replies"
        return int(conn.execute(sa.text(query), {"name": name}).scalar_one())


def test_a_caller_sleeps_until_its_answer_is_announced_then_takes_it_in_one_read(
    pg_settings: Settings, txid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = running(pg_settings, txid)
    reads: list[int] = []
    take = registry.take_reply

    def counted(settings: Settings, message_id: int) -> registry.Reply | None:
        reads.append(message_id)
        return take(settings, message_id)

    def never(settings: Settings, message_id: int) -> bool:
        raise AssertionError("the caller gave up: its answer was never announced")

    answers = replies.replies(pg_settings)
    heard: list[bool] = []
    wait = answers.wait

    def waited(generation: int, message_id: int, timeout: float) -> bool:
        heard.append(wait(generation, message_id, timeout))
        return heard[-1]

    monkeypatch.setattr(registry, "take_reply", counted)
    monkeypatch.setattr(registry, "withdraw", never)
    monkeypatch.setattr(answers, "wait", waited)
    with tracker(pg_settings, row, ready=lambda: answers.waiters == 1):  # answers once it waits
        assert client(pg_settings).call(KIND, txid, {"n": 1}, timeout=30) == {"n": 1}
    assert heard == [True], "the caller woke without its answer's announcement"
    assert len(reads) == 1, "the caller read the registry before its answer was announced"


def test_callers_in_many_threads_share_one_listening_connection_closed_once_unused(
    pg_settings: Settings, txid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = running(pg_settings, txid)
    caller = client(pg_settings)
    with tracker(pg_settings, row):
        calls = [
            lambda i=i: [caller.call(KIND, txid, {"t": i, "n": n}, timeout=60) for n in range(5)]
            for i in range(8)
        ]
        results = all_at_once(calls)
    assert results == [[{"t": i, "n": n} for n in range(5)] for i in range(8)]
    assert replies_connections(pg_settings) == 1
    monkeypatch.setattr(replies, "IDLE", 0.0)  # unused from now on: closed at its next look
    wait_for(lambda: replies_connections(pg_settings) == 0, what="the listening connection to close")


def test_a_caller_whose_listener_is_killed_still_gets_its_answer_and_the_next_call_listens_again(
    pg_settings: Settings, txid: str
) -> None:
    row = running(pg_settings, txid)
    caller = client(pg_settings)
    answers = replies.replies(pg_settings)
    got: list[Any] = []
    waiting = threading.Thread(target=lambda: got.append(caller.call(KIND, txid, "first", timeout=60)))
    waiting.start()
    wait_for(lambda: answers.waiters == 1, what="the caller to wait")
    with registry.engine(pg_settings).connect() as conn:
        kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name"
        conn.execute(sa.text(kill), {"name": f"tracking-{os.getpid()}-replies"})
    wait_for(lambda: answers.waiters == 0, what="the caller to be told its listener is gone")
    handle_all(pg_settings, row)  # answered, not announced to anyone: the caller polls now
    waiting.join(timeout=60)
    assert got == ["first"]
    with tracker(pg_settings, row):
        assert caller.call(KIND, txid, "second", timeout=60) == "second"
    assert replies_connections(pg_settings) == 1


def test_a_call_nobody_answers_times_out_and_its_message_is_withdrawn(
    registry_settings: Settings, txid: str
) -> None:
    running(registry_settings, txid)
    with pytest.raises(tracking.Timeout):
        client(registry_settings).call(KIND, txid, "anyone?", timeout=0.3)
    assert registry.mailbox(registry_settings, KIND, txid, after=0) == []


def test_an_answer_is_taken_once_queued_until_then(registry_settings: Settings, txid: str) -> None:
    row = running(registry_settings, txid)
    message_id = registry.enqueue(registry_settings, KIND, txid, MessageType.CALL, "ping")
    waiting = registry.take_reply(registry_settings, message_id)
    assert waiting is not None and waiting.status is MessageStatus.QUEUED
    handle_all(registry_settings, row)
    assert registry.take_reply(registry_settings, message_id) == registry.Reply(
        MessageStatus.REPLIED, "ping", None
    )
    assert registry.take_reply(registry_settings, message_id) is None, "taken once"
