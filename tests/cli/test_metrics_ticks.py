"""The tick durations a worker measures in its own process and serves on its /metrics
(``tracking_tick_duration_seconds{kind}``), scraped over HTTP from a real ``celery worker`` that ran
the ticks.

The trackers (``TimedTicker``, ``SlowCrasher``) sleep inside each tick for a known time and record
each tick in a side table: that sleep is the behaviour measured, not a wait of the test.
"""

from __future__ import annotations

import dataclasses
import time
import urllib.request
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Cluster, Stack, free_port, running, wait_for
from tests.integration.trackers import EDGE_TICKS_TABLE, SlowCrasher, TimedTicker
from tracking import registry

#: how long each tick sleeps (a start argument of TimedTicker)
TICK_SECONDS = 0.2
NAME = "tracking_tick_duration_seconds"

pytestmark = [pytest.mark.stacks("postgres-redis", tables=("edges",))]


@dataclasses.dataclass
class Worker:
    """The one worker of the module: it runs the trackers and serves /metrics on ``port``."""

    stack: Stack
    port: int

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def ticks(self, kind: str) -> tuple[float, float]:
        """The count and sum of ``kind``'s tick durations this worker serves."""
        samples, labels = self.scrape(), (("kind", kind),)
        return samples.get((f"{NAME}_count", labels), 0.0), samples.get((f"{NAME}_sum", labels), 0.0)

    def bucket(self, kind: str, le: str) -> float:
        return self.scrape()[(f"{NAME}_bucket", (("kind", kind), ("le", le)))]

    def recorded_ticks(self, txid: str) -> int:
        """The ticks the tracker recorded as ended in its side table."""
        query = sa.text(f"SELECT count(*) FROM {EDGE_TICKS_TABLE} WHERE txid = :txid AND ended IS NOT NULL")
        with registry.engine(self.stack.settings()).connect() as conn:
            return int(conn.execute(query, {"txid": txid}).scalar_one())


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[Worker]:
    """One worker with TRACKING_METRICS_PORT set, on the stack's queue: every tick runs in it."""
    port = free_port()
    serving = dataclasses.replace(stack, extra_env={"TRACKING_METRICS_PORT": str(port)})
    with Cluster(serving) as cluster:
        cluster.worker("t1")
        yield Worker(stack, port)
    assert f"metrics on http://127.0.0.1:{port}/metrics" in cluster.log("t1")


def test_the_worker_serves_how_long_each_tick_took_by_kind(worker: Worker, txid: str) -> None:
    assert worker.ticks("TimedTicker") == (0.0, 0.0), "no tick ran in this worker yet"
    began = time.monotonic()
    TimedTicker.start(txid, tick_seconds=TICK_SECONDS)
    wait_for(lambda: running(TimedTicker, txid), what="the tracker to run")
    wait_for(lambda: worker.ticks("TimedTicker")[0] >= 5, timeout=30.0, interval=0.2, what="5 ticks served")

    TimedTicker.stop(txid)  # returns once the tracker has exited: its last tick ended and was observed
    elapsed = time.monotonic() - began
    count, total = worker.ticks("TimedTicker")
    assert count == worker.recorded_ticks(txid) >= 5, "each tick observed once, as it ran"
    assert count * TICK_SECONDS <= total <= elapsed, "each observation is at least the tick's own sleep"
    assert worker.bucket("TimedTicker", "0.1") == 0, "no tick was quicker than its sleep"
    assert worker.bucket("TimedTicker", "+Inf") == count
    assert worker.ticks("SlowCrasher") == (0.0, 0.0), "kinds are counted apart"


def test_a_tick_that_crashes_is_observed_too(worker: Worker, txid: str) -> None:
    before, _ = worker.ticks("SlowCrasher")
    SlowCrasher.start(txid, tick_seconds=TICK_SECONDS)
    wait_for(
        lambda: worker.ticks("SlowCrasher")[0] >= before + 3,
        timeout=30.0,
        interval=0.2,
        what="3 crashed ticks served",
    )
    SlowCrasher.stop(txid)
    count, total = worker.ticks("SlowCrasher")
    assert count - before == worker.recorded_ticks(txid) >= 3
    assert total >= count * TICK_SECONDS
