"""An incarnation given up or asked to leave: entries handed back as pending under a new epoch (a
worker shutting down, a batch's entry that must run on its own), and a stop requested of a
tracker, whatever its status. Every precondition comes from :mod:`tracking.registry.transitions`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from tracking.exceptions import NotFound
from tracking.models import Entry, Status, trackers
from tracking.policy import Action
from tracking.registry.core import _write
from tracking.registry.exits import _deregister, apply_exits
from tracking.registry.rows import (
    _entries,
    _entries_by_id,
    _events,
    _now,
    _one,
    _tracker_with_lease,
    _wake,
)
from tracking.registry.transitions import (
    WINNING_STOPS,
    Op,
    fresh_incarnation,
    guard,
    new_task_id,
    next_tick,
    plan_exit,
)
from tracking.settings import Settings


def hand_off(
    settings: Settings, incarnations: Sequence[tuple[int, int]], reason: str, interval: float | None = None
) -> list[Entry]:
    """Give entries back as pending, each under a new epoch: a handoff, not a crash. With
    ``interval``, entries that have just ticked keep their schedule (``transitions.next_tick``):
    their new incarnation ticks when the next tick is due, not at once.

    ``incarnations`` are ``(row id, epoch)`` pairs; an entry no longer held by that epoch is left
    alone, and one with a stop recorded exits as that stop would have made it exit (a winning stop
    deregisters it, another is an abnormal exit under its policy). Returns the new pending rows,
    to publish. Atomicity: one transaction for all of them (a worker shutting down
    with thousands of trackers makes one round trip, not thousands).
    """
    if not incarnations:
        return []
    wanted = dict(incarnations)
    with _write(settings) as conn:
        owned: list[Entry] = []
        ids = list(wanted)
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            stmt = _tracker_with_lease.where(trackers.c.id.in_(chunk), trackers.c.status == Status.RUNNING)
            owned += _entries(conn, stmt.with_for_update(of=trackers))
        owned = [r for r in owned if wanted[r.id] == r.epoch]
        # A recorded stop is honoured, not handed on: a winning one deregisters, any other is an
        # abnormal exit under the restart policy (a temporary tracker asked to crash stays dead).
        stopped = [r for r in owned if r.stop_reason is not None]
        restarted: list[Entry] = []
        if stopped:
            now = _now(conn)
            plans = [plan_exit(r, now, "stopped", f"stop({r.stop_reason!r}); handed off") for r in stopped]
            new_rows = apply_exits(settings, conn, plans)
            restarted = [r for r in new_rows if r is not None and r.status is Status.PENDING]
        owned = [r for r in owned if r.stop_reason is None]
        if not owned:
            return restarted
        values = {**fresh_incarnation(settings), "task_id": sa.bindparam("b_task")}
        if interval is not None:
            values["tick_at"] = next_tick(interval)
        conn.execute(
            trackers.update()
            .where(trackers.c.id == sa.bindparam("b_id"))
            .where(*guard(Op.HAND_OFF, epoch=sa.bindparam("b_epoch")))
            .values(values),
            [{"b_id": r.id, "b_epoch": r.epoch, "b_task": new_task_id()} for r in owned],
        )
        _events(conn, [(r, "handoff", reason) for r in owned])
        return restarted + _entries_by_id(conn, [r.id for r in owned])


# -- stop --------------------------------------------------------------------------------------


def request_stop(
    settings: Settings, kind: str, transaction_id: str, reason: str, task_id: str | None = None
) -> tuple[str, Entry | None]:
    """Ask a tracker to stop. Returns what happened and the row to act on:

    ``("requested", row)``   it is running; its incarnation will exit (wait for the epoch to change)
    ``("removed", None)``    it was pending, parked, failed or dead and is deregistered now
    ``("restarting", row)``  an abnormal stop of a pending or parked tracker: restarted by its
                             policy (publish it if pending; a failed one waits for its backoff)
    ``("dead", row)``        the same, past its restart intensity (or temporary): left dead
    ``("unchanged", row)``   an abnormal stop of a tracker already failed and awaiting its restart

    A winning stop (normal, shutdown) already recorded on a running entry is never replaced by
    another reason. With ``task_id``, only that incarnation is stopped (``("unchanged", row)`` if
    another one holds the entry). Raises NotFound when nothing is registered. Atomicity: one
    transaction, conditional on epoch.
    """
    normal = reason in WINNING_STOPS
    with _write(settings) as conn:
        row = _one(conn, trackers.c.kind == kind, trackers.c.transaction_id == transaction_id, lock=True)
        if row is None:
            raise NotFound(f"no {kind} tracker is registered for {transaction_id!r}")
        if task_id is not None and row.task_id != task_id:
            return "unchanged", row
        if row.status is Status.RUNNING:
            if row.stop_reason not in WINNING_STOPS:
                conn.execute(
                    trackers.update()
                    .where(trackers.c.id == row.id, *guard(Op.STOP))
                    .where(trackers.c.epoch == row.epoch)
                    .values(stop_reason=reason)
                )
            _wake(conn, row.id, "stop")
            return "requested", row
        if normal or row.status is Status.DEAD:
            _deregister(conn, row, "stopped", f"stop({reason!r}) while {row.status}")
            return "removed", None
        if row.status is Status.FAILED:
            return "unchanged", row
        plan = plan_exit(row, _now(conn), "stopped", f"stop({reason!r}) while {row.status}")
        new = apply_exits(settings, conn, [plan])[0]
        outcome = {Action.RESTART: "restarting", Action.DEAD: "dead"}.get(plan.decision.action, "removed")
        return outcome, new
