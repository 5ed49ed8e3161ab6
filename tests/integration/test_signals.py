"""tracking.signals on real workers: each signal is sent once per event, by the process where the
event happens (the caller for started; the worker for crashed, restarted, dead and done)."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

import tracking
from tests.harness import Cluster, in_status, running, wait_for
from tests.integration.trackers import SIGNALS_TABLE, Crasher, CrashesTwiceThenFinishes, ParkedMailman
from tracking import Status, registry

pytestmark = pytest.mark.stacks("sqlite-embedded", "postgres-redis", "postgres-rabbitmq", tables=("signals",))


def sent(cluster: Cluster, txid: str) -> list[tuple[str, int, str | None, bool]]:
    """(signal, epoch, cause or reason or exception, sent by this test's process) for ``txid``."""
    with registry.engine(cluster.stack.settings()).connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT signal, epoch, detail, pid FROM {SIGNALS_TABLE} WHERE txid = :txid ORDER BY id"),
            {"txid": txid},
        ).all()
    return [(signal, epoch, detail, pid == os.getpid()) for signal, epoch, detail, pid in rows]


def test_a_tracker_that_crashes_twice_then_finishes_sends_each_signal_once(
    cluster: Cluster, txid: str
) -> None:
    CrashesTwiceThenFinishes.start(txid)
    wait_for(
        lambda: ("tracker_done", 3, None, False) in sent(cluster, txid), timeout=30, what="the done signal"
    )
    assert sent(cluster, txid) == [
        ("tracker_started", 1, None, True),
        ("tracker_crashed", 1, "RuntimeError", False),
        ("tracker_restarted", 1, "crashed", False),
        ("tracker_crashed", 2, "RuntimeError", False),
        ("tracker_restarted", 2, "crashed", False),
        ("tracker_done", 3, None, False),
    ]


def test_a_tracker_past_its_restart_intensity_sends_dead_once(cluster: Cluster, txid: str) -> None:
    Crasher.start(txid)
    settings = cluster.stack.settings()

    def dead() -> bool:
        entry = registry.get(settings, Crasher.kind, txid)
        return entry is not None and entry.status == "dead"

    wait_for(dead, timeout=30, what="the tracker to be dead")
    signals = [signal for signal, _epoch, _detail, _here in sent(cluster, txid)]
    assert signals.count("tracker_started") == 1
    assert signals.count("tracker_crashed") == Crasher.max_restarts + 1
    assert signals.count("tracker_restarted") == Crasher.max_restarts
    assert signals.count("tracker_dead") == 1 and signals[-1] == "tracker_dead"
    assert (
        sent(cluster, txid)[-1][2] == f"more than {Crasher.max_restarts} restarts in {Crasher.max_seconds} s"
    )


def test_restart_now_of_a_parked_tracker_sends_restarted_once_from_the_caller(
    cluster: Cluster, txid: str
) -> None:
    # A parked tracker has no worker running it: the restart is decided in the caller, which
    # sends the signal its worker would have sent.
    ParkedMailman.start(txid)
    parked = wait_for(lambda: in_status(ParkedMailman, txid, Status.PARKED), timeout=30, what="it to park")
    heard: list[tuple[str, str, int, str]] = []

    def receiver(sender: str, transaction_id: str, epoch: int, cause: str, **_kw: object) -> None:
        heard.append((sender, transaction_id, epoch, cause))

    tracking.signals.tracker_restarted.connect(receiver)
    try:
        after = tracking.client.current().restart(ParkedMailman.kind, txid)
    finally:
        tracking.signals.tracker_restarted.disconnect(receiver)

    assert after is not None and after.epoch > parked.epoch
    assert heard == [(ParkedMailman.kind, txid, parked.epoch, "stopped")]
    wait_for(
        lambda: (
            running(ParkedMailman, txid, after_epoch=parked.epoch)
            or in_status(ParkedMailman, txid, Status.PARKED, after_epoch=parked.epoch)
        ),
        timeout=30,
        what="the restarted tracker to run",
    )
