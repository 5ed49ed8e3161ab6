"""A worker paused past its lease, then resumed: its stale incarnations write nothing (fencing).

On PostgreSQL only. SQLite has one write lock for the whole database: a process paused while it
holds it stalls every other writer until it resumes, so no takeover can happen meanwhile (see
docs/guarantees.md). The embedded default is for one machine and trying things out.
"""

from __future__ import annotations

import signal

import pytest

from tests.chaos.test_workers import all_running, stale_registry_writes, stale_ticks_accepted, start_many
from tests.harness import TIMINGS, Cluster, wait_for
from tests.integration.trackers import Recorder

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.stacks("postgres-redis", "postgres-rabbitmq", tables=("ticks",)),
    pytest.mark.cluster(each_test=True),
]


def test_a_paused_worker_s_stale_incarnations_write_nothing_after_they_are_replaced(cluster: Cluster) -> None:
    cluster.worker("w1")
    cluster.beat()
    ids = start_many(20, "pause")
    wait_for(lambda: all_running(ids, "w1"), timeout=60, what="20 trackers running on w1")
    cluster.worker("w2")

    cluster.signal("w1", signal.SIGSTOP)
    try:
        # RabbitMQ may hand some restart messages to the paused worker, which holds them unacked
        # until its channel is found dead: the budget allows for that.
        budget = TIMINGS["lease_seconds"] + TIMINGS["sweep_seconds"] + 90
        wait_for(lambda: all_running(ids, "w2", epoch=2), timeout=budget, what="all 20 taken over by w2")
    finally:
        cluster.signal("w1", signal.SIGCONT)
    # Each stale incarnation finds itself fenced out and leaves: its task ends as "fenced".
    wait_for(lambda: cluster.log("w1").count("'fenced'") >= len(ids), timeout=30, what="w1's trackers fenced")
    wait_for(lambda: all((Recorder.get_state(t) or {}).get("ticks", 0) >= 5 for t in ids), timeout=30)
    assert stale_ticks_accepted(cluster.stack, ids) == 0
    assert stale_registry_writes(cluster.stack, ids) == 0
    assert all_running(ids, "w2", epoch=2)
