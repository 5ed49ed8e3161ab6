"""The rows the registry returns: typed, frozen, built from a row in one place; the status enums
keep the values the database stores."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from tracking import Status as PublicStatus
from tracking import registry
from tracking.models import (
    Entry,
    Event,
    Message,
    MessageStatus,
    MessageType,
    Reply,
    Status,
    Sweep,
    WorkerStatus,
    trackers,
)


def _tracker_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": 7,
        "kind": "K",
        "transaction_id": "t-1",
        "status": "running",
        "epoch": 3,
        "task_id": "task-3",
        "worker": "w1@host",
        "worker_id": "host/1/abc",
        "args": {"a": 1},
        "state": None,
        "policy": {"restart": "transient"},
        "restarts": 1,
        "restart_times": ["2024-01-01T00:00:00+00:00"],
        "backoff_step": 0,
        "stop_reason": None,
        "last_error": None,
        "started_at": datetime(2024, 1, 1, 12, 0, 0),  # naive, as SQLite returns it
        "claimed_at": "2024-01-01 12:00:01.500",  # text, as SQLite returns a computed time
        "checkpoint_at": None,
        "due_at": None,
        "tick_at": None,
        "last_message_id": 2,
        "handled_message_id": 1,
        "republished": 0,
    }
    row.update(overrides)
    return row


def test_the_statuses_keep_the_values_the_database_stores() -> None:
    assert [s.value for s in Status] == ["pending", "running", "parked", "failed", "dead"]
    assert [s.value for s in WorkerStatus] == ["alive", "lost", "stopped"]
    assert [t.value for t in MessageType] == ["cast", "call"]
    assert [s.value for s in MessageStatus] == ["queued", "replied", "failed"]
    (check,) = [c for c in trackers.constraints if isinstance(c, sa.CheckConstraint)]
    assert str(check.sqltext) == "status IN ('pending', 'running', 'parked', 'failed', 'dead')"


def test_status_is_one_enum_under_every_public_name() -> None:
    assert PublicStatus is Status and registry.Status is Status


def test_an_entry_is_built_from_its_row_with_typed_aware_fields() -> None:
    entry = Entry.from_mapping(_tracker_row())  # type: ignore[arg-type]
    assert entry.status is Status.RUNNING
    assert entry.started_at == datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert entry.claimed_at == datetime(2024, 1, 1, 12, 0, 1, 500_000, tzinfo=UTC)
    assert entry.heartbeat_at is None and entry.db_now is None  # not selected
    joined = Entry.from_mapping(_tracker_row(heartbeat_at=datetime(2024, 1, 1, tzinfo=UTC)))  # type: ignore[arg-type]
    assert joined.heartbeat_at == datetime(2024, 1, 1, tzinfo=UTC)


def test_rows_are_frozen_and_slotted() -> None:
    entry = Entry.from_mapping(_tracker_row())  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.status = Status.DEAD  # type: ignore[misc]
    assert not hasattr(entry, "__dict__")
    assert dataclasses.replace(entry, epoch=4).epoch == 4 and entry.epoch == 3


def test_the_other_rows_are_built_from_their_tables_rows() -> None:
    at = datetime(2024, 1, 1)  # naive, as SQLite returns it
    row = {
        "id": 1,
        "kind": "K",
        "transaction_id": "t",
        "epoch": 2,
        "at": at,
        "event": "crashed",
        "worker": None,
    }
    event = Event.from_mapping({**row, "detail": "boom"})  # type: ignore[arg-type]
    assert event.at.tzinfo is UTC and event.event == "crashed"
    message = Message.from_mapping({"id": 5, "type": "call", "body": {"n": 1}})  # type: ignore[arg-type]
    assert message.type is MessageType.CALL and message.body == {"n": 1}
    reply = Reply.from_mapping({"status": "failed", "reply": None, "error": "boom"})  # type: ignore[arg-type]
    assert reply.status is MessageStatus.FAILED and reply.error == "boom"
    swept = {"name": "s", "last_sweep_at": "2024-01-01 00:00:00", "last_counts": {"woken": 1}}
    sweep = Sweep.from_mapping(swept)  # type: ignore[arg-type]
    assert sweep.last_sweep_at == datetime(2024, 1, 1, tzinfo=UTC) and sweep.last_counts == {"woken": 1}
