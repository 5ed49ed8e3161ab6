"""The worker's wake-up listener, on a real PostgreSQL registry: a cast for a running tracker
reaches it through NOTIFY at once; the listener reconnects after its connection is killed."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.harness import migrated, wait_for
from tracking import registry
from tracking.models import MessageType
from tracking.policy import RestartPolicy
from tracking.settings import Settings
from tracking.worker import listener


@pytest.fixture
def settings(pg_database: str) -> Iterator[Settings]:
    with migrated(Settings(database_url=pg_database)) as settings:
        yield settings


def _listening(settings: Settings) -> tuple[list[tuple[int, str]], threading.Event, threading.Thread]:
    heard: list[tuple[int, str]] = []
    stopped = threading.Event()
    thread = threading.Thread(
        target=listener.listen, args=(settings, lambda r, w: heard.append((r, w)), stopped)
    )
    thread.start()
    return heard, stopped, thread


def _listeners(settings: Settings) -> int:
    with registry.engine(settings).connect() as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'tracking-%-listen'"
        return int(conn.execute(sa.text(query)).scalar_one())


def _cast_until_heard(settings: Settings, row_id: int, heard: list[tuple[int, str]]) -> None:
    # A notification sent before the listener's LISTEN is not delivered: send until one is heard.
    def heard_one() -> bool:
        registry.enqueue(settings, "k", "t", MessageType.CAST, {"n": 1})
        return (row_id, "mail") in heard

    wait_for(heard_one, timeout=20, interval=0.2, what="the cast's notification")


def test_a_cast_for_a_tracker_is_heard_and_heard_again_after_the_connection_is_killed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each wait for notifications lasts far longer than the test waits for one: a notification is
    # handed on as it arrives, not when the wait ends.
    monkeypatch.setattr(listener, "POLL", 120.0)
    row, _ = registry.start(settings, "k", "t", {}, RestartPolicy())
    heard, stopped, thread = _listening(settings)
    try:
        _cast_until_heard(settings, row.id, heard)
        _kill_listeners(settings)
        heard.clear()
        _cast_until_heard(settings, row.id, heard)
    finally:
        stopped.set()
        _kill_listeners(settings)  # ends the long wait at once
        thread.join(timeout=20)
    assert not thread.is_alive()
    wait_for(lambda: _listeners(settings) == 0, timeout=10, what="the listener's connection to close")


def _kill_listeners(settings: Settings) -> None:
    with registry.engine(settings).connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'tracking-%-listen'"
            )
        )


def test_on_sqlite_the_listener_returns_at_once(tmp_path: object) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/registry.sqlite3")
    stopped = threading.Event()
    listener.listen(settings, lambda _r, _w: None, stopped)  # returns: nothing to listen to
    assert not stopped.is_set()
