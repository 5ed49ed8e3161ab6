"""The run of one incarnation, in the pool thread that took its message: claim the entry, then
init if it never completed, then messages and ticks until it exits, parks, or is interrupted.

Each unit of work (init, a tick, a batch of messages) runs with its checkpoint inside
``Incarnation.begin_work()``/``end_work()``: a warm shutdown lets the unit end and be checkpointed
before the entry is handed off. A unit that raises stays busy while its exit is recorded.

From a message to a running tracker: the claim is one statement (with its ``running`` event), and
init's state is written with the first tick's checkpoint, so a first start costs two writes. Until
that first write lands, init and the first tick are one unit of work, and every other way out of
it writes init's state first (a crash, a stop, a handoff, a ``Done`` of a permanent tracker, mail
handled before the first tick), so that a restart runs init again only if it never completed. Only
a worker lost during the first tick (killed, cut off) leaves no state: its next incarnation runs
init again, as one lost between init and its own checkpoint always did.
"""

from __future__ import annotations

import logging
import time
from typing import Any, TypeVar

from tracking import registry, timings
from tracking.client import Publication, running_here
from tracking.exceptions import Done, Fenced, RegistryRefused, RegistryUnavailable
from tracking.models import Entry
from tracking.tracker import Tracker
from tracking.validation import json_object
from tracking.worker.exits import Exits, interrupted
from tracking.worker.incarnation import Incarnation
from tracking.worker.mailbox import Mailbox
from tracking.worker.process import WorkerProcess
from tracking.worker.retry import retrying

log = logging.getLogger("tracking.worker")
T = TypeVar("T")


def run(tracker_cls: type[Tracker], transaction_id: str, epoch: int, task_id: str, wp: WorkerProcess) -> str:
    """Claim the entry for ``epoch`` and run the tracker until it exits. Returns how it ended."""
    message = Publication(tracker_cls.kind, transaction_id, epoch, task_id)
    fields = log_fields(tracker_cls.kind, transaction_id, epoch, task_id, wp.hostname)
    if wp.shutting_down.is_set():
        # Do not claim work on the way out; the next worker takes the same message.
        wp.publish(message)
        return "handed off before claim"
    try:
        wp.start()
    except (RegistryUnavailable, RegistryRefused) as exc:  # no lease, no claim: published again later
        log.error(
            "%s %s: this worker has no lease (%s); left to the supervisor",
            tracker_cls.kind,
            transaction_id,
            exc,
            extra=fields,
        )
        return "left to the supervisor"
    if not wp.wait_for_lease_to_claim():
        wp.publish(message)
        return "handed off before claim"
    try:
        row = _claim(tracker_cls, transaction_id, epoch, wp)
    except RegistryUnavailable:  # only while shutting down: published again after the start grace
        return "left to the supervisor"
    except RegistryRefused as exc:  # it would fail the same way again: rejected once, logged
        log.error(
            "%s %r epoch %r: claim refused: %s", tracker_cls.kind, transaction_id, epoch, exc, extra=fields
        )
        return "refused"
    if row is None:
        log.info(
            "%s %s epoch %s: not claimed (duplicate or stale message)",
            tracker_cls.kind,
            transaction_id,
            epoch,
            extra=fields,
        )
        return "dropped"
    inc = Incarnation(row.id, epoch, tracker_cls.kind, transaction_id, row.task_id, row.worker_id or "")
    inc.mail = row.last_message_id > row.handled_message_id
    wp.add(inc)
    try:
        return _Run(tracker_cls, row, inc, wp).run()
    except Fenced:  # found superseded while recording its exit: it writes nothing more
        return "fenced"
    except RegistryUnavailable:  # only at shutdown: the lease runs out, a supervisor restarts it
        return "left to the supervisor"
    finally:
        wp.remove(inc)


def log_fields(kind: str, transaction_id: str, epoch: int, task_id: str, worker: str) -> dict[str, Any]:
    """The fields of a tracker's log records (``extra=``), for formatters that write them apart
    (JSON logs): ``record.kind``, ``record.transaction_id``, ``record.epoch``, ``record.task_id``,
    ``record.worker``."""
    return {
        "kind": kind,
        "transaction_id": transaction_id,
        "epoch": epoch,
        "task_id": task_id,
        "worker": worker,
    }


def _claim(tracker_cls: type[Tracker], transaction_id: str, epoch: int, wp: WorkerProcess) -> Entry | None:
    """Claim the entry, retrying while the registry is unavailable (the message is acknowledged
    already: giving up would leave the entry to the supervisor's start grace).

    A retry after a claim whose commit succeeded but whose answer was lost finds the entry running
    and returns None; the process then holds an entry it does not run, which the control loop
    finds and hands off.
    """
    return retrying(
        f"{tracker_cls.kind} {transaction_id}",
        lambda: registry.claim(
            wp.settings,
            tracker_cls.kind,
            transaction_id,
            epoch,
            worker=wp.hostname,
            worker_id=wp.worker_id,
            policy=tracker_cls.policy,
        ),
        wp.shutting_down,
    )


class _Run(Exits):
    """One incarnation's loop (its writes and exits: :class:`Exits`)."""

    def __init__(self, tracker_cls: type[Tracker], row: Entry, inc: Incarnation, wp: WorkerProcess):
        self.cls, self.row, self.inc, self.wp = tracker_cls, row, inc, wp
        self.settings = wp.settings
        self.tracker = tracker_cls.incarnate(row)
        self.box = Mailbox(self.tracker, row, self.settings, self.persist)
        self.fields = log_fields(inc.kind, inc.transaction_id, inc.epoch, inc.task_id, wp.hostname)
        park = tracker_cls.park
        self.parks = park if park is not None else 0 < self.settings.park_seconds <= tracker_cls.interval
        #: init's state until it is written (with the first tick's checkpoint, or before any exit)
        self.unsaved: dict[str, Any] | None = None

    def run(self) -> str:
        inc = self.inc
        who = (inc.kind, inc.transaction_id)
        here = running_here.set(who)
        try:
            return self._loop()
        except Done as done:
            return self.done(done)
        except Fenced:
            log.warning("%s %s epoch %s fenced out", *who, inc.epoch, extra=self.fields)
            return "fenced"
        except RegistryUnavailable:
            # Only while shutting down do we stop retrying: the lease then runs out and a
            # supervisor restarts the tracker elsewhere.
            log.warning("%s %s: registry unavailable at shutdown", *who, extra=self.fields)
            return "left to the supervisor"
        except Exception as exc:
            return self.crashed(exc)
        finally:
            running_here.reset(here)

    def _loop(self) -> str:
        inc, wp, limit = self.inc, self.wp, self.settings.max_state_bytes
        state = self.row.state
        if state is None:  # init never completed: first start (or it crashed in init)
            if not wp.wait_for_lease(inc) or not inc.begin_work():
                return interrupted(self)
            state = json_object(self.tracker.init(inc.transaction_id, **self.row.args), "init's state", limit)
            # Written with the first tick's checkpoint; the unit of work goes on until then.
            self.unsaved = state
        next_tick = time.monotonic()
        tick_at, claimed_at = self.row.tick_at, self.row.db_now
        if tick_at is not None and claimed_at is not None:  # woken from its park: it keeps its schedule
            next_tick += max(0.0, (tick_at - claimed_at).total_seconds())
        may_park = True
        while True:
            # Cleared before the flags are read: a wake-up set after this is never lost.
            inc.wake.clear()
            if not wp.wait_for_lease(inc) or not inc.begin_work():
                return interrupted(self)
            if inc.mail:  # messages first: a call is answered now, not at the next tick
                inc.mail = False
                self.settle()  # the handlers start from init's state, written first
                state, may_park = self.box.drain(state, lambda: wp.holds(inc)), True
            elif time.monotonic() >= next_tick:
                if not wp.throttle(
                    inc.kind, self.cls.rate_limit, 1, lambda: inc.interrupt is not None or inc.mail
                ):
                    self.end_work()
                    continue
                timings.tick_lateness.observe(inc.kind, time.monotonic() - next_tick)
                with timings.tick_durations.time(inc.kind):  # the tick alone, for /metrics
                    ticked = self.tracker.tick(state)
                state = json_object(ticked, "tick's state", limit)
                # A fixed rate: ticks keep to their schedule (a late or slow tick does not push the
                # later ones back), and one that fell a whole interval behind is not caught up.
                next_tick = max(next_tick + self.cls.interval, time.monotonic())
                if self.park(state, next_tick - time.monotonic()):
                    return "parked"
                self.checkpoint(state)  # (a message or stop request waits if it could not park)
            elif may_park and self.park(state, next_tick - time.monotonic()):
                return "parked"
            else:
                may_park = False  # until the waiting message is handled
                self.settle()
                inc.end_work()
                inc.wake.wait(next_tick - time.monotonic())
                continue
            inc.end_work()

    def end_work(self) -> None:
        """End the unit of work, unless init's state is still unwritten (it goes on: a warm
        shutdown then waits for it, and the incarnation hands itself off with init's state)."""
        if self.unsaved is None:
            self.inc.end_work()

    def settle(self) -> None:
        """Write init's state if nothing has written it yet."""
        if self.unsaved is not None:
            self.checkpoint(self.unsaved)
