"""Rate limits in the registry: one token bucket per kind, shared by every process (on SQLite and
PostgreSQL, ``registry_settings``).

Most tests give each take its time (``now=``), so the bucket's arithmetic is checked exactly and
nothing waits; the concurrent ones use the database clock with a rate so slow that no whole token
is added while they run, so the bucket's first ``burst`` tokens are all there is to share.
"""

from __future__ import annotations

import math
import multiprocessing
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, note
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.harness import all_at_once
from tracking import registry
from tracking.models import limits
from tracking.registry.limits import EPSILON, Grant, take
from tracking.settings import Settings

T0 = datetime(2030, 1, 1, tzinfo=UTC)
#: a rate so slow that no whole token is added while a test runs (one a week)
GLACIAL = 1 / (7 * 24 * 3600)


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def kind() -> str:
    return f"limit_{uuid.uuid4().hex[:12]}"


def bucket_rows(settings: Settings) -> list[Any]:
    with registry.engine(settings).connect() as conn:
        return list(conn.execute(sa.select(limits)).all())


def test_a_new_bucket_starts_full_and_grants_what_it_holds(registry_settings: Settings) -> None:
    k = kind()
    assert take(registry_settings, k, rate=10, burst=5, wanted=3, now=at(0)) == Grant(3, 2.0, 0.0)
    assert take(registry_settings, k, rate=10, burst=5, wanted=3, now=at(0)) == Grant(2, 0.0, 0.1)
    assert take(registry_settings, k, rate=10, burst=5, wanted=1, now=at(0)) == Grant(0, 0.0, 0.1)


def test_the_bucket_refills_at_its_rate(registry_settings: Settings) -> None:
    k = kind()
    take(registry_settings, k, rate=10, burst=5, wanted=5, now=at(0))
    grant = take(registry_settings, k, rate=10, burst=5, wanted=5, now=at(250))
    assert grant.granted == 2
    assert grant.left == pytest.approx(0.5)
    assert grant.wait == pytest.approx(0.05)


def test_the_bucket_never_holds_more_than_its_burst(registry_settings: Settings) -> None:
    k = kind()
    take(registry_settings, k, rate=10, burst=5, wanted=5, now=at(0))
    assert take(registry_settings, k, rate=10, burst=5, wanted=100, now=at(3_600_000)).granted == 5


def test_a_take_that_read_an_earlier_clock_refills_nothing(registry_settings: Settings) -> None:
    # PostgreSQL's now() is the transaction's start: a taker that waited for the row lock reads a
    # time before its predecessor's. It must neither refill nor move the bucket's time back.
    k = kind()
    take(registry_settings, k, rate=10, burst=5, wanted=5, now=at(0))
    assert take(registry_settings, k, rate=10, burst=5, wanted=5, now=at(300)).granted == 3
    assert take(registry_settings, k, rate=10, burst=5, wanted=5, now=at(100)).granted == 0
    assert take(registry_settings, k, rate=10, burst=5, wanted=5, now=at(400)).granted == 1


def test_each_kind_has_a_bucket_of_its_own(registry_settings: Settings) -> None:
    a, b = kind(), kind()
    assert take(registry_settings, a, rate=1, burst=2, wanted=2, now=at(0)).granted == 2
    assert take(registry_settings, b, rate=1, burst=2, wanted=2, now=at(0)).granted == 2


def test_the_row_shows_the_rate_and_burst_of_the_last_take(registry_settings: Settings) -> None:
    k = kind()
    take(registry_settings, k, rate=10, burst=5, wanted=5, now=at(0))
    take(registry_settings, k, rate=20, burst=3, wanted=0, now=at(1000))
    [row] = bucket_rows(registry_settings)
    assert (row.kind, row.rate, row.burst, row.tokens) == (k, 20.0, 3.0, 3.0)


def test_the_database_clock_refills_the_bucket(registry_settings: Settings) -> None:
    k = kind()
    assert take(registry_settings, k, rate=GLACIAL, burst=2, wanted=3).granted == 2
    grant = take(registry_settings, k, rate=GLACIAL, burst=2, wanted=1)
    assert grant.granted == 0
    assert 0 < grant.wait <= 1 / GLACIAL


@pytest.mark.parametrize(
    ("rate", "burst", "wanted", "says"),
    [
        (0, 5, 1, "rate"),
        (-1, 5, 1, "rate"),
        (math.nan, 5, 1, "rate"),
        (math.inf, 5, 1, "rate"),
        (10, 0.5, 1, "burst"),
        (10, math.nan, 1, "burst"),
        (10, 5, -1, "wanted"),
    ],
)
def test_bad_input_raises_a_clear_value_error_and_writes_nothing(
    registry_settings: Settings, rate: float, burst: float, wanted: int, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        take(registry_settings, kind(), rate=rate, burst=burst, wanted=wanted)
    assert bucket_rows(registry_settings) == []


def test_a_naive_time_is_refused(registry_settings: Settings) -> None:
    with pytest.raises(ValueError, match="timezone"):
        take(registry_settings, kind(), rate=1, burst=1, wanted=1, now=datetime(2030, 1, 1))
    assert bucket_rows(registry_settings) == []


def test_threads_taking_at_once_never_get_more_than_the_bucket_holds(registry_settings: Settings) -> None:
    k, burst = kind(), 50

    def drain() -> int:
        got = 0
        while grant := take(registry_settings, k, rate=GLACIAL, burst=burst, wanted=3).granted:
            got += grant
        return got

    assert sum(all_at_once([drain] * 8)) == burst


def _drain_in_child(url: str, k: str, burst: int, barrier: Any, results: Any) -> None:
    settings = Settings(database_url=url)
    try:
        barrier.wait(timeout=60)
        got = 0
        while grant := take(settings, k, rate=GLACIAL, burst=burst, wanted=2).granted:
            got += grant
        results.put(got)
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(repr(exc))


def test_processes_taking_at_once_never_get_more_than_the_bucket_holds(registry_settings: Settings) -> None:
    k, burst, processes = kind(), 60, 4
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=_drain_in_child, args=(registry_settings.database_url, k, burst, barrier, results))
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert all(isinstance(n, int) for n in got), got
    assert sum(got) == burst


class Bucket:
    """The token bucket as the docstring of ``tracking.registry.limits`` describes it, in
    milliseconds of an injected clock."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens: float | None = None
        self.at = 0

    def take(self, ms: int, wanted: int) -> tuple[int, float]:
        if self.tokens is None:
            held, self.at = self.burst, ms
        else:
            elapsed = (ms - self.at) / 1000.0
            held = min(self.burst, self.tokens + self.rate * (elapsed if elapsed > 0 else 0.0))
            self.at = max(self.at, ms)
        granted = min(wanted, math.floor(held + EPSILON))
        self.tokens = max(0.0, held - granted)
        return granted, self.tokens


@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rate=st.sampled_from([0.5, 1.0, 3.0, 10.0, 250.0, 1000.0]),
    burst=st.sampled_from([1.0, 2.5, 5.0, 50.0]),
    steps=st.lists(st.tuples(st.integers(-500, 3000), st.integers(0, 60)), min_size=1, max_size=12),
)
def test_the_bucket_behaves_as_its_model(
    registry_settings: Settings, rate: float, burst: float, steps: list[tuple[int, int]]
) -> None:
    k, model, ms = kind(), Bucket(rate, burst), 0
    for advance, wanted in steps:
        ms += advance
        expected, left = model.take(ms, wanted)
        grant = take(registry_settings, k, rate=rate, burst=burst, wanted=wanted, now=at(ms))
        note(f"at {ms} ms wanted {wanted}: {grant}, model {expected}, {left}")
        assert grant.granted == expected
        assert grant.left == pytest.approx(left, abs=1e-9)
        assert grant.wait == (0.0 if expected == wanted else pytest.approx((1.0 - left) / rate))
