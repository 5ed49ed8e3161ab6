"""Real concurrency on PostgreSQL: the races that need threads (claim vs sweep, stop vs crash,
handoff vs tick, a message delivered twice).

Each test releases two registry operations together from two threads with a ``threading.Barrier``
(never a sleep), for ``ROUNDS`` rounds, each on a fresh transaction ID, and after each round checks
the invariant that must hold whichever order the database picked. The database's clock is moved by
SQL, as in ``test_transitions``, whose helpers these tests share.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from functools import partial
from typing import TypeVar, cast

import pytest
import sqlalchemy as sa

from tests.harness import at_once, wait_for
from tests.registry.test_transitions import (
    KIND,
    PERMANENT,
    POLICY,
    claim,
    delete_worker_row,
    entry,
    expire_lease,
    new_worker,
    started_and_claimed,
    sweep,
)
from tracking import registry
from tracking.client import Publishable
from tracking.exceptions import Fenced
from tracking.models import Entry
from tracking.policy import Action, Decision
from tracking.registry.transitions import live_lease
from tracking.settings import Settings

# Only PostgreSQL: SQLite's single write lock serializes every writer, so nothing races there.
pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

ROUNDS = 30
A = TypeVar("A")
B = TypeVar("B")


def race(a: Callable[[], A], b: Callable[[], B]) -> tuple[A | BaseException, B | BaseException]:
    """Run ``a`` and ``b`` on two threads released together; each one's result, or the exception it
    raised."""
    first, second = at_once([a, b])
    return cast("A | BaseException", first), cast("B | BaseException", second)


def ok(result: A | BaseException) -> A:
    """The result of an operation that must not have raised."""
    if isinstance(result, BaseException):
        raise result
    return result


def new_txid() -> str:
    return f"race-{uuid.uuid4().hex[:12]}"


def assert_not_stranded(settings: Settings, txid: str) -> None:
    """A running entry's worker holds a live lease, by the database clock."""
    row = entry(settings, txid)
    if row is not None and row.status == "running":
        with registry.engine(settings).connect() as conn:
            live = conn.execute(sa.select(live_lease(row.worker_id, settings))).scalar_one()
        assert live, f"{txid} is running under {row.worker_id}, which has no live lease: stranded"


def expire_and_sweep(settings: Settings, worker_id: str) -> list[Publishable]:
    expire_lease(settings, worker_id)
    return sweep(settings)


# -- claim vs sweep ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["lease expired", "row deleted"])
def test_a_claim_by_a_worker_without_a_live_lease_racing_a_sweep_is_refused(
    registry_settings: Settings, how: str
) -> None:
    """A worker whose lease expired (or whose row is gone) claims a pending entry while a sweep
    declares it lost and forgets it: the claim is refused, and the entry stays pending under its
    epoch, running under nobody and republished by no sweep."""
    settings = registry_settings
    for _ in range(ROUNDS):
        txid = new_txid()
        row, _ = registry.start(settings, KIND, txid, {}, POLICY)
        worker_id = new_worker(settings)
        if how == "lease expired":
            expire_lease(settings, worker_id)
        else:
            delete_worker_row(settings, worker_id)

        claimed, published = race(
            partial(claim, settings, txid, row.epoch, worker_id), partial(sweep, settings)
        )

        assert ok(claimed) is None
        assert txid not in {r.transaction_id for r in ok(published)}
        sweep(settings)
        after = entry(settings, txid)
        assert after is not None and (after.status, after.epoch) == ("pending", row.epoch)


def test_a_claim_racing_the_expiry_of_its_lease_and_a_sweep_leaves_nothing_stranded(
    registry_settings: Settings,
) -> None:
    """A worker with a live lease claims a pending entry while another thread expires that lease
    and sweeps. Whichever commits first, after one more sweep the entry is not running under the
    lost worker: it is pending, under the same epoch if the claim was refused, under the next one
    (rescued exactly once) if it succeeded. The epoch never goes back."""
    settings = registry_settings
    for _ in range(ROUNDS):
        txid = new_txid()
        row, _ = registry.start(settings, KIND, txid, {}, POLICY)
        worker_id = new_worker(settings)

        claimed, published = race(
            partial(claim, settings, txid, row.epoch, worker_id),
            partial(expire_and_sweep, settings, worker_id),
        )

        won = ok(claimed) is not None
        mine = [r for r in ok(published) if r.transaction_id == txid]
        assert all(r.epoch == row.epoch + 1 for r in mine)  # only a rescue publishes it
        published_again = [r for r in sweep(settings) if r.transaction_id == txid]
        assert len(mine) + len(published_again) == (1 if won else 0), "rescued twice, or never"
        assert_not_stranded(settings, txid)
        after = entry(settings, txid)
        assert after is not None and after.status == "pending"
        assert after.epoch == row.epoch + (1 if won else 0) and after.restarts == (1 if won else 0)


def test_a_claim_that_commits_after_a_whole_sweep_declared_its_worker_lost_is_rescued(
    registry_settings: Settings,
) -> None:
    """The worst interleaving of the race above, forced: the claim's update has passed the lease
    check but not committed while the lease expires and a whole sweep runs (which declares the
    worker lost and may forget its row, seeing no running entry). Once the claim commits, the entry
    is running under a worker with no live lease (or no lease row at all), and the next sweep must
    rescue it."""
    settings = registry_settings
    gate = threading.Barrier(2)
    # The claim is one statement on PostgreSQL (its update and its event's insert): it is held
    # open by a trigger on that insert, which waits for an advisory lock the test holds meanwhile.
    with registry.engine(settings).begin() as conn:
        conn.exec_driver_sql(HOLD_RUNNING_EVENTS)
    holder = registry.engine(settings).connect()
    held = partial(holder.exec_driver_sql, f"SELECT pg_advisory_lock({HOLD_KEY})")
    released = partial(holder.exec_driver_sql, f"SELECT pg_advisory_unlock({HOLD_KEY})")

    def waiting_at_its_insert() -> bool:
        with registry.engine(settings).connect() as conn:
            return bool(conn.exec_driver_sql(WAITERS, {"key": HOLD_KEY}).scalar_one())

    def expire_and_sweep_between(worker_id: str) -> list[Publishable]:
        gate.wait(timeout=60)
        wait_for(waiting_at_its_insert, timeout=60)  # the claim has passed its lease check
        try:
            return expire_and_sweep(settings, worker_id)
        finally:
            released()  # the sweep is over: let the claim commit

    def claim_held(txid: str, epoch: int, worker_id: str) -> Entry | None:
        gate.wait(timeout=60)
        return claim(settings, txid, epoch, worker_id)

    for _ in range(5):
        txid = new_txid()
        row, _ = registry.start(settings, KIND, txid, {}, POLICY)
        worker_id = new_worker(settings)

        held()
        claimed, published = race(
            partial(claim_held, txid, row.epoch, worker_id),
            partial(expire_and_sweep_between, worker_id),
        )

        assert ok(claimed) is not None and txid not in {r.transaction_id for r in ok(published)}
        assert [r.epoch for r in sweep(settings) if r.transaction_id == txid] == [row.epoch + 1]
        assert_not_stranded(settings, txid)
    holder.close()


#: an advisory lock key of this module's own
HOLD_KEY = 7_130_406
#: a trigger that holds the statement recording a "running" event until HOLD_KEY is free
HOLD_RUNNING_EVENTS = f"""
CREATE FUNCTION hold_running_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.event = 'running' THEN
        PERFORM pg_advisory_lock({HOLD_KEY});
        PERFORM pg_advisory_unlock({HOLD_KEY});
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER hold_running_event BEFORE INSERT ON tracking_events
    FOR EACH ROW EXECUTE FUNCTION hold_running_event();
"""
WAITERS = """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
    AND objid = %(key)s"""


# -- stop vs crash -----------------------------------------------------------------------------------


@pytest.mark.parametrize("exit_", ["crash", "permanent done"])
def test_a_normal_stop_racing_the_incarnations_exit_always_wins(
    registry_settings: Settings, exit_: str
) -> None:
    """``stop("normal")`` races the running incarnation's crash report (or the ``Done`` of a
    permanent tracker). Either the stop is recorded first and the exit deregisters the entry, or
    the exit restarts it first and the stop removes the pending restart: the entry is gone, a
    sweep brings nothing back, and the next epoch can never be claimed."""
    settings = registry_settings
    policy = POLICY if exit_ == "crash" else PERMANENT
    event, detail, normal = ("crashed", "boom", False) if exit_ == "crash" else ("done", None, True)
    for _ in range(ROUNDS):
        txid = new_txid()
        running, worker_id = started_and_claimed(settings, txid, policy)

        stopped, exited = race(
            partial(registry.request_stop, settings, KIND, txid, "normal"),
            partial(
                registry.exit_abnormally,
                settings,
                running.id,
                running.epoch,
                event,
                detail,
                normal=normal,
            ),
        )

        outcome, _ = ok(stopped)
        decision: Decision = ok(exited)[0]
        if outcome == "requested":  # the stop first: the exit honours it
            assert decision.action is Action.DEREGISTER
        else:  # the exit first: the stop removes its restart
            assert (outcome, decision.action) == ("removed", Action.RESTART)
        assert entry(settings, txid) is None
        assert txid not in {r.transaction_id for r in sweep(settings)}
        assert entry(settings, txid) is None
        assert claim(settings, txid, running.epoch + 1, worker_id, policy) is None


# -- handoff vs tick ---------------------------------------------------------------------------------


def test_a_checkpoint_racing_a_handoff_is_either_carried_over_or_refused(
    registry_settings: Settings,
) -> None:
    """The running incarnation checkpoints its tick's state while its worker hands the entry off.
    The handoff always goes through (pending, next epoch). Either the checkpoint was accepted and
    the handed-off entry carries its state, or it was refused (Fenced) and the entry carries the
    previous one: an accepted checkpoint is never lost."""
    settings = registry_settings
    before, tick = {"tick": 0}, {"tick": 1}
    for _ in range(ROUNDS):
        txid = new_txid()
        running, _ = started_and_claimed(settings, txid)
        registry.checkpoint(settings, running.id, running.epoch, before)

        checkpointed, handed = race(
            partial(registry.checkpoint, settings, running.id, running.epoch, tick),
            partial(registry.hand_off, settings, [(running.id, running.epoch)], "shutting down"),
        )

        if isinstance(checkpointed, Fenced):
            expected = before
        else:
            assert ok(checkpointed) is None
            expected = tick
        rows = ok(handed)
        assert [(r.status, r.epoch) for r in rows] == [("pending", running.epoch + 1)]
        assert rows[0].state == expected, "the successor does not start from the last checkpoint"
        after = entry(settings, txid)
        assert after is not None and (after.status, after.epoch) == ("pending", running.epoch + 1)
        assert after.state == expected


# -- a message delivered twice -----------------------------------------------------------------------


def test_two_claims_of_the_same_epoch_by_two_live_workers_exactly_one_wins(
    registry_settings: Settings,
) -> None:
    """Two workers with live leases claim the same pending epoch (a message delivered twice):
    exactly one claim succeeds, the entry runs under the winner, under that epoch, and its start
    is recorded once."""
    settings = registry_settings
    for _ in range(ROUNDS):
        txid = new_txid()
        row, _ = registry.start(settings, KIND, txid, {}, POLICY)
        first, second = new_worker(settings), new_worker(settings)

        one, other = race(
            partial(claim, settings, txid, row.epoch, first),
            partial(claim, settings, txid, row.epoch, second),
        )

        winners = [w for w, got in ((first, ok(one)), (second, ok(other))) if got is not None]
        assert len(winners) == 1, f"{len(winners)} claims of one epoch succeeded"
        after = entry(settings, txid)
        assert after is not None
        assert (after.status, after.epoch, after.worker_id) == ("running", row.epoch, winners[0])
        running = [e for e in registry.history(settings, KIND, txid) if e.event == "running"]
        assert len(running) == 1
        assert_not_stranded(settings, txid)
