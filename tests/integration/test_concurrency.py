"""One live incarnation per ID under concurrent starts, duplicate deliveries and two supervisors."""

from __future__ import annotations

import multiprocessing
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from tests.harness import Cluster, Stack, wait_for
from tests.integration.trackers import Counter
from tracking import registry
from tracking.celery import publish
from tracking.models import events

STARTERS = 32


def _start_in_child(stack: Stack, txid: str, barrier: Any, results: Any) -> None:
    stack.app()
    barrier.wait(timeout=60)
    try:
        ref = Counter.start(txid)
        results.put((ref.task_id, ref.epoch, ref.already_started))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(("error", repr(exc), None))


@pytest.mark.fleet
def test_thirty_two_processes_starting_one_id_at_once_make_exactly_one_tracker(stack: Stack) -> None:
    txid = f"txn_race_{uuid.uuid4().hex}"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(STARTERS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_start_in_child, args=(stack, txid, barrier, results)) for _ in range(STARTERS)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert not [o for o in outcomes if o[0] == "error"], outcomes
    assert len({(task_id, epoch) for task_id, epoch, _ in outcomes}) == 1
    assert sorted(already for _, _, already in outcomes) == [False] + [True] * (STARTERS - 1)
    assert [r.transaction_id for r in Counter.list()].count(txid) == 1
    Counter.stop(txid)


def _running_events(stack: Stack, txid: str) -> list[int]:
    with registry.engine(stack.settings()).connect() as conn:
        rows = conn.execute(
            sa.select(events.c.epoch).where(events.c.transaction_id == txid, events.c.event == "running")
        )
        return [r.epoch for r in rows]


def dropped(cluster: Cluster, task_id: str) -> int:
    """How many deliveries of ``task_id`` the workers dropped at pickup (claim refused)."""
    lines = (cluster.log("w1") + cluster.log("w2")).splitlines()
    return sum(1 for line in lines if task_id in line and "'dropped'" in line)


def test_a_message_delivered_twice_runs_one_incarnation(cluster: Cluster, txid: str) -> None:
    stack = cluster.stack
    Counter.start(txid)
    wait_for(lambda: (r := Counter.lookup(txid)) is not None and r.status == "running")
    row = registry.get(stack.settings(), Counter.kind, txid)
    assert row is not None
    publish(row)  # the same message again: same task ID, same epoch
    publish(row)
    wait_for(lambda: dropped(cluster, row.task_id) == 2, what="both duplicates to be dropped")
    assert _running_events(stack, txid) == [1]

    Counter.stop(txid, reason="crash")
    wait_for(lambda: (r := Counter.lookup(txid)) is not None and r.status == "running" and r.epoch == 2)
    publish(row)  # a stale message of epoch 1, after the restart
    wait_for(lambda: dropped(cluster, row.task_id) == 3, what="the stale message to be dropped")
    assert _running_events(stack, txid) == [1, 2]
    Counter.stop(txid)
