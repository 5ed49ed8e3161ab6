"""Prometheus metrics served by a worker (``TRACKING_METRICS_PORT``), scraped over HTTP while
trackers start, crash, stop, lose their worker and are handed off.

The worker that serves the metrics (m1) reads a queue of its own, so trackers started from the test
run on the other workers, which the test kills or stops; m1's own supervisor sweeps restart what
they lose (on m1).
"""

from __future__ import annotations

import dataclasses
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cli.conftest import CANARY, CANARY_STACK
from tests.harness import Cluster, Stack, free_port, running, wait_for
from tests.integration.trackers import Counter

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

#: w2 runs the trackers the tests start; m1 (the ``metrics`` fixture) serves the metrics
pytestmark = [CANARY_STACK, pytest.mark.cluster(workers=("w2",), beat=False)]


class Metrics:
    """The metrics a worker serves on a port of its own, on a queue of its own."""

    def __init__(self, stack: Stack) -> None:
        self.port = free_port()
        self.stack = dataclasses.replace(
            stack, queue=f"{stack.queue}-metrics", extra_env={"TRACKING_METRICS_PORT": str(self.port)}
        )
        self.text = ""

    def scrape(self) -> Samples:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            self.text = response.read().decode()
        samples: Samples = {}
        for family in text_string_to_metric_families(self.text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def value(self, name: str, **labels: str) -> float:
        return self.scrape().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_value(self, name: str, expected: float, **labels: str) -> None:
        wait_for(
            lambda: self.value(name, **labels) == expected,
            timeout=30.0,
            interval=0.2,
            what=f"{name}{labels} to be {expected} (now {self.value(name, **labels)})",
        )


@pytest.fixture(scope="module")
def metrics(stack: Stack) -> Iterator[Metrics]:
    """m1 serves the metrics and reads a queue of its own: its supervisor's sweeps restart on m1
    what the workers the tests kill or stop lose."""
    metrics = Metrics(stack)
    with Cluster(metrics.stack) as serving:
        serving.worker("m1")
        yield metrics
    assert f"metrics on http://127.0.0.1:{metrics.port}/metrics" in serving.log("m1")


def test_the_worker_serves_counts_that_move_after_a_start_a_crash_and_a_stop(
    metrics: Metrics, cluster: Cluster, txid: str
) -> None:
    before = metrics.scrape()
    assert before[("tracking_registry_up", ())] == 1.0
    restarts = before.get(("tracking_restarts_total", (("kind", "Counter"),)), 0.0)

    Counter.start(txid)
    first = wait_for(lambda: running(Counter, txid), what="the tracker to run")
    metrics.wait_value("tracking_trackers", 1, kind="Counter", status="running")

    Counter.stop(txid, reason="crash")
    wait_for(lambda: running(Counter, txid, other_than=first.task_id), what="the restart")
    metrics.wait_value("tracking_restarts_total", restarts + 1, kind="Counter")
    assert metrics.value("tracking_trackers", kind="Counter", status="running") == 1

    Counter.stop(txid)
    metrics.wait_value("tracking_trackers", 0, kind="Counter", status="running")
    samples = metrics.scrape()
    for status in ("pending", "failed", "dead"):
        assert samples[("tracking_trackers", (("kind", "Counter"), ("status", status)))] == 0
    assert samples[("tracking_restarts_total", (("kind", "Counter"),))] == restarts + 1
    assert CANARY not in metrics.text


def test_a_lost_worker_counts_and_its_recovery_time_is_observed(
    metrics: Metrics, cluster: Cluster, txid: str
) -> None:
    kind = {"kind": "Counter"}
    lost = metrics.value("tracking_worker_lost_total", **kind)
    recovered = metrics.value("tracking_recovery_seconds_count", **kind)
    restarts = metrics.value("tracking_restarts_total", **kind)

    Counter.start(txid)
    first = wait_for(lambda: running(Counter, txid), what="the tracker to run")
    assert first.worker is not None and first.worker.startswith("w2@")
    cluster.kill("w2")
    second = wait_for(lambda: running(Counter, txid, other_than=first.task_id), what="the restart on m1")
    assert second.worker is not None and second.worker.startswith("m1@")

    metrics.wait_value("tracking_worker_lost_total", lost + 1, **kind)
    metrics.wait_value("tracking_recovery_seconds_count", recovered + 1, **kind)
    samples = metrics.scrape()
    assert samples[("tracking_restarts_total", (("kind", "Counter"),))] == restarts + 1
    assert samples[("tracking_recovery_seconds_sum", (("kind", "Counter"),))] > 0
    inf_bucket = ("tracking_recovery_seconds_bucket", (("kind", "Counter"), ("le", "+Inf")))
    assert samples[inf_bucket] == recovered + 1
    Counter.stop(txid)


def test_a_warm_shutdown_counts_a_handoff_and_no_restart(
    metrics: Metrics, cluster: Cluster, txid: str
) -> None:
    kind = {"kind": "Counter"}
    handoffs = metrics.value("tracking_handoffs_total", **kind)
    restarts = metrics.value("tracking_restarts_total", **kind)
    cluster.worker("w3")

    Counter.start(txid)
    wait_for(lambda: running(Counter, txid), what="the tracker to run on w3")
    assert cluster.stop("w3") == 0
    metrics.wait_value("tracking_handoffs_total", handoffs + 1, **kind)
    assert metrics.value("tracking_restarts_total", **kind) == restarts
    Counter.stop(txid)
