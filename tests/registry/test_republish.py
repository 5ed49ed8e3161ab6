"""An entry nobody claims costs a bounded trickle: after a few republishes one start grace apart,
each waits twice as long as the one before (a failed publish does not count), and only the first
is recorded as an event."""

from __future__ import annotations

import sqlalchemy as sa

from tracking import registry, supervisor
from tracking.client import Publishable
from tracking.models import aware, events, trackers
from tracking.policy import RestartPolicy
from tracking.registry.transitions import REPUBLISH_STEADY
from tracking.settings import Settings


def _make_due(settings: Settings) -> None:
    with registry.engine(settings).begin() as conn:
        conn.execute(trackers.update().values(due_at=registry.db_now(-1)))


def _wait_and_events(settings: Settings) -> tuple[float, int]:
    """Seconds until the entry is due again, and how many "republished" events it has."""
    with registry.engine(settings).connect() as conn:
        due = conn.execute(sa.select(trackers.c.due_at)).scalar_one()
        now = conn.execute(sa.select(registry.db_now())).scalar_one()
        recorded = conn.execute(
            sa.select(sa.func.count()).select_from(events).where(events.c.event == "republished")
        ).scalar_one()
    wait = (aware(due) - aware(now)).total_seconds()  # type: ignore[operator]
    return wait, int(recorded)


def test_an_unclaimed_entry_is_published_again_less_and_less_often_with_one_event(
    registry_settings: Settings,
) -> None:
    settings = registry_settings
    registry.start(settings, "K", "t-unclaimed", {}, RestartPolicy())
    published: list[Publishable] = []
    grace = settings.start_grace_seconds
    waits = []
    steady = REPUBLISH_STEADY
    for _ in range(steady + 7):
        _make_due(settings)
        assert supervisor.sweep(settings, published.append)["republished"] == 1
        wait, recorded = _wait_and_events(settings)
        waits.append(round(wait / grace))
        assert recorded == 1
    assert waits == [1] * steady + [2, 4, 8, 16, 32, 32, 32]
    assert len(published) == steady + 7 and len({r.epoch for r in published}) == 1


def test_a_publish_that_failed_does_not_lengthen_the_wait(registry_settings: Settings) -> None:
    settings = registry_settings
    registry.start(settings, "K", "t-broker-down", {}, RestartPolicy())

    def broker_down(_row: Publishable) -> None:
        raise ConnectionError("broker unreachable")

    for _ in range(3):
        _make_due(settings)
        counts = supervisor.sweep(settings, broker_down)
        assert counts["failed_publish"] == 1
        wait, recorded = _wait_and_events(settings)
        assert round(wait / settings.start_grace_seconds) == 1
        assert recorded == 1, "a broker outage records the republish once, not once per sweep"
