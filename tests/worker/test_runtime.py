"""The run loop of one incarnation, in process, on a real SQLite registry: what a worker thread
keeps, how a warm shutdown waits for the tick in progress, what a crash logs. No broker: the rows a
runtime publishes are collected."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tracking
from tests.harness import migrated, wait_for
from tracking import client, registry, worker
from tracking.models import WorkerStatus, workers
from tracking.settings import Settings
from tracking.worker import Incarnation, Interrupt, WorkerProcess


class Published(list[client.Publishable]):
    """The rows a runtime published, in order."""


class FinishesAtOnce(tracking.Tracker):
    kind = "test-runtime-finishes"
    interval = 0.01

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        raise tracking.Done(state)


class LeaksAPassword(tracking.Tracker):
    """Crashes with a database URL in its exception, whose password has a raw "@" in it."""

    kind = "test-runtime-leaks"
    interval = 0.01
    max_restarts, max_seconds = 10, 60
    backoff, backoff_max = 0.3, 0.3

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("postgresql://app:s3cr@tpass@127.0.0.1/payments is unreachable")


GATE = threading.Event()
TICKING = threading.Event()


class WaitsForTheGate(tracking.Tracker):
    """Counts ticks; each tick waits until the test opens the gate."""

    kind = "test-runtime-gate"
    interval = 0.01
    park = False

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"ticks": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        TICKING.set()
        assert GATE.wait(30), "the test never opened the gate"
        state["ticks"] += 1
        return state


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
def rt(tmp_path: Path, published: Published) -> Iterator[WorkerProcess]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/registry.sqlite3",
        heartbeat_seconds=0.5,
        lease_seconds=3.0,
        sweep_seconds=1.0,
        start_grace_seconds=3.0,
        control_poll_seconds=0.05,
    )
    with migrated(settings):
        wp = WorkerProcess(settings, "test@host", published.append)
        wp.start()
        try:
            yield wp
        finally:
            wp.begin_shutdown()
            wp.close(timeout=5)


def _start(rt: WorkerProcess, cls: type[tracking.Tracker], txid: str) -> registry.Entry:
    row, created = registry.start(rt.settings, cls.kind, txid, {}, cls.policy)
    assert created
    return row


def test_an_incarnation_leaves_no_current_tracker_on_its_worker_thread(rt: WorkerProcess) -> None:
    row = _start(rt, FinishesAtOnce, "t-current")
    assert worker.run(FinishesAtOnce, "t-current", row.epoch, row.task_id, rt) == "done"
    # A plain task that runs next on this thread and calls the tracker must not be told it
    # "called itself".
    assert client.running_here.get() is None


def test_a_backoff_restart_holds_no_thread_and_the_waker_restarts_it_when_due(
    rt: WorkerProcess, published: Published
) -> None:
    row = _start(rt, LeaksAPassword, "t-backoff")
    assert worker.run(LeaksAPassword, "t-backoff", row.epoch, row.task_id, rt) == "crashed: restart"
    first = published[-1]  # the first restart is immediate
    assert worker.run(LeaksAPassword, "t-backoff", first.epoch, first.task_id, rt) == "crashed: restart"
    entry = registry.get(rt.settings, LeaksAPassword.kind, "t-backoff")
    assert entry is not None and entry.status == "failed"
    assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
    wait_for(
        lambda: len(published) == 2 and published[-1].epoch == entry.epoch,
        timeout=10,
        what="the waker to restart the failed tracker once its backoff is over",
    )
    restarted = registry.get(rt.settings, LeaksAPassword.kind, "t-backoff")
    assert restarted is not None and restarted.status == "pending"


def _crash_logged(
    rt: WorkerProcess, caplog: pytest.LogCaptureFixture, txid: str
) -> tuple[registry.Entry, list[logging.LogRecord]]:
    """Run one incarnation of LeaksAPassword, which crashes; its entry and the error records."""
    row = _start(rt, LeaksAPassword, txid)
    with caplog.at_level(logging.ERROR, logger="tracking.worker"):
        worker.run(LeaksAPassword, txid, row.epoch, row.task_id, rt)
    return row, list(caplog.records)


def test_a_crash_is_logged_with_the_password_masked(
    rt: WorkerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    _row, records = _crash_logged(rt, caplog, "t-mask")
    logged = "\n".join(r.getMessage() for r in records)
    assert "crashed" in logged and "app:***@127.0.0.1" in logged
    assert "s3cr" not in logged and "tpass" not in logged
    stored = registry.get(rt.settings, LeaksAPassword.kind, "t-mask")
    assert stored is not None and "s3cr" not in (stored.last_error or "")


def test_a_crash_s_log_record_carries_the_tracker_s_fields(
    rt: WorkerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    row, records = _crash_logged(rt, caplog, "t-fields")
    crashed = next(r for r in records if "crashed" in r.getMessage())
    fields = {
        name: getattr(crashed, name, None)
        for name in ("kind", "transaction_id", "epoch", "task_id", "worker")
    }
    assert fields == {
        "kind": LeaksAPassword.kind,
        "transaction_id": "t-fields",
        "epoch": row.epoch,
        "task_id": row.task_id,
        "worker": "test@host",
    }


def test_a_warm_shutdown_lets_the_tick_in_progress_end_and_keeps_its_checkpoint(
    rt: WorkerProcess, published: Published
) -> None:
    GATE.clear()
    TICKING.clear()
    row = _start(rt, WaitsForTheGate, "t-handoff")
    outcome: list[str] = []
    thread = threading.Thread(
        target=lambda: outcome.append(worker.run(WaitsForTheGate, "t-handoff", row.epoch, row.task_id, rt))
    )
    thread.start()
    assert TICKING.wait(10), "the tick never started"
    rt.begin_shutdown()
    wait_for(lambda: rt.control.handed_off, timeout=10, what="the runtime to act on the shutdown")
    during = registry.get(rt.settings, WaitsForTheGate.kind, "t-handoff")
    assert during is not None and (during.status, during.epoch) == ("running", row.epoch), (
        "handed off while its tick was still running"
    )
    assert published == []
    GATE.set()
    thread.join(10)
    assert outcome == ["handed off"]
    after = registry.get(rt.settings, WaitsForTheGate.kind, "t-handoff")
    assert after is not None and after.status == "pending" and after.epoch == row.epoch + 1
    assert after.state == {"ticks": 1}, "the interrupted tick's checkpoint was lost"
    assert [r.epoch for r in published] == [row.epoch + 1]


def test_a_warm_shutdown_leaves_an_incarnation_asked_to_stop_to_stop() -> None:
    """A revoke seen by this worker alone (no registry record) is not turned into a handoff."""
    inc = Incarnation(1, 1, "k", "t", "task")
    inc.stop("shutdown")

    assert inc.hand_off_if_idle() is False
    assert (inc.interrupt, inc.stop_reason) == (Interrupt.STOP, "shutdown")


def test_a_warm_shutdown_hands_off_an_idle_incarnation_and_lets_a_busy_one_finish() -> None:
    idle, busy = Incarnation(1, 1, "k", "t1", "a"), Incarnation(2, 1, "k", "t2", "b")
    assert busy.begin_work()

    assert idle.hand_off_if_idle() is True and idle.interrupt is Interrupt.HANDED_OFF
    assert busy.hand_off_if_idle() is False and busy.interrupt is Interrupt.HAND_OFF
    assert not idle.begin_work(), "a handed-off incarnation started another unit of work"


def test_a_lease_declared_lost_fences_its_incarnations_before_a_fresh_lease_is_registered(
    rt: WorkerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = rt.worker_id
    inc = Incarnation(1, 1, "k", "t", "task", worker_id=old)
    rt.add(inc)
    fenced_at_register: list[bool] = []
    register = rt.lease.register

    def recording_register() -> None:
        fenced_at_register.append(inc.interrupt is Interrupt.FENCED)
        register()

    monkeypatch.setattr(rt.lease, "register", recording_register)
    with registry.engine(rt.settings).begin() as conn:  # a supervisor declares the process lost
        conn.execute(workers.update().where(workers.c.id == old).values(status=WorkerStatus.LOST.value))
    wait_for(lambda: rt.worker_id != old, timeout=10, what="a fresh lease")
    rt.remove(inc)
    assert fenced_at_register and fenced_at_register[0], "a fresh lease came before the fence"
    assert inc.interrupt is Interrupt.FENCED
