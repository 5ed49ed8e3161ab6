"""How the metrics collector counts, on a registry history written by hand (SQLite, no services):
each restart once, recoveries only within one life of an entry, and events counted only once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.harness import migrated
from tracking import registry
from tracking.contrib.prometheus import RegistryCollector
from tracking.models import events
from tracking.settings import Settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    with migrated(Settings(database_url=f"sqlite:///{tmp_path / 'registry.sqlite3'}")) as settings:
        yield settings


def write(settings: Settings, txid: str, *history: tuple[float, int, str]) -> None:
    """Events of one Counter tracker: (seconds after T0, epoch, event)."""
    with registry.engine(settings).begin() as conn:
        conn.execute(
            events.insert(),
            [
                {"kind": "Counter", "transaction_id": txid, "epoch": epoch, "at": T0 + timedelta(seconds=s),
                 "event": event, "worker": None, "detail": None}
                for s, epoch, event in history
            ],
        )  # fmt: skip


def sample(collector: RegistryCollector, name: str, **labels: str) -> float | None:
    registry_ = CollectorRegistry()
    registry_.register(collector)
    value = registry_.get_sample_value(name, labels)
    registry_.unregister(collector)
    return value


def test_a_restart_after_a_backoff_counts_once(settings: Settings) -> None:
    write(
        settings,
        "a",
        (0, 1, "started"),
        (1, 1, "running"),
        (2, 1, "crashed"),
        (2, 2, "restarting"),  # at once
        (3, 2, "running"),
        (4, 2, "crashed"),
        (4, 3, "backoff"),  # after a delay...
        (5, 3, "restarting"),  # ...which the supervisor ends: the same restart
        (6, 3, "running"),
    )
    collector = RegistryCollector(settings, settle_seconds=0)
    assert sample(collector, "tracking_restarts_total", kind="Counter") == 2
    assert sample(collector, "tracking_restarts_total", kind="Counter") == 2, "counted once"


def test_recovery_runs_from_worker_lost_to_the_next_epoch_running_within_one_life(
    settings: Settings,
) -> None:
    write(
        settings,
        "b",
        (0, 1, "started"),
        (1, 1, "running"),
        (10, 1, "worker_lost"),
        (10, 2, "restarting"),
        (13.5, 2, "running"),  # recovered in 3.5 s
        (20, 2, "stopped"),
        (30, 3, "started"),  # deregistered, then started again: a new life, its epochs above the old
        (31, 3, "running"),
        (40, 3, "handoff"),
        (41, 4, "running"),  # the new life's next epoch after a handoff: not a recovery from a loss
    )
    collector = RegistryCollector(settings, settle_seconds=0, buckets=(1, 5))
    assert sample(collector, "tracking_recovery_seconds_count", kind="Counter") == 1
    assert sample(collector, "tracking_recovery_seconds_sum", kind="Counter") == 3.5
    assert sample(collector, "tracking_recovery_seconds_bucket", kind="Counter", le="1.0") == 0
    assert sample(collector, "tracking_recovery_seconds_bucket", kind="Counter", le="5.0") == 1
    assert sample(collector, "tracking_worker_lost_total", kind="Counter") == 1
    assert sample(collector, "tracking_handoffs_total", kind="Counter") == 1
    assert sample(collector, "tracking_restarts_total", kind="Counter") == 1


def test_crashes_are_counted_by_kind(settings: Settings) -> None:
    write(settings, "d", (0, 1, "started"), (1, 1, "running"), (2, 1, "crashed"), (2, 2, "restarting"))
    write(settings, "e", (0, 1, "started"), (1, 1, "running"), (2, 1, "crashed"), (2, 1, "dead"))
    collector = RegistryCollector(settings, settle_seconds=0)
    assert sample(collector, "tracking_crashes_total", kind="Counter") == 2
    assert sample(collector, "tracking_crashes_total", kind="Counter") == 2, "counted once"


def test_events_younger_than_the_settle_time_wait_for_a_later_scrape(settings: Settings) -> None:
    collector = RegistryCollector(settings, settle_seconds=3600)
    write(settings, "c", (0, 1, "started"))
    now = registry.database_now(settings)
    with registry.engine(settings).begin() as conn:
        conn.execute(
            events.insert().values(
                kind="Counter", transaction_id="c", epoch=1, at=now, event="handoff", worker=None, detail=None
            )
        )
    assert sample(collector, "tracking_handoffs_total", kind="Counter") is None, "not settled yet"
    collector.settle_seconds = 0
    assert sample(collector, "tracking_handoffs_total", kind="Counter") == 1


def test_an_unreadable_registry_reports_down_and_keeps_the_counts(settings: Settings, tmp_path: Path) -> None:
    write(settings, "d", (0, 1, "started"), (1, 1, "running"), (2, 1, "crashed"), (2, 2, "restarting"))
    collector = RegistryCollector(settings, settle_seconds=0)
    assert sample(collector, "tracking_registry_up") == 1
    assert sample(collector, "tracking_restarts_total", kind="Counter") == 1
    collector.settings = Settings(database_url=f"sqlite:///{tmp_path / 'missing' / 'registry.sqlite3'}")
    assert sample(collector, "tracking_registry_up") == 0
    assert sample(collector, "tracking_restarts_total", kind="Counter") == 1
    assert sample(collector, "tracking_trackers", kind="Counter", status="running") is None
