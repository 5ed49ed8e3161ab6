"""A batch of parked trackers ticked together, in the pool thread that took the batch's message.

The waker publishes the parked entries of one kind that woke for their tick together as one
:class:`Batch`. The batch is claimed in one statement; each claimed entry is an incarnation of
this process like any other (a stop request, a warm shutdown or a lost lease reaches it through
the control loop); each is ticked (one after another, or all at once by the kind's ``tick_many``)
and the batch is parked again in one statement. Each entry is fenced alone: one superseded since
its wake-up is left out of the claim or the park, one that crashes or is ``Done`` exits under its
own policy, and the others go on. An entry that cannot park (a message or a stop request arrived
meanwhile) is checkpointed and handed to an incarnation of its own, which deals with it.

Every claimed entry stays inside its unit of work from its tick to the batch's park: a warm
shutdown lets the batch end and park it, and hands off at once those not ticked yet.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from tracking import registry, timings
from tracking.client import publish_or_warn, running_here
from tracking.exceptions import Done, Fenced, RegistryRefused, RegistryUnavailable
from tracking.tracker import Tracker
from tracking.validation import json_object
from tracking.worker.exits import interrupted
from tracking.worker.incarnation import Incarnation
from tracking.worker.process import WorkerProcess
from tracking.worker.retry import retrying
from tracking.worker.runner import _Run
from tracking.worker.waker import Batch

log = logging.getLogger("tracking.worker")


def run_batch(tracker_cls: type[Tracker], batch: Batch, wp: WorkerProcess) -> str:
    """Claim the batch's entries, tick them and park them again. Returns how it ended."""
    kind = tracker_cls.kind
    if wp.shutting_down.is_set() or not _has_lease(wp, kind):
        # Not claimed here: published again for the next worker (if that fails, its entries stay
        # pending and a sweep publishes each of them again after the start grace).
        if wp.publish_batch is not None:
            _quietly(functools.partial(wp.publish_batch, batch))
        return "handed off before claim"
    try:
        rows = retrying(
            f"{kind} batch {batch.task_id}",
            lambda: registry.claim_batch(
                wp.settings,
                kind,
                batch.members,
                worker=wp.hostname,
                worker_id=wp.worker_id,
                policy=tracker_cls.policy,
            ),
            wp.shutting_down,
        )
    except RegistryUnavailable:  # only while shutting down
        return "left to the supervisor"
    except (RegistryRefused, ValueError) as exc:  # it would fail the same way again
        log.error("%s batch %s: claim refused: %s", kind, batch.task_id, exc)
        return "refused"
    runs = [_Run(tracker_cls, row, _incarnation(row, batch), wp) for row in rows]
    for run in runs:
        wp.add(run.inc)
    try:
        return _Batch(tracker_cls, runs, wp).run(len(batch.members))
    finally:
        for run in runs:
            wp.remove(run.inc)


def _has_lease(wp: WorkerProcess, kind: str) -> bool:
    try:
        wp.start()
    except (RegistryUnavailable, RegistryRefused) as exc:
        log.error("%s batch: this worker has no lease (%s); left to the supervisor", kind, exc)
        return False
    return wp.wait_for_lease_to_claim()


def _incarnation(row: registry.Entry, batch: Batch) -> Incarnation:
    inc = Incarnation(row.id, row.epoch, row.kind, row.transaction_id, row.task_id, row.worker_id or "")
    inc.batch_task_id = batch.task_id  # a revoke of the batch's task stops it
    # The waker batches only entries with no mail waiting; one that gets some cannot park.
    inc.mail = False
    return inc


class _Batch:
    def __init__(self, tracker_cls: type[Tracker], runs: list[_Run], wp: WorkerProcess) -> None:
        self.cls, self.runs, self.wp = tracker_cls, runs, wp
        self.settings = wp.settings
        self.claimed = time.monotonic()

    def _late(self, run: _Run) -> None:
        """Observe how late the run's tick starts: its schedule by the database clock at the claim,
        and the time since the claim by this process's."""
        tick_at, claimed_at = run.row.tick_at, run.row.db_now
        if tick_at is not None and claimed_at is not None:
            late = (claimed_at - tick_at).total_seconds() + time.monotonic() - self.claimed
            timings.tick_lateness.observe(run.inc.kind, late)

    def run(self, named: int) -> str:
        ticked = self._tick()
        parked, exits = self._park(ticked)
        for finish in exits:
            _quietly(finish)
        return f"batch of {named}: {len(self.runs)} claimed, {parked} parked, {len(exits)} exited"

    def _tick(self) -> list[tuple[_Run, Any]]:
        """Each run that may go on, with its tick's outcome (a state, Done, or an exception)."""
        kind, rate, wp = self.cls.kind, self.cls.rate_limit, self.wp
        # A throttle that gives up has found its runs interrupted: each then leaves as it is told.
        if self.cls.ticks_in_bulk():
            # One call for the batch: its tokens are taken together (they come as a burst).
            wp.throttle(kind, rate, len(self.runs), lambda: all(_stopped(r.inc) for r in self.runs))
            ready = [run for run in self.runs if self._begin(run)]
            return list(zip(ready, self._tick_many(ready), strict=True))
        outcomes = []
        for run in self.runs:  # a token for each tick, just before it: the limit holds over any window
            wp.throttle(kind, rate, 1, functools.partial(_stopped, run.inc))
            if self._begin(run):
                outcomes.append((run, self._tick_one(run)))
        return outcomes

    def _begin(self, run: _Run) -> bool:
        """Enter the run's unit of work; an interrupted one leaves as its interrupt says."""
        if run.row.state is not None and self.wp.wait_for_lease(run.inc) and run.inc.begin_work():
            return True
        if run.row.state is None:  # never initialised: an incarnation of its own runs init
            self._hand_off([run], "not initialised")
        else:
            _quietly(functools.partial(interrupted, run))
        return False

    def _tick_one(self, run: _Run) -> Any:
        self._late(run)
        here = running_here.set((run.inc.kind, run.inc.transaction_id))
        try:
            with timings.tick_durations.time(run.inc.kind):
                return run.tracker.tick(dict(run.row.state or {}))
        except Exception as exc:  # Done included: an outcome like any other
            return exc
        finally:
            running_here.reset(here)

    def _tick_many(self, ready: list[_Run]) -> Sequence[Any]:
        if not ready:
            return []
        due = [(run.tracker, dict(run.row.state or {})) for run in ready]
        for run in ready:
            self._late(run)
        began = time.perf_counter()
        try:
            outcomes = list(self.cls.tick_many(due))
            if len(outcomes) != len(due):
                raise TypeError(
                    f"{self.cls.__name__}.tick_many returned {len(outcomes)} outcomes for {len(due)} trackers"
                )
        except Exception as exc:  # the hook itself failed: every entry of the batch with it
            outcomes = [exc] * len(due)
        share = (time.perf_counter() - began) / len(due)
        for _ in due:
            timings.tick_durations.observe(self.cls.kind, share)
        return outcomes

    def _park(self, ticked: list[tuple[_Run, Any]]) -> tuple[int, list[Callable[[], object]]]:
        """Park the runs whose tick gave a state; returns how many parked, and the exits to record."""
        limit = self.settings.max_state_bytes
        states: list[tuple[_Run, dict[str, Any]]] = []
        exits: list[Callable[[], object]] = []
        for run, outcome in ticked:
            if isinstance(outcome, Done):
                exits.append(functools.partial(run.done, outcome))
            elif isinstance(outcome, BaseException):
                exits.append(functools.partial(run.crashed, outcome))
            else:
                try:
                    states.append((run, json_object(outcome, "tick's state", limit)))
                except Exception as exc:  # not storable: a crash of that entry alone
                    exits.append(functools.partial(run.crashed, exc))
        rows = [(run.inc.row_id, run.inc.epoch, state) for run, state in states]
        try:
            parked = retrying(
                f"{self.cls.kind} batch park",
                lambda: registry.park_batch(self.settings, rows, self.cls.interval),
                self.wp.shutting_down,
            )
        except RegistryUnavailable:  # only at shutdown: the leases run out, a sweep restarts them
            return 0, exits
        left = []
        for run, state in states:
            run.inc.end_work()
            if run.inc.row_id not in parked:
                left.append((run, state))
        self._not_parked(left)
        return len(parked), exits

    def _not_parked(self, left: list[tuple[_Run, dict[str, Any]]]) -> None:
        """Entries that could not park: checkpointed, then stopped as asked or handed on."""
        handing = []
        for run, state in left:
            try:
                run.checkpoint(state)
            except Fenced:
                continue  # superseded: it writes nothing more
            except RegistryUnavailable:
                return
            if run.inc.interrupt is not None:
                _quietly(functools.partial(interrupted, run))
            else:
                handing.append(run)
        # Its next tick stays where it was: the new incarnation handles the message, then parks.
        self._hand_off(handing, "a message waits: run on its own", self.cls.interval)

    def _hand_off(self, runs: list[_Run], reason: str, interval: float | None = None) -> None:
        if not runs:
            return
        pairs = [(run.inc.row_id, run.inc.epoch) for run in runs]
        try:
            rows = retrying(
                f"{self.cls.kind} batch handoff",
                lambda: registry.hand_off(self.settings, pairs, reason, interval),
                self.wp.shutting_down,
            )
        except RegistryUnavailable:
            return
        for row in rows:
            publish_or_warn(self.wp.publish, row)


def _stopped(inc: Incarnation) -> bool:
    """The incarnation was interrupted (a stop, a handoff, fenced): it waits for nothing more."""
    return inc.interrupt is not None


def _quietly(write: Callable[[], object]) -> None:
    """An exit of one entry of a batch: superseded, or the registry gone at shutdown, it is left
    alone (a sweep restarts it) and the batch goes on."""
    try:
        write()
    except (Fenced, RegistryUnavailable):
        pass
