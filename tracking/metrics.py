"""Prometheus metrics read from the registry at scrape time (``pip install "tracking[prometheus]"``;
imported as ``tracking.contrib.prometheus`` too).

A worker started with ``TRACKING_METRICS_PORT`` serves them on ``/metrics`` at
``TRACKING_METRICS_ADDRESS`` (loopback unless told). Elsewhere (a web process, a sidecar), register
:class:`RegistryCollector` on a ``prometheus_client`` registry yourself, or call :func:`serve`.

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
=============================================== ==========================================================

The values are the whole cluster's, read from the shared registry: every process that serves them
reports the same numbers, so scrape one worker per cluster or aggregate with ``max``, not ``sum``.

Counters and the histogram cover the registry's whole history (``tracking_events``): the first scrape
of a process counts all of it, later scrapes only the events written since. An event is counted once
it is ``settle_seconds`` old (5 by default), so that one written by a transaction still open when
the scrape runs is not skipped; counters therefore lag by that long.
"""

from __future__ import annotations

import collections
import logging
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
        if not buckets or any(b <= 0 for b in buckets):
            raise ValueError("buckets must be positive numbers of seconds")
        self.settings = settings
        self.settle_seconds = settle_seconds
        self.buckets = tuple(sorted({float(b) for b in buckets}))
        self._lock = threading.Lock()
        #: the last event counted
        self._after = 0
        self._kinds: set[str] = set()
        self._counts: dict[str, collections.Counter[str]] = {
            name: collections.Counter() for name in ("restarts", *COUNTED_EVENTS)
        }
        #: per kind: how many recoveries fell in each bucket (the last one is +Inf), and their sum
        self._recovery_buckets: dict[str, list[int]] = {}
        self._recovery_sum: dict[str, float] = collections.defaultdict(float)

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
            self._observe_recovery(kind, seconds)
        self._after = upto

    def _observe_recovery(self, kind: str, seconds: float) -> None:
        self._kinds.add(kind)
        counts = self._recovery_buckets.setdefault(kind, [0] * (len(self.buckets) + 1))
        index = next((i for i, bound in enumerate(self.buckets) if seconds <= bound), len(self.buckets))
        counts[index] += 1
        self._recovery_sum[kind] += seconds

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

        histogram = HistogramMetricFamily(
            "tracking_recovery_seconds",
            "Seconds from a lost worker's tracker being found to its next incarnation running, by kind.",
            labels=["kind"],
        )
        for kind in kinds:
            per_bucket = self._recovery_buckets.get(kind, [0] * (len(self.buckets) + 1))
            cumulative, running_total = [], 0
            for bound, n in zip([*self.buckets, float("inf")], per_bucket, strict=True):
                running_total += n
                cumulative.append(("+Inf" if bound == float("inf") else str(bound), float(running_total)))
            histogram.add_metric([kind], cumulative, sum_value=self._recovery_sum.get(kind, 0.0))
        yield histogram

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


_served: dict[tuple[str, int], int] = {}
_served_lock = threading.Lock()


def serve(settings: Settings, collector_registry: CollectorRegistry = REGISTRY) -> int:
    """Register a :class:`RegistryCollector` and serve ``/metrics`` on ``settings.metrics_port`` at
    ``settings.metrics_address`` from a daemon thread. Returns the port (useful with port 0).

    Once per process and address: a second call for the same port returns at once.
    """
    if settings.metrics_port is None:
        raise ValueError("TRACKING_METRICS_PORT is not set")
    key = (settings.metrics_address, settings.metrics_port)
    with _served_lock:
        if key in _served:
            return _served[key]
        collector = RegistryCollector(settings)
        collector_registry.register(collector)
        try:
            server, _thread = start_http_server(
                settings.metrics_port, addr=settings.metrics_address, registry=collector_registry
            )
        except OSError:
            collector_registry.unregister(collector)
            raise
        port = int(server.server_port)
        _served[key] = port
    log.info("tracking: metrics on http://%s:%d/metrics", settings.metrics_address, port)
    return port
