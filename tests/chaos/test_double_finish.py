"""How a tracker's final side effect can land twice, and whether its fencing token tells the copies apart.

Found while looking into a soak (about 100 trackers, 3 workers, a random SIGKILL every 10 to 20 s and
one SIGSTOP past the lease) that counted two transactions finished twice in a side table written by
the final tick before it raises ``Done``. Each test below stops a worker at one point of the final
tick of a GatedFinisher, which waits for the test to open a gate before (or after) writing its
"finished" row (with its token, unfenced, and whether the registry still showed it as the running
incarnation at that moment):

- SIGKILL after the write, before the exit is recorded: the restarted incarnation resumes from the
  last checkpoint and runs the final tick again (ticks are at least once). The second finish has
  the higher token, so a receiver refusing ``token < highest seen`` takes both: it needs to be
  idempotent per transaction ID.
- SIGSTOP after the write, before the exit: the same, as a successor takes over after the lease.
- SIGSTOP before the write (mid final tick): after SIGCONT the old tick completes its write (a
  zombie effect) after the successor's, under the lower token: a token check refuses it, and so
  does a write conditional on the registry (the entry no longer runs under that token).

A warm shutdown during the final tick (a handoff that does not wait for the tick to end) is the
fourth way: ``test_edges.test_a_warm_shutdown_during_the_final_tick_finishes_the_tracker_once``.

On PostgreSQL only: a worker paused while it holds SQLite's single write lock stalls every writer.
"""

from __future__ import annotations

import signal

import pytest

from tests.chaos.test_edges import (
    Finish,
    accepted_by_token_check,
    finishes,
    open_gate,
    waiting_at_gate,
    worker_running,
)
from tests.chaos.test_workers import done_counts
from tests.harness import TIMINGS, Cluster, Stack, wait_for
from tests.integration.trackers import GatedFinisher

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.stacks("postgres-redis", tables=("ticks", "edges")),
    pytest.mark.cluster(each_test=True, workers=("w1", "w2"), beat=True),
]

#: a lost worker's trackers tick again within this (a restart message may first go to the paused
#: worker's pending BRPOP, and is published again after the start grace)
TAKEOVER = TIMINGS["lease_seconds"] + TIMINGS["sweep_seconds"] + TIMINGS["start_grace_seconds"] + 20


def start_at_the_gate(cluster: Cluster, txid: str, gate: str) -> str:
    """Start a GatedFinisher and wait until its first incarnation waits at its gate; returns the
    name of the worker that runs it."""
    GatedFinisher.start(txid, until=3, gate=gate)
    wait_for(lambda: waiting_at_gate(cluster.stack, txid), timeout=30, what="the final tick at its gate")
    return worker_running(GatedFinisher, txid)


def let_the_successor_finish(stack: Stack, txid: str, epoch: int) -> None:
    """Wait until an incarnation after ``epoch`` (the restarted one, or the successor of a paused
    one) waits at its gate in its final tick, open the gate, and wait until the tracker has finished."""
    wait_for(
        lambda: [e for e in waiting_at_gate(stack, txid) if e > epoch],
        timeout=TAKEOVER,
        what=f"the final tick of an incarnation after {epoch}",
    )
    open_gate(stack, txid)
    wait_for(lambda: GatedFinisher.lookup(txid) is None, timeout=30, what="the tracker to finish")


def describe(rows: list[Finish]) -> str:
    return ", ".join(f"token {r.epoch} pid {r.pid} current {r.current}" for r in rows)


def check_finished_again_under_a_higher_token(stack: Stack, txid: str) -> None:
    """The final tick ran twice (ticks are at least once), the repeat under the higher token, and
    the exit was recorded once."""
    rows = finishes(stack, txid)
    assert len(rows) == 2, f"the final tick is at least once: expected it twice, got {describe(rows)}"
    assert rows[1].epoch > rows[0].epoch, f"the repeat must carry a higher token: {describe(rows)}"
    # Both were written by the incarnation the registry showed running: neither a token check
    # nor a registry-fenced write refuses the repeat. The receiver must be idempotent per ID.
    assert all(r.current for r in rows), describe(rows)
    assert accepted_by_token_check(rows) == rows
    assert done_counts(stack, [txid])[txid] == 1


def test_a_worker_killed_between_the_final_effect_and_the_exit_finishes_again_under_a_higher_token(
    cluster: Cluster, txid: str
) -> None:
    name = start_at_the_gate(cluster, txid, gate="after")
    first = wait_for(lambda: finishes(cluster.stack, txid), timeout=10, what="the finish")
    cluster.kill(name)  # SIGKILL: the exit is never recorded

    let_the_successor_finish(cluster.stack, txid, first[0].epoch)
    check_finished_again_under_a_higher_token(cluster.stack, txid)


def test_a_worker_paused_between_the_final_effect_and_the_exit_finishes_again_under_a_higher_token(
    cluster: Cluster, txid: str
) -> None:
    name = start_at_the_gate(cluster, txid, gate="after")
    first = wait_for(lambda: finishes(cluster.stack, txid), timeout=10, what="the finish")
    cluster.signal(name, signal.SIGSTOP)
    try:
        let_the_successor_finish(cluster.stack, txid, first[0].epoch)
    finally:
        cluster.signal(name, signal.SIGCONT)
    # The resumed incarnation raises Done, finds its exit fenced out, and writes nothing more.
    wait_for(lambda: "'fenced'" in cluster.log(name), timeout=30, what=f"{name}'s incarnation fenced")
    check_finished_again_under_a_higher_token(cluster.stack, txid)


def test_a_worker_paused_mid_final_tick_writes_a_zombie_finish_that_its_older_token_gives_away(
    cluster: Cluster, txid: str
) -> None:
    name = start_at_the_gate(cluster, txid, gate="before")
    paused_epoch = waiting_at_gate(cluster.stack, txid)[0]
    cluster.signal(name, signal.SIGSTOP)
    try:
        let_the_successor_finish(cluster.stack, txid, paused_epoch)
        assert [r.epoch for r in finishes(cluster.stack, txid)] == [paused_epoch + 1]
    finally:
        cluster.signal(name, signal.SIGCONT)
    # The paused tick goes on where it stopped: its write is not the runtime's to prevent.
    wait_for(lambda: len(finishes(cluster.stack, txid)) > 1, timeout=30, what="the paused tick's write")
    rows = finishes(cluster.stack, txid)

    assert len(rows) == 2, describe(rows)
    successor, zombie = rows
    assert zombie.epoch == paused_epoch < successor.epoch, (
        f"the zombie's token is the older: {describe(rows)}"
    )
    assert accepted_by_token_check(rows) == [successor], "a receiver refusing token < highest refuses it"
    assert not zombie.current, "a write conditional on the registry (FENCED_TICK) would be refused"
    assert done_counts(cluster.stack, [txid])[txid] == 1, "the zombie recorded no exit"
