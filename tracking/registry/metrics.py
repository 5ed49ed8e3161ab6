"""Queries behind the Prometheus metrics and the benchmarks' checkers: counts from the events table."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from tracking.models import Status, aware, events, trackers
from tracking.registry.core import _read, db_now
from tracking.settings import Settings

# -- metrics (tracking.contrib.prometheus) ----------------------------------------------------------
#
# Counters come from tracking_events, which only grows: a scrape reads the events after the last one
# it counted (a range of the primary key), never the whole table again.


def census(settings: Settings) -> list[tuple[str, Status, int]]:
    """``(kind, status, entries)`` for every kind and status present in the registry.

    One aggregate over the registry (its live entries, not its history).
    """
    stmt = sa.select(trackers.c.kind, trackers.c.status, sa.func.count()).group_by(
        trackers.c.kind, trackers.c.status
    )
    return _read(settings, lambda conn: [(r[0], Status(r[1]), int(r[2])) for r in conn.execute(stmt)])


def settled_event_id(settings: Settings, after: int, settle_seconds: float) -> int:
    """The highest event ID up to which the events after ``after`` can be counted once and for all.

    Event IDs are taken when an event is written but become visible when its transaction commits, so
    a recent event may still be hidden behind a lower ID. Settled are the events older than
    ``settle_seconds`` (by the database clock) below the first recent one: a registry transaction
    that stays open longer than that could still be missed. Returns ``after`` when there is nothing
    new. One statement over the new events (primary key range).
    """
    recent = (
        sa.select(sa.func.min(events.c.id))
        .where(events.c.id > after, events.c.at > db_now(-settle_seconds))
        .scalar_subquery()
    )
    stmt = sa.select(sa.func.max(events.c.id)).where(
        events.c.id > after, events.c.id < sa.func.coalesce(recent, 2**62)
    )
    return _read(settings, lambda conn: int(conn.execute(stmt).scalar_one_or_none() or after))


def count_events(
    settings: Settings, after: int, upto: int, names: Sequence[str]
) -> list[tuple[str, str, int]]:
    """``(kind, event, count)`` of the events named ``names`` with ``after < id <= upto``.

    One statement over that primary key range.
    """
    stmt = (
        sa.select(events.c.kind, events.c.event, sa.func.count())
        .where(events.c.id > after, events.c.id <= upto, events.c.event.in_(list(names)))
        .group_by(events.c.kind, events.c.event)
    )
    return _read(settings, lambda conn: [(r[0], r[1], int(r[2])) for r in conn.execute(stmt)])


def count_restarts(settings: Settings, after: int, upto: int) -> list[tuple[str, int]]:
    """``(kind, restarts)`` decided by the events with ``after < id <= upto``.

    A restart is recorded as ``restarting`` (at once) or ``backoff`` (after a delay); when the delay
    is over the supervisor records ``restarting`` again for the same restart, which is not counted:
    a ``restarting`` event right after the tracker's ``backoff`` event. One statement over that
    primary key range, with one index lookup (kind, transaction ID) per ``restarting`` event.
    """
    previous = events.alias("previous")
    previous_event = (
        sa.select(previous.c.event)
        .where(
            previous.c.kind == events.c.kind,
            previous.c.transaction_id == events.c.transaction_id,
            previous.c.id < events.c.id,
        )
        .order_by(previous.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    is_restart = sa.or_(
        events.c.event == "backoff",
        sa.and_(events.c.event == "restarting", sa.func.coalesce(previous_event, "") != "backoff"),
    )
    stmt = (
        sa.select(events.c.kind, sa.func.count())
        .where(events.c.id > after, events.c.id <= upto, events.c.event.in_(["restarting", "backoff"]))
        .where(is_restart)
        .group_by(events.c.kind)
    )
    return _read(settings, lambda conn: [(r[0], int(r[1])) for r in conn.execute(stmt)])


def recoveries(settings: Settings, after: int, upto: int) -> list[tuple[str, float]]:
    """``(kind, seconds)`` from a lost worker to the restarted incarnation running, for each
    ``running`` event with ``after < id <= upto`` of epoch e + 1 whose tracker's epoch e ended with
    ``worker_lost`` (in the same life of the entry: no ``started`` event between the two).

    One statement over that primary key range, with index lookups (kind, transaction ID) per
    ``running`` event of a restarted incarnation.
    """
    lost = events.alias("lost")
    started = events.alias("started")
    restarted_since = (
        sa.exists()
        .where(
            started.c.kind == events.c.kind,
            started.c.transaction_id == events.c.transaction_id,
            started.c.event == "started",
            started.c.id > lost.c.id,
            started.c.id < events.c.id,
        )
        .correlate(events, lost)
    )
    lost_at = (
        sa.select(lost.c.at)
        .where(
            lost.c.kind == events.c.kind,
            lost.c.transaction_id == events.c.transaction_id,
            lost.c.id < events.c.id,
            lost.c.epoch == events.c.epoch - 1,
            lost.c.event == "worker_lost",
            ~restarted_since,
        )
        .order_by(lost.c.id.desc())
        .limit(1)
        .correlate(events)
        .scalar_subquery()
    )
    running = (
        sa.select(events.c.kind, lost_at.label("lost_at"), events.c.at.label("running_at"))
        .where(events.c.id > after, events.c.id <= upto)
        .where(events.c.event == "running", events.c.epoch > 1)
        .subquery()
    )
    stmt = sa.select(running.c.kind, running.c.lost_at, running.c.running_at).where(
        running.c.lost_at.is_not(None)
    )

    def query(conn: sa.Connection) -> list[tuple[str, float]]:
        found: list[tuple[str, float]] = []
        for kind, lost_at_, running_at in conn.execute(stmt):
            began, ended = aware(lost_at_), aware(running_at)
            assert began is not None and ended is not None
            found.append((kind, max(0.0, (ended - began).total_seconds())))
        return found

    return _read(settings, query)
