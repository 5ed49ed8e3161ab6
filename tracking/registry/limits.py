"""Rate limits shared by every worker process: one token bucket per kind (``tracking_limits``).

A bucket holds at most ``burst`` tokens and gains ``rate`` tokens a second by the database clock,
never a process's, so every worker on every host draws from the same bucket: over any window of
``T`` seconds, the takes of all processes together are granted at most ``burst + rate * T``
tokens. A bucket is made full by its first take.

Atomicity: :func:`take` is one transaction of two statements. The first refills the bucket (or
creates it) and returns what it holds: an ``INSERT ... ON CONFLICT DO UPDATE``, which on
PostgreSQL keeps the row locked until the commit, and on SQLite runs inside ``BEGIN IMMEDIATE``,
which holds the database's write lock. The second takes the whole tokens granted. Two takers at
once are serialized on that lock, the second seeing what the first left: together they are never
granted more than the bucket holds.

The refill's clock never goes backwards. On PostgreSQL ``now()`` is the transaction's start, so a
taker that waited for the lock may read a time earlier than the one its predecessor wrote: it
refills nothing and keeps the later time, and the tokens granted over a window stay within the
bound above. SQLite's clock has milliseconds, so elapsed time is counted in whole milliseconds.

The rate and burst are passed by each take (the kind's code declares them) rather than configured
in the table: a deploy that changes them takes effect at the next take, with no second place to
keep in step. The row stores the last take's values, for operators.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tracking.models import Timestamp, limits
from tracking.registry.clock import seconds_since
from tracking.registry.core import _write, db_now
from tracking.registry.rows import _insert
from tracking.settings import Settings

#: a bucket holding 2.9999999999999996 tokens (0.3 s at 10 a second) holds 3
EPSILON = 1e-9


@dataclasses.dataclass(frozen=True)
class Grant:
    """What one :func:`take` got from a kind's bucket."""

    #: whole tokens granted, at most the number wanted
    granted: int
    #: tokens (whole and fractional) left in the bucket after the take
    left: float
    #: seconds until the bucket holds a whole token again, if fewer than wanted were granted
    #: (else 0.0): a taker that waits less finds nothing
    wait: float


def validate(rate: float, burst: float) -> None:
    """Raise ValueError unless ``rate`` (tokens a second) is positive and ``burst`` at least 1."""
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"a rate limit's rate must be a positive number of tokens a second, not {rate!r}")
    if not (math.isfinite(burst) and burst >= 1):
        raise ValueError(f"a rate limit's burst must be at least 1 token, not {burst!r}")


def take(
    settings: Settings, kind: str, rate: float, burst: float, wanted: int, *, now: datetime | None = None
) -> Grant:
    """Take up to ``wanted`` whole tokens from ``kind``'s bucket, which holds at most ``burst``
    tokens and gains ``rate`` a second; made full by its first take.

    ``now``: the time of the take; None (always, outside tests) is the database clock. Raises
    ValueError for a rate not above 0, a burst below 1 or a negative ``wanted``, having written
    nothing; RegistryUnavailable if the registry cannot be reached (nothing taken).
    """
    validate(rate, burst)
    if not isinstance(wanted, int) or wanted < 0:
        raise ValueError(f"the tokens wanted must be a whole number of at least 0, not {wanted!r}")
    if not kind:
        raise ValueError("a rate limit needs a kind")
    if now is not None and now.utcoffset() is None:
        raise ValueError("the time of a take must be timezone-aware")
    clock: sa.ColumnElement[datetime] = db_now() if now is None else sa.literal(now, Timestamp)
    rate, burst = float(rate), float(burst)
    with _write(settings) as conn:
        # float(): SQLite's RETURNING gives an inserted 5.0 back as the integer 5
        held = float(conn.execute(_refill(conn, kind, rate, burst, clock)).scalar_one())
        granted = min(wanted, math.floor(held + EPSILON))
        left = max(0.0, held - granted)
        if granted:
            conn.execute(limits.update().where(limits.c.kind == kind).values(tokens=left))
    wait = 0.0 if granted == wanted else max(0.0, 1.0 - left) / rate
    return Grant(granted=granted, left=left, wait=wait)


def _refill(
    conn: sa.Connection, kind: str, rate: float, burst: float, clock: sa.ColumnElement[datetime]
) -> Any:
    """The bucket refilled up to ``clock`` (or created full), returning the tokens it holds."""
    elapsed = seconds_since(clock, limits.c.updated_at)
    refilled = limits.c.tokens + sa.literal(rate, sa.Double()) * sa.case((elapsed > 0, elapsed), else_=0.0)
    full: sa.ColumnElement[float] = sa.literal(burst, sa.Double())
    return (
        _insert(conn)(limits)
        .values(kind=kind, tokens=burst, updated_at=clock, rate=rate, burst=burst)
        .on_conflict_do_update(
            index_elements=[limits.c.kind],
            set_={
                "tokens": sa.case((refilled > full, full), else_=refilled),
                "updated_at": sa.case((limits.c.updated_at > clock, limits.c.updated_at), else_=clock),
                "rate": rate,
                "burst": burst,
            },
        )
        .returning(limits.c.tokens)
    )
