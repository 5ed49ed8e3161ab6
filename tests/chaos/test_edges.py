"""Edges of shutdown, stop and worker loss, each met head on with real workers and real signals.

- A warm shutdown lets the tick in progress end and keeps its checkpoint: the successor never
  ticks alongside its predecessor and never repeats the interrupted tick.
- A normal ``stop()`` is final even when the tick in progress ends in a crash, in the ``Done`` of
  a permanent tracker, or in a handoff (the worker is shut down right after the stop).
- Losing a worker, again and again, restarts its trackers without the restart backoff.

Times in the side tables are ``time.time()`` of the process that wrote them (all on one host).
"""

from __future__ import annotations

import functools
import signal
import threading
import time
import uuid
from datetime import datetime
from typing import NamedTuple, TypeVar

import pytest
import sqlalchemy as sa

import tracking
from tests.harness import TIMINGS, Cluster, Stack, observe, wait_for
from tests.integration.trackers import (
    EDGE_TICKS_TABLE,
    FINISHES_TABLE,
    GATES_TABLE,
    TICKS_TABLE,
    GatedFinisher,
    LossRecorder,
    SlowCrasher,
    SlowPermanentFinisher,
    TimedTicker,
)
from tracking import registry
from tracking.models import trackers

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.stacks("postgres-redis", "sqlite-embedded", tables=("ticks", "edges")),
    pytest.mark.cluster(each_test=True),
]
T = TypeVar("T")


# -- reading what the trackers recorded ----------------------------------------------------------


class Tick(NamedTuple):
    id: int
    tick: int
    epoch: int
    pid: int
    started: float
    ended: float | None


class Finish(NamedTuple):
    id: int
    epoch: int
    pid: int
    at: float
    #: the entry was running under this token when it was written (a registry-fenced write lands)
    current: bool


def edge_ticks(stack: Stack, txid: str) -> list[Tick]:
    """The ticks a TimedTicker recorded, in the order they started."""
    query = sa.text(
        f"SELECT id, tick, epoch, pid, started, ended FROM {EDGE_TICKS_TABLE} WHERE txid = :t ORDER BY id"
    )
    with registry.engine(stack.settings()).connect() as conn:
        return [Tick(*row) for row in conn.execute(query, {"t": txid})]


def finishes(stack: Stack, txid: str) -> list[Finish]:
    """The "finished" rows a GatedFinisher wrote, in the order they were written."""
    query = sa.text(f"SELECT id, epoch, pid, at, current FROM {FINISHES_TABLE} WHERE txid = :t ORDER BY id")
    with registry.engine(stack.settings()).connect() as conn:
        return [Finish(i, e, p, a, bool(c)) for i, e, p, a, c in conn.execute(query, {"t": txid})]


def waiting_at_gate(stack: Stack, txid: str) -> list[int]:
    """The tokens of the GatedFinisher incarnations that reached their gate."""
    query = sa.text(f"SELECT epoch FROM {GATES_TABLE} WHERE txid = :t AND what = 'waiting' ORDER BY epoch")
    with registry.engine(stack.settings()).connect() as conn:
        return list(conn.execute(query, {"t": txid}).scalars())


def open_gate(stack: Stack, txid: str) -> None:
    with registry.engine(stack.settings()).begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {GATES_TABLE} (txid, what) VALUES (:t, 'open')"), {"t": txid})


def accepted_by_token_check(rows: list[Finish]) -> list[Finish]:
    """What a receiver that refuses ``token < highest seen`` keeps of ``rows`` (in write order)."""
    highest, kept = 0, []
    for row in rows:
        if row.epoch >= highest:
            kept.append(row)
            highest = row.epoch
    return kept


def stop_requested(stack: Stack, kind: str, txid: str) -> bool:
    query = sa.select(trackers.c.stop_reason).where(
        trackers.c.kind == kind, trackers.c.transaction_id == txid
    )
    with registry.engine(stack.settings()).connect() as conn:
        return conn.execute(query).scalar() is not None


# -- driving the cluster ---------------------------------------------------------------------------


def worker_running(tracker: type[tracking.Tracker], txid: str) -> str:
    """The name (``w1``) of the worker that runs the tracker now."""

    def running_on() -> str | None:
        ref = tracker.lookup(txid)
        if ref is None or ref.status is not tracking.Status.RUNNING or ref.worker is None:
            return None
        return ref.worker.split("@", 1)[0]

    name = wait_for(running_on, timeout=30, what=f"{txid} to be running")
    assert name is not None
    return name


def wait_exit(cluster: Cluster, name: str, timeout: float = 30.0) -> int:
    """Wait for a worker signalled already to exit (it is no longer the cluster's)."""
    proc = cluster.procs.pop(name)
    return proc.wait(timeout=timeout)


# -- 1. a warm shutdown lets the tick in progress end ----------------------------------------------


def test_a_warm_shutdown_mid_tick_lets_the_tick_end_before_the_successor_continues_from_it(
    cluster: Cluster, txid: str
) -> None:
    cluster.worker("w1")
    cluster.worker("w2")
    cluster.beat()
    TimedTicker.start(txid, tick_seconds=3.0)
    # Tick 2, so that the successor has a checkpoint to repeat if the interrupted tick's is lost.
    in_tick = wait_for(
        lambda: [t for t in edge_ticks(cluster.stack, txid) if t.tick >= 2 and t.ended is None],
        timeout=30,
        what="tick 2 to start",
    )[-1]
    name = worker_running(TimedTicker, txid)
    cluster.stop(name, timeout=30)  # SIGTERM mid-tick, and wait for the worker to exit

    def successor_ticked() -> list[Tick]:
        return [t for t in edge_ticks(cluster.stack, txid) if t.epoch > in_tick.epoch and t.ended is not None]

    wait_for(successor_ticked, timeout=30, what="a tick of the successor")
    ticks = edge_ticks(cluster.stack, txid)
    interrupted = next(t for t in ticks if t.id == in_tick.id)
    overlapping = [
        (old, new)
        for old in ticks
        for new in ticks
        if old.epoch < new.epoch and (old.ended is None or old.ended > new.started)
    ]
    assert not overlapping, (
        "an older incarnation's tick still ran when a newer one's began (tick, token, start, end): "
        + "; ".join(
            f"old {o.tick}/{o.epoch} {o.started:.2f}-{o.ended or float('nan'):.2f} vs "
            f"new {n.tick}/{n.epoch} {n.started:.2f}-{n.ended or float('nan'):.2f}"
            for o, n in overlapping
        )
    )
    successor_first = min((t for t in ticks if t.epoch > interrupted.epoch), key=lambda t: t.started)
    assert successor_first.tick == interrupted.tick + 1, (
        f"the interrupted tick {interrupted.tick} (token {interrupted.epoch}) was not kept: the successor "
        f"(token {successor_first.epoch}) began with tick {successor_first.tick}"
    )
    numbers = [t.tick for t in sorted(ticks, key=lambda t: t.started)]
    assert numbers == sorted(set(numbers)), f"a tick ran twice: {numbers}"


def test_a_warm_shutdown_during_the_final_tick_finishes_the_tracker_once(cluster: Cluster, txid: str) -> None:
    cluster.worker("w1")
    cluster.worker("w2")
    cluster.beat()
    GatedFinisher.start(txid, until=3, gate="after")
    wait_for(lambda: finishes(cluster.stack, txid), timeout=30, what="the final tick's write")
    name = worker_running(GatedFinisher, txid)
    cluster.signal(name, signal.SIGTERM)
    # The final tick goes on after the worker began its warm shutdown, and ends soon after.
    wait_for(lambda: "Warm shutdown" in cluster.log(name), timeout=10, what=f"{name}'s warm shutdown")
    open_gate(cluster.stack, txid)
    wait_for(lambda: GatedFinisher.lookup(txid) is None, timeout=30, what="the tracker to finish")
    wait_exit(cluster, name)
    rows = finishes(cluster.stack, txid)
    assert len(rows) == 1, f"the final tick ran again after the handoff: finished rows (token, pid) {rows}"


# -- 2. a normal stop is final, whatever ends the tick in progress ---------------------------------

RACES: dict[str, type[TimedTicker]] = {
    "a crash": SlowCrasher,
    "a permanent tracker's Done": SlowPermanentFinisher,
    "a warm shutdown": TimedTicker,
}


@pytest.mark.parametrize("race", list(RACES))
def test_a_normal_stop_during_a_tick_is_final_when_the_tick_ends_in(
    cluster: Cluster, txid: str, race: str
) -> None:
    tracker = RACES[race]
    cluster.worker("w1")
    cluster.worker("w2")
    cluster.beat()
    tracker.start(txid, tick_seconds=2.0)
    wait_for(
        lambda: [t for t in edge_ticks(cluster.stack, txid) if t.ended is None],
        timeout=30,
        what="a tick to start",
    )
    if race == "a warm shutdown":
        name = worker_running(tracker, txid)
        failed: list[BaseException] = []

        def stop() -> None:
            try:
                tracker.stop(txid, timeout=30)
            except BaseException as exc:  # reported by the test thread
                failed.append(exc)

        stopper = threading.Thread(target=stop)
        stopper.start()
        wait_for(
            lambda: stop_requested(cluster.stack, tracker.kind, txid), timeout=10, what="the stop request"
        )
        cluster.signal(name, signal.SIGTERM)
        stopper.join(timeout=40)
        assert not stopper.is_alive() and not failed, f"stop() did not return: {failed}"
    else:
        tracker.stop(txid, timeout=30)
    stopped_at = time.time()

    def ticks_after_stop() -> list[Tick]:
        return [t for t in edge_ticks(cluster.stack, txid) if t.started > stopped_at]

    late = observe(ticks_after_stop, seconds=5.0)
    assert late is None, f"ticked after stop() returned, stop forgotten in {race}: {late}"
    ref = tracker.lookup(txid)
    assert ref is None, f"still registered after stop() returned: {ref}"
    if race == "a warm shutdown":
        wait_exit(cluster, name)


# -- 3. a lost worker's trackers are restarted without backoff -------------------------------------


def _as_datetime(value: object) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def recoveries(stack: Stack, ids: list[str]) -> dict[int, list[float]]:
    """Per new token, each tracker's recovery: its first tick minus the last tick of the token before."""
    with registry.engine(stack.settings()).connect() as conn:
        spans = conn.execute(
            sa.text(f"SELECT txid, epoch, min(at), max(at) FROM {TICKS_TABLE} GROUP BY txid, epoch")
        ).all()
    span = {(t, e): (_as_datetime(first), _as_datetime(last)) for t, e, first, last in spans}
    gaps: dict[int, list[float]] = {}
    for (txid, epoch), (first, _last) in span.items():
        before = span.get((txid, epoch - 1))
        if txid in ids and before is not None:
            gaps.setdefault(epoch, []).append((first - before[1]).total_seconds())
    return gaps


@pytest.mark.stacks("postgres-redis")
@pytest.mark.timeout(150)
def test_a_worker_lost_again_and_again_costs_its_trackers_no_restart_backoff(cluster: Cluster) -> None:
    kills, n = 5, 20
    names = (f"w{i}" for i in range(1, kills + 2))
    current = next(names)
    cluster.worker(current)
    cluster.beat()
    ids = [f"loss_{uuid.uuid4().hex[:10]}_{i}" for i in range(n)]
    for txid in ids:
        LossRecorder.start(txid)

    ticked_query = sa.select(sa.func.count(sa.distinct(sa.column("txid")))).select_from(
        sa.table(TICKS_TABLE, sa.column("txid"), sa.column("epoch"))
    )

    def all_ticking_on(worker: str, epoch: int) -> bool:
        refs = [LossRecorder.lookup(t) for t in ids]
        if not all(
            r is not None
            and r.status is tracking.Status.RUNNING
            and r.epoch == epoch
            and r.worker is not None
            and r.worker.startswith(f"{worker}@")
            for r in refs
        ):
            return False
        with registry.engine(cluster.stack.settings()).connect() as conn:
            ticked = conn.execute(
                ticked_query.where(sa.column("epoch") == epoch, sa.column("txid").in_(ids))
            ).scalar_one()
        return bool(ticked == n)

    wait_for(lambda: all_ticking_on(current, 1), timeout=60, what=f"{n} trackers ticking on {current}")
    for kill in range(1, kills + 1):
        survivor = next(names)
        cluster.worker(survivor)  # ready before the kill: recovery does not wait for a worker start
        cluster.kill(current)
        wait_for(
            functools.partial(all_ticking_on, survivor, kill + 1),
            timeout=40,
            what=f"{n} trackers ticking on {survivor} after loss {kill}",
        )
        current = survivor

    budget = TIMINGS["lease_seconds"] + TIMINGS["sweep_seconds"] + 3
    gaps = recoveries(cluster.stack, ids)
    worst = {epoch - 1: max(g) for epoch, g in sorted(gaps.items())}
    print(f"\nworst recovery per worker loss (s): {worst}; budget {budget} s")
    with registry.engine(cluster.stack.settings()).connect() as conn:
        steps = sorted(
            conn.execute(
                sa.select(trackers.c.backoff_step).where(trackers.c.transaction_id.in_(ids))
            ).scalars()
        )
    assert sorted(gaps) == list(range(2, kills + 2)) and all(len(g) == n for g in gaps.values())
    slow = {loss: round(w, 1) for loss, w in worst.items() if w > budget}
    assert not slow, (
        f"recovery after a worker loss paid a restart backoff: worst per loss {slow} s > {budget} s "
        f"(backoff_step after {kills} losses: {sorted(set(steps))})"
    )
    assert set(steps) == {0}, f"a worker loss raised the restart backoff: backoff_step {sorted(set(steps))}"
    refs = [LossRecorder.lookup(t) for t in ids]
    assert all(r is not None and r.restarts == kills for r in refs), "a worker loss counts as a restart"
