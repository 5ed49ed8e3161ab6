"""A tracker's first start, in process, on SQLite and PostgreSQL: from its message to running in as
few writes as fencing allows (the claim with its event, then init's state written with the first
tick's checkpoint), and init never run again once it completed, whatever ends the first tick."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import tracking
from tests.harness import migrated
from tracking import registry, worker
from tracking.models import trackers
from tracking.settings import Settings
from tracking.worker import WorkerProcess

#: the transaction IDs each test tracker's init ran for
INITS: list[str] = []


class Counted(tracking.Tracker):
    kind = "test-first-counted"
    interval = 30.0
    park = False

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        INITS.append(transaction_id)
        return {"from_init": transaction_id, "ticks": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        if state["ticks"] >= 1:
            raise tracking.Done(state)
        state["ticks"] += 1
        return state


class CrashesFirst(Counted):
    """Its first tick crashes; the next incarnation's finishes."""

    kind = "test-first-crashes"
    max_restarts, max_seconds = 10, 60

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        if state.get("crashed"):
            raise tracking.Done(state)
        raise RuntimeError("the source is down")


class PermanentDoneAtOnce(Counted):
    """Permanent: its first tick finishes without a state, so it comes back from init's state."""

    kind = "test-first-permanent"
    restart = "permanent"
    max_restarts, max_seconds = 10, 60

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        raise tracking.Done()


@pytest.fixture
def wp(database_url: str) -> Iterator[WorkerProcess]:
    settings = Settings(
        database_url=database_url,
        heartbeat_seconds=0.5,
        lease_seconds=30.0,
        sweep_seconds=60.0,
        start_grace_seconds=600.0,
        control_poll_seconds=0.05,
    )
    with migrated(settings):
        process = WorkerProcess(settings, "test@host", lambda _row: None)
        process.start()
        try:
            yield process
        finally:
            process.begin_shutdown()
            process.close(timeout=5)


def run_first_unit(wp: WorkerProcess, cls: type[tracking.Tracker], txid: str) -> tuple[str, list[str]]:
    """Start ``txid`` and run its incarnation in this thread until it exits; the statements this
    thread sent (the runtime's own threads left out) and how it ended."""
    row, created = registry.start(wp.settings, cls.kind, txid, {}, cls.policy)
    assert created
    sent: list[str] = []
    here = threading.get_ident()

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.get_ident() == here and not statement.startswith("BEGIN"):  # SQLite's own
            sent.append(" ".join(statement.split())[:60])

    eng = registry.engine(wp.settings)
    sa.event.listen(eng, "before_cursor_execute", count)
    try:
        ended = worker.run(cls, txid, row.epoch, row.task_id, wp)
    finally:
        sa.event.remove(eng, "before_cursor_execute", count)
    return ended, sent


def test_a_first_start_writes_its_claim_and_then_one_checkpoint(wp: WorkerProcess, txid: str) -> None:
    """Claim, init, first tick, second tick (Done): the claim (on PostgreSQL one statement with its
    event), init's state with the first tick's checkpoint in one update, then the exit."""
    ended, sent = run_first_unit(wp, Counted, txid)

    assert ended == "done" and INITS.count(txid) == 1
    if registry.engine(wp.settings).dialect.name == "postgresql":
        claim = ["WITH claimed AS (UPDATE tracking_trackers"]
    else:
        claim = ["UPDATE tracking_trackers SET status=", "INSERT INTO tracking_events"]
    checkpoint = "UPDATE tracking_trackers SET state="
    assert [s[: len(c)] for s, c in zip(sent, claim, strict=False)] == claim, sent
    assert sent[len(claim)].startswith(checkpoint), sent
    # after it, only the second tick's exit (Done): init's state is not written again
    assert not any(s.startswith(checkpoint) for s in sent[len(claim) + 1 :]), sent


def test_a_first_tick_that_crashes_restarts_from_init_s_state_without_running_init_again(
    wp: WorkerProcess, txid: str
) -> None:
    ended, _sent = run_first_unit(wp, CrashesFirst, txid)

    assert ended == "crashed: restart"
    entry = registry.get(wp.settings, CrashesFirst.kind, txid)
    assert entry is not None and entry.status == "pending"
    assert entry.state == {"from_init": txid, "ticks": 0}, "init's state was not kept"
    with registry.engine(wp.settings).begin() as conn:  # the next incarnation is told it crashed
        conn.execute(
            trackers.update()
            .where(trackers.c.id == entry.id)
            .values(state={"from_init": txid, "ticks": 0, "crashed": True})
        )
    assert worker.run(CrashesFirst, txid, entry.epoch, entry.task_id, wp) == "done"
    assert INITS.count(txid) == 1, "init ran again after it had completed"


def test_a_permanent_tracker_done_at_its_first_tick_comes_back_from_init_s_state(
    wp: WorkerProcess, txid: str
) -> None:
    ended, _sent = run_first_unit(wp, PermanentDoneAtOnce, txid)

    assert ended == "done: restart"
    entry = registry.get(wp.settings, PermanentDoneAtOnce.kind, txid)
    assert entry is not None and entry.state == {"from_init": txid, "ticks": 0}
    assert INITS.count(txid) == 1
