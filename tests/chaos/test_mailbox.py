"""A thousand casts to one tracker through an abnormal stop and a SIGKILLed worker."""

from __future__ import annotations

import signal

import pytest

from tests.harness import TIMINGS, Cluster, running, wait_for
from tests.integration.trackers import Mailman

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.stacks("postgres-redis", "postgres-rabbitmq", "sqlite-embedded", tables=("ticks",)),
    pytest.mark.cluster(each_test=True, workers=("w1", "w2"), beat=True),
]


def test_a_thousand_casts_are_each_handled_once_in_order_through_a_crash_and_a_killed_worker(
    cluster: Cluster, txid: str
) -> None:
    Mailman.start(txid)
    first = wait_for(lambda: running(Mailman, txid))

    for n in range(0, 400):
        Mailman.cast(txid, {"n": n})
    Mailman.stop(txid, reason="crash")
    for n in range(400, 700):
        Mailman.cast(txid, {"n": n})

    owner = wait_for(lambda: running(Mailman, txid, after_epoch=first.epoch))
    assert owner.worker is not None
    victim = owner.worker.split("@")[0]
    cluster.signal(victim, signal.SIGKILL)
    cluster.kill(victim)
    for n in range(700, 1000):  # accepted while the tracker waits for its restart
        Mailman.cast(txid, {"n": n})
    cluster.worker(victim)

    budget = TIMINGS["lease_seconds"] + TIMINGS["sweep_seconds"] + 60
    seen = Mailman.call(txid, "seen", timeout=budget)
    assert seen == list(range(1000))
    final = Mailman.lookup(txid)
    assert final is not None and final.restarts == 2
    Mailman.stop(txid)
