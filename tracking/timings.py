"""Timings measured inside a worker process: how long each tracker's ``tick()`` takes, how late
each tick started, and how long ticks waited for their kind's rate limit.

Tick durations are not written to the registry (a row per tick would cost far more than it
measures): each worker process keeps them in :data:`tick_durations`, a small histogram per kind in
fixed buckets, and serves them on ``/metrics`` as ``tracking_tick_duration_seconds``,
``tracking_tick_lateness_seconds`` and ``tracking_rate_limit_wait_seconds`` (see
:mod:`tracking.metrics`). The figures are this process's own, since it started: sum them across
workers.

This module needs nothing but the standard library, so a worker without ``prometheus_client``
measures too (and serves nothing).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

#: seconds: from a quick answer of a nearby source to a poll that waits out a minute-long timeout
TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclasses.dataclass(frozen=True)
class Observed:
    """What a histogram holds for one label: how many observations fell in each bucket (the last
    one is ``+Inf``), their sum and their count."""

    buckets: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= it)`` for each bucket, ``+Inf`` last: Prometheus' form."""
        total, result = 0, []
        for bound, n in zip((*self.buckets, math.inf), self.counts, strict=True):
            total += n
            result.append((bound, total))
        return result


class Histogram:
    """Observations in seconds, by label, counted in fixed buckets (each an upper bound, as
    Prometheus' ``le``). Safe to observe from many threads at once; its size is one row of
    counters per label seen."""

    def __init__(self, buckets: Sequence[float] = TICK_BUCKETS) -> None:
        if not buckets or any(not (b > 0) or math.isinf(b) for b in buckets):
            raise ValueError("buckets must be positive, finite numbers of seconds")
        self.buckets: tuple[float, ...] = tuple(sorted({float(b) for b in buckets}))
        self._lock = threading.Lock()
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def observe(self, label: str, seconds: float) -> None:
        """Count one observation of ``seconds`` under ``label``."""
        if not seconds >= 0:  # also refuses NaN
            raise ValueError(f"an observation must be a non-negative number of seconds, not {seconds!r}")
        index = bisect.bisect_left(self.buckets, seconds)  # the first bound >= seconds
        with self._lock:
            counts = self._counts.get(label)
            if counts is None:
                counts = self._counts[label] = [0] * (len(self.buckets) + 1)
                self._sums[label] = 0.0
            counts[index] += 1
            self._sums[label] += seconds

    @contextmanager
    def time(self, label: str) -> Iterator[None]:
        """Observe how long the ``with`` block takes, whether it returns or raises."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(label, time.perf_counter() - started)

    def get(self, label: str) -> Observed:
        """What was observed under ``label`` (all zeros if nothing was)."""
        with self._lock:
            counts = tuple(self._counts.get(label, [0] * (len(self.buckets) + 1)))
            return Observed(self.buckets, counts, self._sums.get(label, 0.0))

    def snapshot(self) -> dict[str, Observed]:
        """Every label seen and what was observed under it, read at one instant."""
        with self._lock:
            return {
                label: Observed(self.buckets, tuple(counts), self._sums[label])
                for label, counts in self._counts.items()
            }


#: this process's tick durations, by tracker kind: the ``tick()`` call alone (not the checkpoint
#: written after it), including ticks that raise (``Done`` or a crash)
tick_durations = Histogram(TICK_BUCKETS)

#: seconds: a tick on time to one a sweep period or a backed-up rate limit late
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)

#: this process's tick lateness, by tracker kind: how long after its scheduled time each tick
#: started (a parked tracker's includes its wake-up, its batch's message and any rate-limit wait)
tick_lateness = Histogram(LATENESS_BUCKETS)

#: how long ticks waited for their kind's rate limit in this process, by kind (kinds with a limit
#: only; one observation per tick, one per batch ticked by ``tick_many``)
rate_limit_waits = Histogram(LATENESS_BUCKETS)
