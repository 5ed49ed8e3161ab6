"""A kind's rate limit holds across worker processes: three workers together tick a limited kind
no faster than its limit (plus its burst and the ticks in flight). The window is counted in ticks,
not timed: the test waits until the kind has ticked a number of times, then compares that count
with the limit over the time it took (a limiter that held them far below the rate would time out
the wait; the rate reached is printed)."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.harness import Cluster, wait_for
from tests.integration.trackers import Limited, LimitedParked
from tracking.worker.ratelimit import Limit, RateLimiter

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.stacks("sqlite-embedded", "postgres-redis"),
    pytest.mark.cluster(workers=("r1", "r2", "r3"), beat=False),
]

#: ticks counted in the window
WINDOW_TICKS = 200


def total_ticks(kind: type[Limited] | type[LimitedParked], ids: list[str]) -> int:
    states = [kind.get_state(txid) for txid in ids]
    return sum(int(state["ticks"]) for state in states if state is not None)


@pytest.mark.parametrize("kind", [Limited, LimitedParked], ids=lambda k: k.__name__)
def test_a_kinds_rate_limit_holds_across_three_worker_processes(
    cluster: Cluster, kind: type[Limited] | type[LimitedParked]
) -> None:
    ids = [f"txn_limited_{uuid.uuid4().hex[:10]}_{i}" for i in range(40)]
    kind.start_many(ids)
    rate = kind.rate_limit
    assert rate is not None
    wait_for(lambda: total_ticks(kind, ids) >= 20, timeout=60, what="the trackers to tick")
    began, first = time.monotonic(), total_ticks(kind, ids)
    wait_for(
        lambda: total_ticks(kind, ids) >= first + WINDOW_TICKS,
        timeout=10 * WINDOW_TICKS / rate,
        interval=0.05,
        what=f"{WINDOW_TICKS} more ticks",
    )
    elapsed, ticked = time.monotonic() - began, total_ticks(kind, ids) - first
    limit = Limit(rate)
    # the bucket's bound, plus what the three processes may hold unspent and the ticks in flight
    # (ticked but not yet checkpointed, or checkpointed before the first read)
    stock = 3 * RateLimiter(cluster.stack.settings()).chunk(limit)
    bound = rate * (elapsed + 0.2) + limit.capacity + stock + len(ids)
    print(f"{kind.__name__}: {ticked} ticks in {elapsed:.2f} s = {ticked / elapsed:.1f}/s (limit {rate:g}/s)")
    assert ticked <= bound, f"{ticked} ticks in {elapsed:.2f} s: over the limit's {bound:.0f}"
    for txid in ids:
        kind.stop(txid)
