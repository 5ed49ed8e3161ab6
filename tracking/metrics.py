"""Prometheus metrics read from the registry at scrape time, and the tick durations of this worker
process (``pip install "tracking[prometheus]"``; imported as ``tracking.contrib.prometheus`` too).

A worker started with ``TRACKING_METRICS_PORT`` serves them on ``/metrics`` at
``TRACKING_METRICS_ADDRESS`` (loopback unless told). Elsewhere (a web process, a sidecar), register
:class:`RegistryCollector` on a ``prometheus_client`` registry yourself, or call :func:`serve`; a
worker exposing its own ``prometheus_client`` endpoint registers :class:`TickDurationCollector` too.

=============================================== ==========================================================
``tracking_trackers{kind,status}``               gauge: registry entries, by status (each of ``Status``)
``tracking_restarts_total{kind}``                counter: restarts decided (at once or after a backoff)
``tracking_crashes_total{kind}``                 counter: incarnations that crashed (init, tick, a handler)
``tracking_handoffs_total{kind}``                counter: trackers handed off by a worker shutting down
``tracking_worker_lost_total{kind}``             counter: trackers whose worker stopped renewing its lease
``tracking_recovery_seconds{kind}``              histogram: from a lost worker being found to the
                                                 restarted incarnation running (same tracker, next epoch)
``tracking_supervisor_last_sweep_age_seconds``   gauge: since the newest supervisor sweep (absent before one)
``tracking_registry_up``                         gauge: 1 if this scrape could read the registry, else 0
``tracking_tick_duration_seconds{kind}``         histogram, **per worker process**: how long each ``tick()``
                                                 call took in this process (not the checkpoint after it)
=============================================== ==========================================================

The values are the whole cluster's, read from the shared registry: every process that serves them
reports the same numbers, so scrape one worker per cluster or aggregate with ``max``, not ``sum``.
All but ``tracking_tick_duration_seconds``: measured in the process that ran the ticks
(:data:`tracking.timings.tick_durations`) since it started, never written to the registry, so each
worker reports only its own. Scrape every worker and ``sum`` across them, for example
``sum by (kind, le) (rate(tracking_tick_duration_seconds_bucket[5m]))``.

Counters and the histogram cover the registry's whole history (``tracking_events``): the first scrape
of a process counts all of it, later scrapes only the events written since. An event is counted once
it is ``settle_seconds`` old (5 by default), so that one written by a transaction still open when
the scrape runs is not skipped; counters therefore lag by that long.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from tracking import registry
from tracking.exceptions import RegistryUnavailable
from tracking.models import Status
from tracking.redact import redact_url
from tracking.settings import Settings
from tracking.timings import Histogram, Observed, rate_limit_waits, tick_durations, tick_lateness

log = logging.getLogger("tracking.metrics")

#: the statuses reported for every kind, 0 when it has none
STATUSES: tuple[Status, ...] = tuple(Status)
#: recovery takes a lease (30 s by default) plus a sweep: buckets around that
RECOVERY_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0, 600.0)
#: the counters and the events they count (restarts are counted by registry.count_restarts)
COUNTED_EVENTS = {"crashes": "crashed", "handoffs": "handoff", "worker_lost": "worker_lost"}


class RegistryCollector(Collector):
    """A ``prometheus_client`` collector that reads the registry when it is scraped.

    Safe to scrape from several threads at once (one scrape reads the registry at a time). Cost of a
    scrape: one aggregate over the live entries, and a few indexed reads of the events written
    since the previous scrape.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        settle_seconds: float = 5.0,
        buckets: Sequence[float] = RECOVERY_BUCKETS,
    ) -> None:
        if settle_seconds < 0:
            raise ValueError("settle_seconds must not be negative")
        self.settings = settings
        self.settle_seconds = settle_seconds
        self._recoveries = Histogram(buckets)
        self.buckets = self._recoveries.buckets
        self._lock = threading.Lock()
        #: the last event counted
        self._after = 0
        self._kinds: set[str] = set()
        self._counts: dict[str, collections.Counter[str]] = {
            name: collections.Counter() for name in ("restarts", *COUNTED_EVENTS)
        }

    # -- prometheus_client's interface ---------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        # Names only: registering the collector must not query the database.
        return list(self._families(census=None, sweep_age=None, up=True))

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            census: list[tuple[str, Status, int]] | None
            try:
                self._count_new_events()
                census = registry.census(self.settings)
                sweep_age = self._sweep_age()
                up = True
            except RegistryUnavailable as exc:
                log.warning("metrics: the registry cannot be read: %s", redact_url(str(exc)))
                census, sweep_age, up = None, None, False
            return list(self._families(census=census, sweep_age=sweep_age, up=up))

    # -- reading the registry ------------------------------------------------------------------------

    def _count_new_events(self) -> None:
        settings, after = self.settings, self._after
        upto = registry.settled_event_id(settings, after, self.settle_seconds)
        if upto == after:
            return
        restarts = registry.count_restarts(settings, after, upto)
        counted = registry.count_events(settings, after, upto, list(COUNTED_EVENTS.values()))
        recoveries = registry.recoveries(settings, after, upto)
        # Everything was read: apply it at once, so a failed read is retried whole next time.
        for kind, n in restarts:
            self._counts["restarts"][kind] += n
            self._kinds.add(kind)
        names = {event: name for name, event in COUNTED_EVENTS.items()}
        for kind, event, n in counted:
            self._counts[names[event]][kind] += n
            self._kinds.add(kind)
        for kind, seconds in recoveries:
            self._kinds.add(kind)
            self._recoveries.observe(kind, max(0.0, seconds))
        self._after = upto

    def _sweep_age(self) -> float | None:
        sweeps = registry.last_sweeps(self.settings)
        latest: datetime | None = max((s.last_sweep_at for s in sweeps), default=None)
        if latest is None:
            return None
        return max(0.0, (registry.database_now(self.settings) - latest).total_seconds())

    # -- the metric families -------------------------------------------------------------------------

    def _families(
        self, *, census: list[tuple[str, Status, int]] | None, sweep_age: float | None, up: bool
    ) -> Iterator[Metric]:
        if census is not None:
            self._kinds.update(kind for kind, _status, _n in census)
        kinds = sorted(self._kinds)

        entries = GaugeMetricFamily(
            "tracking_trackers", "Registry entries, by kind and status.", labels=["kind", "status"]
        )
        if census is not None:
            present = {(kind, status): n for kind, status, n in census}
            for kind in kinds:
                for status in STATUSES:
                    entries.add_metric([kind, status.value], present.get((kind, status), 0))
        yield entries

        documentation = {
            "restarts": "Restarts decided (at once or after a backoff), by kind.",
            "crashes": "Incarnations that crashed (init, tick or a handler raised), by kind.",
            "handoffs": "Trackers handed off to another worker by a worker shutting down, by kind.",
            "worker_lost": "Trackers whose worker stopped renewing its lease, by kind.",
        }
        for name, counts in self._counts.items():
            counter = CounterMetricFamily(f"tracking_{name}", documentation[name], labels=["kind"])
            for kind in kinds:
                counter.add_metric([kind], counts[kind])
            yield counter

        yield histogram_family(
            "tracking_recovery_seconds",
            "Seconds from a lost worker's tracker being found to its next incarnation running, by kind.",
            {kind: self._recoveries.get(kind) for kind in kinds},
        )

        age = GaugeMetricFamily(
            "tracking_supervisor_last_sweep_age_seconds",
            "Seconds since the newest supervisor sweep recorded in the registry.",
        )
        if sweep_age is not None:
            age.add_metric([], sweep_age)
        yield age

        yield GaugeMetricFamily(
            "tracking_registry_up", "1 if this scrape could read the registry, else 0.", value=1 if up else 0
        )


#: the histograms a worker process measures itself: (metric name, what it says, histogram)
TIMINGS = (
    (
        "tracking_tick_duration_seconds",
        "Seconds each tick() call took in this worker process (not its checkpoint), by kind.",
        tick_durations,
    ),
    (
        "tracking_tick_lateness_seconds",
        "Seconds after its scheduled time each tick started in this worker process, by kind.",
        tick_lateness,
    ),
    (
        "tracking_rate_limit_wait_seconds",
        "Seconds each wait for a kind's rate limit took in this worker process (a tick's, or a "
        "tick_many batch's), by kind.",
        rate_limit_waits,
    ),
)


class TickDurationCollector(Collector):
    """A ``prometheus_client`` collector of the timings measured in this process: tick durations
    (``tracking_tick_duration_seconds{kind}``), lateness (``tracking_tick_lateness_seconds{kind}``)
    and rate-limit waits (``tracking_rate_limit_wait_seconds{kind}``); only a process that runs
    trackers has any. ``histogram`` replaces the tick durations' (tests)."""

    def __init__(self, histogram: Histogram = tick_durations) -> None:
        self.timings = [(n, d, histogram if h is tick_durations else h) for n, d, h in TIMINGS]

    def describe(self) -> Iterable[Metric]:
        return [histogram_family(name, doc, {}) for name, doc, _ in self.timings]

    def collect(self) -> Iterable[Metric]:
        return [histogram_family(name, doc, h.snapshot()) for name, doc, h in self.timings]


def histogram_family(name: str, documentation: str, by_kind: dict[str, Observed]) -> HistogramMetricFamily:
    """A histogram family with one series per kind, from what :class:`Histogram` observed."""
    family = HistogramMetricFamily(name, documentation, labels=["kind"])
    for kind in sorted(by_kind):
        observed = by_kind[kind]
        cumulative = observed.cumulative()
        buckets = [("+Inf" if bound == math.inf else str(bound), float(n)) for bound, n in cumulative]
        family.add_metric([kind], buckets, sum_value=observed.sum)
    return family


_served: dict[tuple[str, int], int] = {}
_served_lock = threading.Lock()


def serve(settings: Settings, collector_registry: CollectorRegistry = REGISTRY) -> int:
    """Register a :class:`RegistryCollector` and a :class:`TickDurationCollector` and serve
    ``/metrics`` on ``settings.metrics_port`` at ``settings.metrics_address`` from a daemon thread.
    Returns the port (useful with port 0).

    Once per process and address: a second call for the same port returns at once.
    """
    if settings.metrics_port is None:
        raise ValueError("TRACKING_METRICS_PORT is not set")
    key = (settings.metrics_address, settings.metrics_port)
    with _served_lock:
        if key in _served:
            return _served[key]
        collectors = [RegistryCollector(settings), TickDurationCollector()]
        for collector in collectors:
            collector_registry.register(collector)
        try:
            server, _thread = start_http_server(
                settings.metrics_port, addr=settings.metrics_address, registry=collector_registry
            )
        except OSError:
            for collector in collectors:
                collector_registry.unregister(collector)
            raise
        port = int(server.server_port)
        _served[key] = port
    log.info("tracking: metrics on http://%s:%d/metrics", settings.metrics_address, port)
    return port
