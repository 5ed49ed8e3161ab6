"""Batched ticks of parked trackers in one worker process (its real waker, lease and control
loop, on a SQLite registry, as tests/worker/test_runtime.py runs a worker): a message during a
batch, a warm shutdown, a rate limit and a late batch each keep what the docs promise. Each test
failed before the fix that made it pass (found by a review of the batched ticks)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import tracking
from tests.harness import migrated, wait_for
from tracking import client, registry, worker
from tracking.models import MessageType, trackers
from tracking.settings import Settings
from tracking.worker import Batch, WorkerProcess

#: the settings of the test running now (the trackers below reach the registry through them)
CURRENT: dict[str, Settings] = {}
CAST_IN_TICK = threading.Event()
TICK_TIMES: list[float] = []


class CountsTicks(tracking.Tracker):
    """Parks between ticks; while CAST_IN_TICK is set, its first tick in a batch casts to every
    tracker of its kind (a cast that reaches each tracker while its batch runs)."""

    kind = "batch-runtime-mail"
    interval = 300
    park = True
    batch_size = 50

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"ticks": 0, "casts": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        state["ticks"] += 1
        if CAST_IN_TICK.is_set():
            CAST_IN_TICK.clear()
            settings = CURRENT["settings"]
            for txid in ("m-1", "m-2", "m-3"):
                registry.enqueue(settings, self.kind, txid, MessageType.CAST, {"hello": txid})
        return state

    def handle_cast(self, message: Any, state: dict[str, Any]) -> dict[str, Any]:
        state["casts"] += 1
        return state


class FastLimited(tracking.Tracker):
    """Parks between ticks, each tick instant; the kind may tick 20 times a second in all."""

    kind = "batch-runtime-rate"
    interval = 300
    park = True
    batch_size = 50
    rate_limit = 20.0

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"ticks": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        TICK_TIMES.append(time.monotonic())
        state["ticks"] += 1
        return state


class Sent:
    def __init__(self) -> None:
        self.rows: list[client.Publishable] = []
        self.batches: list[Batch] = []


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
def wp(tmp_path: Path, sent: Sent) -> Iterator[WorkerProcess]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/registry.sqlite3",
        heartbeat_seconds=0.5,
        lease_seconds=3.0,
        sweep_seconds=1.0,
        start_grace_seconds=30.0,
        control_poll_seconds=0.05,
    )
    with migrated(settings):
        CURRENT["settings"] = settings
        process = WorkerProcess(settings, "batches@host", sent.rows.append, publish_batch=sent.batches.append)
        process.start()
        try:
            yield process
        finally:
            process.begin_shutdown()
            process.close(timeout=5)


def _parked(wp: WorkerProcess, cls: type[tracking.Tracker], txids: list[str]) -> None:
    """Start each, run its first incarnation (init, one tick) until it parks."""
    for txid in txids:
        row, created = registry.start(wp.settings, cls.kind, txid, {}, cls.policy)
        assert created
        assert worker.run(cls, txid, row.epoch, row.task_id, wp) == "parked"


def _woken_batch(wp: WorkerProcess, sent: Sent, cls: type[tracking.Tracker], txids: list[str]) -> Batch:
    """Make the entries due for their tick now; the worker's waker publishes them as one batch."""
    with registry.engine(wp.settings).begin() as conn:
        conn.execute(
            trackers.update()
            .where(trackers.c.kind == cls.kind, trackers.c.transaction_id.in_(txids))
            .values(due_at=registry.db_now(-1), tick_at=registry.db_now(-1))
        )
    batch = wait_for(
        lambda: next((b for b in sent.batches if b.kind == cls.kind), None),
        timeout=10,
        what="the waker to publish the batch",
    )
    assert sorted(txid for txid, _ in batch.members) == sorted(txids)
    return batch


def _state(wp: WorkerProcess, cls: type[tracking.Tracker], txid: str) -> dict[str, Any]:
    row = registry.get(wp.settings, cls.kind, txid)
    assert row is not None and row.state is not None
    return dict(row.state)


def test_a_cast_reaching_a_tracker_during_its_batch_does_not_make_it_tick_again(
    wp: WorkerProcess, sent: Sent
) -> None:
    """concepts.md, Parking: a message "does not make it tick early". A tracker of a batch that gets
    a cast during its tick cannot park: it is handed to an incarnation of its own, which keeps its
    schedule (before the fix the handoff cleared ``tick_at`` and it ticked again at once)."""
    ids = ["m-1", "m-2", "m-3"]
    _parked(wp, CountsTicks, ids)
    batch = _woken_batch(wp, sent, CountsTicks, ids)
    CAST_IN_TICK.set()
    worker.run_batch(CountsTicks, batch, wp)
    handed = [r for r in sent.rows if r.kind == CountsTicks.kind]
    assert sorted(r.transaction_id for r in handed) == ids, "each was handed to an incarnation of its own"
    for row in handed:
        worker.run(CountsTicks, row.transaction_id, row.epoch, row.task_id, wp)
    states = {txid: _state(wp, CountsTicks, txid) for txid in ids}
    assert all(s["casts"] == 1 for s in states.values()), states
    assert all(s["ticks"] == 2 for s in states.values()), (
        f"one tick at the start and one in the batch expected; the cast made them tick again: {states}"
    )


def test_a_batch_message_that_reaches_a_worker_shutting_down_is_published_again(
    wp: WorkerProcess, sent: Sent
) -> None:
    """concepts.md, Warm shutdown: "A message that reaches a worker already shutting down is
    published again unclaimed, for the next worker": a batch's too (before the fix it was left to
    the sweep's start grace, 30 s by default, during every deploy)."""
    ids = ["s-1", "s-2", "s-3"]
    _parked(wp, CountsTicks, ids)
    batch = _woken_batch(wp, sent, CountsTicks, ids)
    before = len(sent.rows), len(sent.batches)
    wp.begin_shutdown()
    outcome = worker.run_batch(CountsTicks, batch, wp)
    again = {r.transaction_id for r in sent.rows[before[0] :]} | {
        txid for b in sent.batches[before[1] :] for txid, _ in b.members
    }
    assert again == set(ids), f"run_batch returned {outcome!r} and published nothing again: {again}"


def test_a_batch_of_fast_ticks_keeps_to_the_rate_limit_over_a_short_window(
    wp: WorkerProcess, sent: Sent
) -> None:
    """concepts.md, Rate limits: "all processes together never tick more than the bucket grants
    (its rate, plus a burst of 0.2 s of it)", over any window: each tick of a batch without
    tick_many takes its token just before it runs (before the fix the batch gathered all its
    tokens, then ticked 40 times within milliseconds at a limit of 20 a second)."""
    ids = [f"r-{i}" for i in range(40)]
    _parked(wp, FastLimited, ids)
    TICK_TIMES.clear()
    batch = _woken_batch(wp, sent, FastLimited, ids)
    worker.run_batch(FastLimited, batch, wp)
    assert len(TICK_TIMES) == len(ids)
    window = 0.5
    rate = FastLimited.rate_limit
    assert rate is not None
    bound = rate * (window + 0.2) + max(1.0, rate * 0.2)  # the doc's bound over any window
    most = max(sum(1 for t in TICK_TIMES if start <= t < start + window) for start in TICK_TIMES)
    assert most <= bound, f"{most} ticks within {window} s at a limit of {rate:g}/s (bound {bound:.0f})"


def test_a_batch_tick_that_fell_an_interval_behind_is_not_followed_by_a_catch_up_tick(
    wp: WorkerProcess, sent: Sent
) -> None:
    """A tick that fell a whole interval behind "is not caught up": as a tracker woken alone, an
    entry of a batch ticks late once, then waits an interval from that tick (before the fix
    park_batch parked it due now, from its stale ``tick_at``, and it ticked twice back to back)."""
    ids = ["l-1", "l-2"]
    _parked(wp, CountsTicks, ids)
    with registry.engine(wp.settings).begin() as conn:
        conn.execute(
            trackers.update()
            .where(trackers.c.kind == CountsTicks.kind, trackers.c.transaction_id.in_(ids))
            .values(due_at=registry.db_now(-1), tick_at=registry.db_now(-3 * CountsTicks.interval))
        )
    batch = wait_for(
        lambda: next((b for b in sent.batches if b.kind == CountsTicks.kind), None),
        timeout=10,
        what="the waker to publish the batch",
    )
    wp.waker.stop()  # so that the entries stay as the batch parked them
    worker.run_batch(CountsTicks, batch, wp)
    for txid in ids:
        row = registry.get(wp.settings, CountsTicks.kind, txid)
        assert row is not None and row.status == "parked" and row.due_at is not None
        with registry.engine(wp.settings).connect() as conn:
            now = conn.execute(registry.db_now().select()).scalar_one()
        left = row.due_at.timestamp() - _aware(now).timestamp()
        assert left > CountsTicks.interval / 2, (
            f"{txid}: next tick in {left:.1f} s, not an interval after the late one"
        )


def _aware(value: Any) -> Any:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_the_waker_wakes_no_more_while_as_many_entries_as_it_allows_wait_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers that fall behind are not flooded: past MAX_PENDING woken-but-unclaimed entries the
    waker leaves the rest parked and due (before this, at 1,000,000 parked trackers it woke them
    faster than the workers ticked, until the start grace ran out and the sweep published each of
    them again). It wakes a whole round (BATCH) or nothing, so that its batches stay full: woken
    into whatever room was left, the 1,000,000 run's batches held 8 entries on average (a
    message and a claim each); this test failed then, its third round waking one entry. Restarts
    of failed entries are woken whatever the cap (the restart part failed before that fix)."""
    from tracking.worker import waker

    monkeypatch.setattr(waker, "MAX_PENDING", 5)
    monkeypatch.setattr(waker, "BATCH", 2)
    settings = Settings(database_url=f"sqlite:///{tmp_path}/registry.sqlite3")
    sent = Sent()
    with migrated(settings):
        worker_id = "pending-test/1/abc"
        registry.register_worker(settings, worker_id, "w@here", 1)
        for i in range(10):
            row, _ = registry.start(settings, CountsTicks.kind, f"p-{i}", {}, CountsTicks.policy)
            claimed = registry.claim(
                settings,
                CountsTicks.kind,
                f"p-{i}",
                row.epoch,
                worker="w",
                worker_id=worker_id,
                policy=CountsTicks.policy,
            )
            assert claimed is not None
            assert registry.park(settings, claimed.id, claimed.epoch, {"ticks": 1, "casts": 0}, 0.5)
        with registry.engine(settings).begin() as conn:
            conn.execute(trackers.update().values(due_at=registry.db_now(-1), tick_at=registry.db_now(-1)))
        wk = waker.Waker(settings, sent.rows.append, sent.batches.append)
        wk._round()
        wk._round()
        assert wk._round() == waker.BEHIND  # room for one more: not a round's worth
        assert registry.count(settings, status="pending") == 4
        assert registry.count(settings, status="parked") == 6
        assert [len(b.members) for b in sent.batches] == [2, 2] and not sent.rows
        # A failed entry's restart is woken all the same (review: the cap held restarts back).
        failed = registry.select(settings, status="parked", limit=1)[0].transaction_id
        with registry.engine(settings).begin() as conn:
            conn.execute(trackers.update().where(trackers.c.transaction_id == failed).values(status="failed"))
        assert wk._round() == waker.BEHIND
        assert [r.transaction_id for r in sent.rows] == [failed]
        assert registry.count(settings, status="pending") == 5
        for b in sent.batches:  # the workers catch up: the waker wakes the next ones
            registry.claim_batch(
                settings, b.kind, b.members, worker="w", worker_id=worker_id, policy=CountsTicks.policy
            )
        wk._round()
        assert registry.count(settings, status="pending") == 3
        assert registry.count(settings, status="parked") == 3
