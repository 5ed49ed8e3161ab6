"""The process-local histogram of tick durations (tracking.timings) and how /metrics renders it:
bucket counts, sum and count, concurrent observations, and a worker that runs without
prometheus_client."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.harness import ROOT
from tracking.contrib.prometheus import TickDurationCollector
from tracking.timings import TICK_BUCKETS, Histogram, Observed


def test_each_observation_falls_in_the_first_bucket_at_or_above_it() -> None:
    histogram = Histogram((0.1, 1.0, 10.0))
    for seconds in (0.0, 0.1, 0.5, 1.0, 1.5, 10.0, 99.0):
        histogram.observe("a", seconds)
    observed = histogram.get("a")
    assert observed.counts == (2, 2, 2, 1)  # <= 0.1, <= 1, <= 10, +Inf
    assert observed.cumulative() == [(0.1, 2), (1.0, 4), (10.0, 6), (math.inf, 7)]
    assert observed.count == 7
    assert observed.sum == pytest.approx(112.1)


def test_labels_are_counted_apart_and_an_unseen_one_is_all_zeros() -> None:
    histogram = Histogram((1.0,))
    histogram.observe("a", 0.5)
    histogram.observe("b", 2.0)
    histogram.observe("b", 3.0)
    snapshot = histogram.snapshot()
    assert sorted(snapshot) == ["a", "b"]
    assert (snapshot["a"].counts, snapshot["a"].sum) == ((1, 0), 0.5)
    assert (snapshot["b"].counts, snapshot["b"].sum) == ((0, 2), 5.0)
    unseen = histogram.get("c")
    assert (unseen.counts, unseen.count, unseen.sum) == ((0, 0), 0, 0.0)
    assert "c" not in histogram.snapshot(), "reading a label does not add it"


@pytest.mark.parametrize("seconds", [-0.001, math.nan])
def test_a_negative_or_nan_observation_is_refused(seconds: float) -> None:
    histogram = Histogram()
    with pytest.raises(ValueError, match="non-negative"):
        histogram.observe("a", seconds)
    assert histogram.snapshot() == {}


@pytest.mark.parametrize("buckets", [(), (0.0, 1.0), (-1.0,), (math.inf,), (math.nan,)])
def test_buckets_must_be_positive_finite_seconds(buckets: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="buckets"):
        Histogram(buckets)


def test_the_default_buckets_run_from_five_milliseconds_to_a_minute() -> None:
    assert Histogram().buckets == TICK_BUCKETS
    assert (TICK_BUCKETS[0], TICK_BUCKETS[-1]) == (0.005, 60.0)
    assert list(TICK_BUCKETS) == sorted(set(TICK_BUCKETS))


def test_concurrent_observations_are_all_counted() -> None:
    # Without the lock, threads that see a new label at once each make its row and one row's counts
    # are lost: in some rounds out of twenty, seen in every run of this test (Python 3.11, 2 cores).
    threads, each, rounds = 8, 600, 20

    def one_round() -> dict[str, Observed]:
        histogram = Histogram((0.25, 1.0))
        start = threading.Barrier(threads)

        def observe() -> None:
            start.wait()
            for i in range(each):
                # A new label every three observations; values a float adds exactly, in any order.
                histogram.observe(f"kind-{i // 3}", 0.25 if i % 2 else 0.5)

        workers = [threading.Thread(target=observe) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        return histogram.snapshot()

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    try:
        snapshots = [one_round() for _ in range(rounds)]
    finally:
        sys.setswitchinterval(switch)
    for snapshot in snapshots:
        assert len(snapshot) == each // 3
        assert sum(o.count for o in snapshot.values()) == threads * each
        assert sum(o.counts[0] for o in snapshot.values()) == threads * each // 2
        assert sum(o.counts[1] for o in snapshot.values()) == threads * each // 2
        assert sum(o.sum for o in snapshot.values()) == threads * each // 2 * 0.75


def test_a_timed_block_is_observed_whether_it_returns_or_raises() -> None:
    histogram = Histogram((0.001, 10.0))
    with histogram.time("a"):
        deadline = time.perf_counter() + 0.01
        while time.perf_counter() < deadline:  # busy: what is measured is this block's own time
            pass
    with pytest.raises(RuntimeError), histogram.time("a"):
        raise RuntimeError("the source is on fire")
    observed = histogram.get("a")
    assert observed.count == 2
    assert observed.counts[0] == 1, "the block that raised at once"
    assert 0.01 <= observed.sum < 10.0


def test_the_collector_renders_a_prometheus_histogram_by_kind() -> None:
    histogram = Histogram((0.1, 1.0))
    histogram.observe("Poller", 0.05)
    histogram.observe("Poller", 0.5)
    histogram.observe("Poller", 5.0)
    registry = CollectorRegistry()
    registry.register(TickDurationCollector(histogram))
    name, kind = "tracking_tick_duration_seconds", {"kind": "Poller"}
    assert registry.get_sample_value(f"{name}_bucket", {**kind, "le": "0.1"}) == 1
    assert registry.get_sample_value(f"{name}_bucket", {**kind, "le": "1.0"}) == 2
    assert registry.get_sample_value(f"{name}_bucket", {**kind, "le": "+Inf"}) == 3
    assert registry.get_sample_value(f"{name}_count", kind) == 3
    assert registry.get_sample_value(f"{name}_sum", kind) == pytest.approx(5.55)
    assert f"# TYPE {name} histogram" in generate_latest(registry).decode()


def test_an_empty_collector_renders_no_series() -> None:
    registry = CollectorRegistry()
    registry.register(TickDurationCollector(Histogram()))
    text = generate_latest(registry).decode()
    assert "# TYPE tracking_tick_duration_seconds histogram" in text
    assert "tracking_tick_duration_seconds_count" not in text


def test_the_worker_measures_ticks_without_prometheus_client_installed() -> None:
    # A subprocess: prometheus_client is made unimportable before tracking is imported.
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import tracking.celery, tracking.worker.runner\n"
        "from tracking.timings import tick_durations\n"
        "with tick_durations.time('k'): pass\n"
        "assert tick_durations.get('k').count == 1\n"
        "try:\n"
        "    import tracking.metrics\n"
        "except ImportError:\n"
        "    print('no metrics module, as expected')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "no metrics module, as expected" in result.stdout
