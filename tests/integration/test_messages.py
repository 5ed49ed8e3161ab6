"""call and cast: a durable, ordered mailbox, on real workers, on each stack."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

import tracking
from tests.harness import Cluster, running, wait_for
from tests.integration.trackers import Counter, Mailman
from tracking import registry
from tracking.models import messages


def mailman(txid: str) -> tracking.TrackerRef:
    """The Mailman's ref, once it runs."""
    return wait_for(lambda: running(Mailman, txid), what="the tracker to run")


def test_a_call_is_answered_long_before_the_next_tick(cluster: Cluster, txid: str) -> None:
    Mailman.start(txid)
    mailman(txid)
    began = time.monotonic()
    assert Mailman.call(txid, {"hello": [1, 2]}, timeout=10) == {"echo": {"hello": [1, 2]}}
    assert time.monotonic() - began < Mailman.interval  # the tracker ticks once a minute
    Mailman.stop(txid)


@pytest.mark.fleet
def test_casts_are_handled_in_order_exactly_once_across_an_abnormal_stop(cluster: Cluster, txid: str) -> None:
    Mailman.start(txid)
    first = mailman(txid)
    for n in range(300):
        Mailman.cast(txid, {"n": n})
    Mailman.stop(txid, reason="crash")
    wait_for(lambda: running(Mailman, txid, after_epoch=first.epoch))
    for n in range(300, 600):
        Mailman.cast(txid, {"n": n})
    # A call sees the caller's earlier casts handled: calls and casts share one ordered mailbox.
    assert Mailman.call(txid, "seen", timeout=30) == list(range(600))
    Mailman.stop(txid)


def test_a_call_to_an_unknown_id_raises_not_found(cluster: Cluster, txid: str) -> None:
    with pytest.raises(tracking.NotFound):
        Mailman.call(txid, "seen")
    with pytest.raises(tracking.NotFound):
        Mailman.cast(txid, {"n": 1})


def test_a_call_slower_than_its_timeout_raises_timeout_and_the_tracker_lives_on(
    cluster: Cluster, txid: str
) -> None:
    Mailman.start(txid)
    mailman(txid)
    began = time.monotonic()
    with pytest.raises(tracking.Timeout):
        Mailman.call(txid, {"sleep": 2.0}, timeout=0.5)
    waited = time.monotonic() - began
    assert 0.5 <= waited < 2.0, waited
    assert Mailman.call(txid, "seen", timeout=10) == []
    Mailman.stop(txid)


def test_a_handler_that_raises_gives_the_caller_an_error_and_the_tracker_is_restarted(
    cluster: Cluster, txid: str
) -> None:
    Mailman.start(txid)
    first = mailman(txid)
    with pytest.raises(tracking.TrackerCrashed, match="the handler blew up"):
        Mailman.call(txid, "boom", timeout=10)
    second = wait_for(lambda: (r := Mailman.lookup(txid)) is not None and r.epoch > first.epoch and r)
    assert second.restarts == 1
    assert Mailman.call(txid, "seen", timeout=10) == [], "the poison call was dropped, not redelivered"
    Mailman.stop(txid)


def test_a_tracker_calling_itself_gets_an_error_at_once(cluster: Cluster, txid: str) -> None:
    Mailman.start(txid)
    mailman(txid)
    with pytest.raises(tracking.TrackerCrashed, match="called itself"):
        Mailman.call(txid, "self", timeout=10)
    Mailman.stop(txid)


def test_a_message_that_is_not_json_raises_and_queues_nothing(stack: object, txid: str) -> None:
    Counter.start(txid)
    Mailman.start(txid)
    settings = tracking.celery.current_settings()
    with registry.engine(settings).connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar_one()
    for bad in ({1, 2}, {"x": float("nan")}, object()):
        with pytest.raises(tracking.StateNotSerializable):
            Mailman.cast(txid, bad)
        with pytest.raises(tracking.StateNotSerializable):
            Mailman.call(txid, bad)
    with registry.engine(settings).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar_one() == before
    with pytest.raises(TypeError, match="handle_cast"):
        Counter.cast(txid, {"n": 1})
    Counter.stop(txid)
    Mailman.stop(txid)
