"""The run loop of one incarnation, and the per-process runtime all incarnations share.

A worker process that runs trackers has one :class:`WorkerRuntime`: a row in ``tracking_workers``
that is the lease of every tracker in the process, renewed by one background thread (one write per
heartbeat interval, whatever the number of trackers). The same thread polls for stop requests
addressed to this process's trackers and wakes them, and starts a supervisor sweep now and then
(on a thread of its own: a sweep publishes to the broker, which must never hold up the lease).

The runtime also wakes parked trackers (on a thread of its own): a tracker whose interval is long
parks between ticks, giving its worker slot back; when its next tick is due, or a message or stop
request arrives for it, the waker makes its entry pending under a new epoch and publishes it, and
whichever worker takes the message runs the tick. Parking never uses the broker's ETA or countdown.

The lease is also this process's own fence: a tracker ticks only while the last successful renewal
is younger than the lease minus one heartbeat, measured from *before* that renewal was sent. A
supervisor declares the process lost only once the lease has expired by the database clock, so a
process cut off from the database (or paused) stops ticking before anyone else can start its
trackers. A renewal refused because the process was declared lost fences all its incarnations:
they exit without writing anything more. Nor does the process claim an entry while its lease is
not known to be valid: a claim under a lease already declared lost would be restarted at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tracking import mailbox, registry
from tracking.exceptions import Done, Fenced, RegistryRefused, RegistryUnavailable
from tracking.mailbox import Mailbox
from tracking.policy import Action
from tracking.redact import redact_url
from tracking.settings import Settings
from tracking.validation import json_object

if TYPE_CHECKING:
    from tracking.tracker import Tracker

log = logging.getLogger("tracking.runtime")
T = TypeVar("T")
#: how long, during a warm shutdown, an incarnation retries a write the registry refuses
SHUTDOWN_PATIENCE = 5.0
#: a parking tracker parks only if its next tick is at least this far away (seconds)
PARK_MIN_WAIT = 0.5
#: the longest the waker sleeps before it looks for due parked trackers again (seconds)
WAKE_POLL = 1.0
#: how many parked trackers one wake-up transaction takes
WAKE_BATCH = 500

Publish = Callable[[registry.Row], None]


@dataclasses.dataclass(eq=False)
class Incarnation:
    """What the runtime knows of one running incarnation."""

    row_id: int
    epoch: int
    kind: str
    transaction_id: str
    task_id: str
    #: the lease it was claimed under: a process declared lost registers a new one, and the
    #: incarnations of the old one are fenced
    worker_id: str = ""
    wake: threading.Event = dataclasses.field(default_factory=threading.Event)
    #: why the incarnation must leave its loop: a stop reason, "handoff" or "fenced"
    interrupt: str | None = None
    #: messages are waiting in its mailbox
    mail: bool = True
    #: inside a unit of work (init, a tick, a batch of messages, each with its checkpoint)
    busy: bool = False
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def interrupt_with(self, reason: str) -> None:
        with self._lock:
            if self.interrupt is None or reason in ("fenced", "handed off"):
                self.interrupt = reason
        self.wake.set()

    def begin_work(self) -> bool:
        """Enter a unit of work; False if the incarnation was interrupted (it must leave)."""
        with self._lock:
            if self.interrupt is not None:
                return False
            self.busy = True
            return True

    def end_work(self) -> None:
        with self._lock:
            self.busy = False

    def hand_off_if_idle(self) -> bool:
        """At a warm shutdown: an idle incarnation is handed off by the runtime (True) and never
        starts another unit of work; a busy one finishes its unit, checkpoints it and then hands
        itself off, so that its successor never ticks while its tick still runs. One already asked
        to stop (a revoke seen by this worker alone) exits with that stop instead."""
        with self._lock:
            if self.interrupt not in (None, "handoff"):
                idle = False  # asked to stop (a revoke) or fenced: it leaves on its own, as asked
            elif not self.busy:
                idle, self.interrupt = True, "handed off"
            else:
                idle, self.interrupt = False, "handoff"
        self.wake.set()
        return idle

    def deliver_mail(self) -> None:
        self.mail = True
        self.wake.set()


class WorkerRuntime:
    """The lease, stop-request poller and shutdown switch of one worker process."""

    def __init__(
        self,
        settings: Settings,
        hostname: str,
        publish: Publish,
        sweep: Callable[[], object] | None = None,
        revoked: Callable[[str], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.hostname = hostname
        self.publish = publish
        self._sweep = sweep
        self._revoked = revoked or (lambda _task_id: False)
        self.pid = os.getpid()
        self.worker_id = ""
        self._incarnations: dict[int, Incarnation] = {}
        self._lock = threading.Lock()
        self._lease_deadline = 0.0
        self._renewed = threading.Condition(self._lock)
        self.shutting_down = threading.Event()
        self._stopped = threading.Event()
        self._poke = threading.Event()
        self._handed_off = False
        self._thread: threading.Thread | None = None
        self._sweeper: threading.Thread | None = None
        self._wake_parked = threading.Event()

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Register this process's lease and start its background thread (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return
            self._register()
            self._thread = threading.Thread(target=self._loop, name="tracking-runtime", daemon=True)
            self._thread.start()
            listener = threading.Thread(
                target=registry.listen_for_wakeups,
                args=(self.settings, self._on_wakeup, self._stopped),
                name="tracking-wakeups",
                daemon=True,
            )
            listener.start()
            waker = threading.Thread(target=self._waker, name="tracking-waker", daemon=True)
            waker.start()

    def _register(self) -> None:
        self.worker_id = f"{self.hostname}/{self.pid}/{uuid.uuid4().hex[:12]}"
        sent = time.monotonic()
        registry.register_worker(self.settings, self.worker_id, self.hostname, self.pid)
        self._lease_deadline = sent + self.settings.lease_seconds - self.settings.heartbeat_seconds

    def begin_shutdown(self) -> None:
        """Warm shutdown: every tracker is handed off at once (its state is checkpointed already).

        This runs in a signal handler, so it only raises a flag and pokes the runtime thread, which
        hands all trackers off in one transaction (``_hand_off_all``).
        """
        self.shutting_down.set()
        self._poke.set()

    def _hand_off_all(self) -> None:
        with self._lock:
            incarnations = [inc for inc in self._incarnations.values() if inc.hand_off_if_idle()]
        began = time.monotonic()
        while True:
            try:
                rows = registry.hand_off(
                    self.settings,
                    [(inc.row_id, inc.epoch) for inc in incarnations],
                    f"worker {self.hostname} shutting down",
                )
                break
            except RegistryUnavailable as exc:
                if time.monotonic() - began > SHUTDOWN_PATIENCE:
                    log.error(
                        "handoff failed, leaving %d trackers to the supervisor: %s", len(incarnations), exc
                    )
                    return
                time.sleep(0.2)
        for row in rows:
            _publish(self, row)
        log.info("handed off %d trackers", len(rows))

    def close(self, timeout: float = 10.0) -> None:
        """Stop the background thread and give the lease up (after the incarnations left)."""
        deadline = time.monotonic() + timeout
        while self._incarnations and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stopped.set()
        self._poke.set()
        self._wake_parked.set()
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.worker_id:
            try:
                registry.retire_worker(self.settings, self.worker_id)
            except RegistryUnavailable as exc:
                log.warning("could not retire worker lease %s: %s", self.worker_id, exc)

    # -- incarnations -----------------------------------------------------------------------------

    def add(self, inc: Incarnation) -> None:
        with self._lock:
            self._incarnations[inc.row_id] = inc
            if inc.worker_id != self.worker_id:  # claimed under a lease declared lost meanwhile
                inc.interrupt_with("fenced")
            elif self.shutting_down.is_set():
                inc.interrupt_with("handoff")

    def remove(self, inc: Incarnation) -> None:
        with self._lock:
            if self._incarnations.get(inc.row_id) is inc:
                del self._incarnations[inc.row_id]

    def running(self) -> int:
        return len(self._incarnations)

    def lease_valid(self) -> bool:
        return time.monotonic() < self._lease_deadline

    def holds(self, inc: Incarnation) -> bool:
        """The incarnation may go on: not interrupted, and its lease is this process's live one."""
        return inc.interrupt is None and inc.worker_id == self.worker_id and self.lease_valid()

    def wait_for_lease(self, inc: Incarnation) -> bool:
        """Block while the lease is not known to be valid; False if the incarnation was interrupted
        or its lease was declared lost (the process holds a new one now)."""
        with self._renewed:
            while not self.lease_valid() or inc.worker_id != self.worker_id:
                if inc.worker_id != self.worker_id:
                    inc.interrupt_with("fenced")
                if inc.interrupt is not None:
                    return False
                self._renewed.wait(timeout=self.settings.control_poll_seconds)
        return inc.interrupt is None

    def wait_for_lease_to_claim(self) -> bool:
        """Block while the lease is not known to be valid; False if the process began shutting down.

        An entry claimed under a lease that has run out would be found an orphan of a lost worker
        at once and restarted a second time; the wait ends when the lease is renewed, or when this
        process, declared lost, registers a fresh one.
        """
        with self._renewed:
            while not self.lease_valid():
                if self.shutting_down.is_set():
                    return False
                self._renewed.wait(timeout=self.settings.control_poll_seconds)
        return not self.shutting_down.is_set()

    # -- the background thread --------------------------------------------------------------------

    def _loop(self) -> None:
        next_beat = time.monotonic() + self.settings.heartbeat_seconds
        next_sweep = time.monotonic() + self.settings.sweep_seconds
        next_stray_check = time.monotonic() + self.settings.lease_seconds
        while True:
            # A wake-up notification (a cast, call or stop for one of ours) pokes an early round.
            self._poke.wait(self.settings.control_poll_seconds)
            self._poke.clear()
            if self._stopped.is_set():
                return
            if self.shutting_down.is_set() and not self._handed_off:
                self._handed_off = True
                self._hand_off_all()
            now = time.monotonic()
            try:
                if now >= next_beat or not self.lease_valid():
                    next_beat = now + self.settings.heartbeat_seconds
                    self._renew()
                self._deliver_signals()
                if now >= next_stray_check and not self.shutting_down.is_set():
                    next_stray_check = now + self.settings.lease_seconds
                    self._hand_off_strays()
                if self._sweep is not None and now >= next_sweep:
                    next_sweep = now + self.settings.sweep_seconds
                    self._sweep_aside()
            except RegistryUnavailable as exc:
                log.warning("registry unavailable in worker runtime: %s", exc)
            except Exception:  # keep the lease thread alive whatever one round does
                log.exception("worker runtime round failed")

    def _sweep_aside(self) -> None:
        """Start a sweep on a thread of its own, unless the last one is still running.

        A sweep publishes to the broker, and every publish fails slowly while the broker is down:
        run in this thread it would hold up the lease renewal, and the trackers with it.
        """
        if self._sweeper is not None and self._sweeper.is_alive():
            return
        self._sweeper = threading.Thread(target=self._sweep_once, name="tracking-sweep", daemon=True)
        self._sweeper.start()

    def _sweep_once(self) -> None:
        assert self._sweep is not None
        try:
            self._sweep()
        except RegistryUnavailable as exc:
            log.warning("registry unavailable in worker sweep: %s", exc)
        except Exception:
            log.exception("worker sweep failed")

    def _waker(self) -> None:
        """Wake parked trackers, and restart failed ones, when they are due: publish them for any
        worker to run (no thread or timer per tracker waits for it).

        One cheap read finds when the earliest of them is due; it sleeps until then (at most
        ``WAKE_POLL``, or until a message for a parked tracker pokes it). Every worker process runs
        one; of two wakers, each entry is woken by exactly one (``registry.wake_due``).
        """
        while not self._stopped.is_set() and not self.shutting_down.is_set():
            delay = WAKE_POLL
            try:
                due_in = registry.next_wake(self.settings)
                if due_in is not None and due_in <= 0:
                    rows = registry.wake_due(self.settings, WAKE_BATCH)
                    for row in rows:
                        _publish(self, row)
                    delay = 0.0 if len(rows) == WAKE_BATCH else min(delay, self.settings.control_poll_seconds)
                elif due_in is not None:
                    delay = min(delay, due_in)
            except RegistryUnavailable as exc:
                log.warning("registry unavailable in the waker: %s", exc)
            except Exception:  # keep waking whatever one round does
                log.exception("waking parked trackers failed")
            if delay > 0:
                self._wake_parked.wait(delay)
            self._wake_parked.clear()

    def poke_waker(self) -> None:
        """Something became due sooner than the waker knows (a backoff restart was scheduled)."""
        self._wake_parked.set()

    def _on_wakeup(self, row_id: int, why: str) -> None:
        if why == "wake":  # a message for a parked tracker: it is due now
            self._wake_parked.set()
            return
        inc = self._incarnations.get(row_id)
        if inc is None:
            return
        if why == "mail":
            inc.deliver_mail()  # straight to the tracker: a call is answered without a poll
        else:
            self._poke.set()  # a stop: the runtime thread reads the reason

    def _renew(self) -> None:
        sent = time.monotonic()
        if registry.renew_worker(self.settings, self.worker_id):
            with self._renewed:
                self._lease_deadline = sent + self.settings.lease_seconds - self.settings.heartbeat_seconds
                self._renewed.notify_all()
            return
        # A supervisor declared this process lost: its trackers run elsewhere now.
        log.error("worker lease %s was declared lost; fencing %d trackers", self.worker_id, self.running())
        with self._lock:
            for inc in self._incarnations.values():
                inc.interrupt_with("fenced")
            self._renewed.notify_all()
        self._register()

    def _hand_off_strays(self) -> None:
        """Hand off entries this process holds in the registry but runs no incarnation of.

        A claim whose commit succeeded but whose answer was lost with the connection leaves such an
        entry: running under this (live) lease, so no supervisor would ever restart it. Entries
        claimed in the last lease period are left alone: their incarnation may be starting.
        """
        held = registry.held(self.settings, self.worker_id, claimed_before=self.settings.lease_seconds)
        with self._lock:
            strays = [
                (row_id, epoch)
                for row_id, epoch in held
                if (inc := self._incarnations.get(row_id)) is None or inc.epoch != epoch
            ]
        if not strays:
            return
        log.error("%d entries held by this worker run nowhere; handing them off", len(strays))
        rows = registry.hand_off(self.settings, strays, f"not running in worker {self.hostname}")
        # Published aside: a broker that is down makes each publish slow, and this thread renews
        # the lease.
        threading.Thread(target=self._publish_all, args=(rows,), name="tracking-publish", daemon=True).start()

    def _publish_all(self, rows: list[registry.Row]) -> None:
        for row in rows:
            _publish(self, row)

    def _deliver_signals(self) -> None:
        """Hand stop requests and mail addressed to this process's trackers to them."""
        if not self._incarnations:
            return
        found = registry.signals(self.settings, self.worker_id)
        with self._lock:
            for row_id, epoch, reason, mail in found:
                inc = self._incarnations.get(row_id)
                if inc is None or inc.epoch != epoch:
                    continue
                if reason is not None:
                    inc.interrupt_with(reason)
                if mail:
                    inc.deliver_mail()
            for inc in self._incarnations.values():
                if self._revoked(inc.task_id):
                    inc.interrupt_with("shutdown")


# -- the run loop of one incarnation --------------------------------------------------------------


def run(tracker_cls: type[Tracker], transaction_id: str, epoch: int, task_id: str, rt: WorkerRuntime) -> str:
    """Claim the entry for ``epoch`` and run the tracker until it exits. Returns how it ended."""
    if rt.shutting_down.is_set():
        # Do not claim work on the way out; the next worker takes the same message.
        rt.publish(_message(tracker_cls.kind, transaction_id, epoch, task_id))
        return "handed off before claim"
    try:
        rt.start()
    except (RegistryUnavailable, RegistryRefused) as exc:  # no lease, no claim: published again later
        log.error(
            "%s %s: this worker has no lease (%s); left to the supervisor",
            tracker_cls.kind,
            transaction_id,
            exc,
        )
        return "left to the supervisor"
    if not rt.wait_for_lease_to_claim():
        rt.publish(_message(tracker_cls.kind, transaction_id, epoch, task_id))
        return "handed off before claim"
    try:
        row = _claim(tracker_cls, transaction_id, epoch, rt)
    except RegistryUnavailable:  # only while shutting down: published again after the start grace
        return "left to the supervisor"
    except RegistryRefused as exc:  # it would fail the same way again: rejected once, logged
        log.error("%s %r epoch %r: claim refused: %s", tracker_cls.kind, transaction_id, epoch, exc)
        return "refused"
    if row is None:
        log.info(
            "%s %s epoch %s: not claimed (duplicate or stale message)",
            tracker_cls.kind,
            transaction_id,
            epoch,
        )
        return "dropped"
    inc = Incarnation(row["id"], epoch, tracker_cls.kind, transaction_id, row["task_id"], row["worker_id"])
    inc.mail = row["last_message_id"] > row["handled_message_id"]
    rt.add(inc)
    try:
        return _loop(tracker_cls, row, inc, rt)
    except Fenced:  # found superseded while recording its exit: it writes nothing more
        return "fenced"
    except RegistryUnavailable:  # only at shutdown: the lease runs out, a supervisor restarts it
        return "left to the supervisor"
    finally:
        rt.remove(inc)


def _claim(
    tracker_cls: type[Tracker], transaction_id: str, epoch: int, rt: WorkerRuntime
) -> registry.Row | None:
    """Claim the entry, retrying while the registry is unavailable (the message is acknowledged
    already: giving up would leave the entry to the supervisor's start grace).

    A retry after a claim whose commit succeeded but whose answer was lost finds the entry running
    and returns None; the process then holds an entry it does not run, which
    ``WorkerRuntime._hand_off_strays`` finds and hands off.
    """
    return _retrying(
        rt,
        f"{tracker_cls.kind} {transaction_id}",
        lambda: registry.claim(
            rt.settings,
            tracker_cls.kind,
            transaction_id,
            epoch,
            worker=rt.hostname,
            worker_id=rt.worker_id,
            policy=tracker_cls.policy,
        ),
    )


def _message(kind: str, transaction_id: str, epoch: int, task_id: str) -> registry.Row:
    return {"kind": kind, "transaction_id": transaction_id, "epoch": epoch, "task_id": task_id}


def _loop(tracker_cls: type[Tracker], row: registry.Row, inc: Incarnation, rt: WorkerRuntime) -> str:
    """Run the incarnation: init if it never completed, then messages and ticks until it exits.

    Each unit of work (init, a tick, a batch of messages) runs with its checkpoint inside
    ``inc.begin_work()``/``end_work()``: a warm shutdown lets the unit end and be checkpointed
    before the entry is handed off. A unit that raises stays busy while its exit is recorded.
    """
    settings = rt.settings
    limit = settings.max_state_bytes
    tracker = tracker_cls._incarnate(row)
    state: dict[str, Any] | None = row["state"]
    box = Mailbox(tracker, row, settings, lambda write: _persist(inc, rt, write))
    current = mailbox.current.set((inc.kind, inc.transaction_id))
    parks = (
        tracker_cls.park
        if tracker_cls.park is not None
        else 0 < settings.park_seconds <= tracker_cls.interval
    )

    def checkpoint(new_state: dict[str, Any]) -> None:
        _persist(inc, rt, lambda: registry.checkpoint(settings, inc.row_id, inc.epoch, new_state))

    def park(new_state: dict[str, Any], wait: float) -> bool:
        if not (parks and wait >= PARK_MIN_WAIT):
            return False
        return _persist(inc, rt, lambda: registry.park(settings, inc.row_id, inc.epoch, new_state, wait))

    try:
        if state is None:  # init never completed: first start (or it crashed in init)
            if not rt.wait_for_lease(inc) or not inc.begin_work():
                return _interrupted(inc, rt)
            state = json_object(tracker.init(inc.transaction_id, **row["args"]), "init's state", limit)
            checkpoint(state)
            inc.end_work()
        next_tick = time.monotonic()
        if row["tick_at"] is not None:  # woken from its park: the next tick keeps its schedule
            next_tick += max(0.0, (row["tick_at"] - row["db_now"]).total_seconds())
        may_park = True
        while True:
            # Cleared before the flags are read: a wake-up set after this is never lost.
            inc.wake.clear()
            if not rt.wait_for_lease(inc) or not inc.begin_work():
                return _interrupted(inc, rt)
            if inc.mail:  # messages first: a call is answered now, not at the next tick
                inc.mail = False
                state, may_park = box.drain(state, lambda: rt.holds(inc)), True
            elif time.monotonic() >= next_tick:
                state = json_object(tracker.tick(state), "tick's state", limit)
                # A fixed rate: ticks keep to their schedule (a late or slow tick does not push the
                # later ones back), and one that fell a whole interval behind is not caught up.
                next_tick = max(next_tick + tracker_cls.interval, time.monotonic())
                if park(state, next_tick - time.monotonic()):
                    return "parked"
                checkpoint(state)  # (a message or stop request waits if it could not park)
            elif may_park and park(state, next_tick - time.monotonic()):
                return "parked"
            else:
                may_park = False  # until the waiting message is handled
                inc.end_work()
                inc.wake.wait(next_tick - time.monotonic())
                continue
            inc.end_work()
    except Done as done:
        return _done(tracker_cls, done, inc, rt)
    except Fenced:
        log.warning("%s %s epoch %s fenced out", inc.kind, inc.transaction_id, inc.epoch)
        return "fenced"
    except RegistryUnavailable:
        # Only while shutting down do we stop retrying: the lease then runs out and a supervisor
        # restarts the tracker elsewhere.
        log.warning("%s %s: registry unavailable at shutdown", inc.kind, inc.transaction_id)
        return "left to the supervisor"
    except Exception as exc:
        detail = redact_url("".join(traceback.format_exception(exc)))
        log.error("%s %s epoch %s crashed: %s", inc.kind, inc.transaction_id, inc.epoch, redact_url(str(exc)))
        return _abnormal(inc, rt, "crashed", detail)
    finally:
        mailbox.current.reset(current)


def _persist(inc: Incarnation, rt: WorkerRuntime, write: Callable[[], T]) -> T:
    """Run one registry write of this incarnation, retrying while the registry is unavailable.

    An incarnation never gives up its entry because of a database blip: it retries (without
    ticking) until the write lands or the incarnation is fenced out.
    """
    return _retrying(rt, f"{inc.kind} {inc.transaction_id}", write, fenced=lambda: inc.interrupt == "fenced")


def _retrying(
    rt: WorkerRuntime, what: str, write: Callable[[], T], fenced: Callable[[], bool] = lambda: False
) -> T:
    """Run ``write`` until the registry takes it, waiting longer after each failure (up to 2 s).

    Raises Fenced as soon as ``fenced()`` says the write no longer matters; during a warm shutdown
    it gives up (RegistryUnavailable) after a few seconds, so that the worker can exit.
    """
    delay, began = 0.1, time.monotonic()
    while True:
        try:
            return write()
        except RegistryUnavailable as exc:
            if fenced():
                raise Fenced() from exc
            if rt.shutting_down.is_set() and time.monotonic() - began > SHUTDOWN_PATIENCE:
                raise
            if delay == 0.1:
                log.warning("%s: registry unavailable, retrying: %s", what, exc)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _interrupted(inc: Incarnation, rt: WorkerRuntime) -> str:
    reason = inc.interrupt or "fenced"
    settings = rt.settings
    if reason in ("fenced", "handed off"):  # someone else moved the entry on: write nothing
        return reason
    if reason == "handoff":  # claimed after the worker began shutting down: hand off alone
        reason_text = f"worker {rt.hostname} shutting down"
        rows = _persist(inc, rt, lambda: registry.hand_off(settings, [(inc.row_id, inc.epoch)], reason_text))
        for new in rows:
            _publish(rt, new)
        return "handed off"
    if reason in ("normal", "shutdown"):
        _persist(inc, rt, lambda: registry.exit_normally(settings, inc.row_id, inc.epoch, "stopped", reason))
        return f"stopped ({reason})"
    return _abnormal(inc, rt, "stopped", f"stop({reason!r})")


def _done(tracker_cls: type[Tracker], done: Done, inc: Incarnation, rt: WorkerRuntime) -> str:
    settings = rt.settings
    if tracker_cls.policy.restart != "permanent":
        # Deregistered: the final state goes nowhere, so it is neither validated nor written.
        _persist(inc, rt, lambda: registry.exit_normally(settings, inc.row_id, inc.epoch, "done", None))
        return "done"
    if done.state is not None:
        try:
            state = json_object(done.state, "Done's state", settings.max_state_bytes)
        except Exception as exc:
            return _abnormal(inc, rt, "crashed", redact_url("".join(traceback.format_exception(exc))))
        _persist(inc, rt, lambda: registry.checkpoint(settings, inc.row_id, inc.epoch, state))
    return _abnormal(inc, rt, "done", None, normal=True)


def _abnormal(
    inc: Incarnation, rt: WorkerRuntime, event: str, detail: str | None, *, normal: bool = False
) -> str:
    decision, new = _persist(
        inc,
        rt,
        lambda: registry.exit_abnormally(rt.settings, inc.row_id, inc.epoch, event, detail, normal=normal),
    )
    if decision.action is Action.RESTART and new is not None:
        if decision.delay == 0:
            _publish(rt, new)
        else:  # failed until its backoff is over: the waker (or a sweep) restarts it then
            rt.poke_waker()
    return f"{event}: {decision.action.value}"


def _publish(rt: WorkerRuntime, row: registry.Row) -> None:
    try:
        rt.publish(row)
    except Exception as exc:  # the broker is down: the supervisor publishes it after the grace period
        log.warning("could not publish %s %s: %s", row["kind"], row["transaction_id"], redact_url(str(exc)))
