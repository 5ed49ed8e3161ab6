"""An incarnation's registry writes and how it leaves: its checkpoints and parks, each retried
until it lands or the incarnation is fenced out; ``Done``, a crash, an abnormal exit under the
restart policy, and an interrupt (a stop, a handoff) between two units of work. The loop that
makes them is :mod:`.runner` (one incarnation) or :mod:`.batch` (a batch of parked ones).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from tracking import registry, signals
from tracking.client import publish_or_warn
from tracking.exceptions import Done
from tracking.models import Entry
from tracking.policy import Action
from tracking.redact import redact_url
from tracking.registry.transitions import WINNING_STOPS
from tracking.settings import Settings
from tracking.tracker import Tracker
from tracking.validation import json_object
from tracking.worker.incarnation import Incarnation, Interrupt
from tracking.worker.process import WorkerProcess
from tracking.worker.retry import retrying

log = logging.getLogger("tracking.worker")
T = TypeVar("T")

#: a parking tracker parks only if its next tick is at least this far away (seconds)
PARK_MIN_WAIT = 0.5


class Exits:
    """The writes and exits of one incarnation (its loop sets these attributes)."""

    cls: type[Tracker]
    row: Entry
    inc: Incarnation
    wp: WorkerProcess
    settings: Settings
    #: extra fields of its log records
    fields: dict[str, Any]
    #: it parks between ticks
    parks: bool
    #: init's state until it is written (with the first tick's checkpoint, or before any exit)
    unsaved: dict[str, Any] | None

    def crashed(self, exc: BaseException) -> str:
        """Record a crash of ``init``, a tick or a handler: an abnormal exit under the policy."""
        inc = self.inc
        detail = redact_url("".join(traceback.format_exception(exc)))
        what = (inc.kind, inc.transaction_id, inc.epoch, redact_url(str(exc)))
        log.error("%s %s epoch %s crashed: %s", *what, extra=self.fields)
        self._signal(signals.tracker_crashed, exception=exc)
        return self._abnormal("crashed", detail)

    def settle(self) -> None:
        """Write init's state if nothing has written it yet."""
        if self.unsaved is not None:
            self.checkpoint(self.unsaved)

    # -- registry writes ------------------------------------------------------------------------

    def persist(self, write: Callable[[], T]) -> T:
        """One registry write of this incarnation, retried while the registry is unavailable,
        until it lands or the incarnation is fenced out."""
        inc = self.inc
        return retrying(
            f"{inc.kind} {inc.transaction_id}",
            write,
            self.wp.shutting_down,
            fenced=lambda: inc.interrupt is Interrupt.FENCED,
        )

    def checkpoint(self, state: dict[str, Any]) -> None:
        inc = self.inc
        self.persist(lambda: registry.checkpoint(self.settings, inc.row_id, inc.epoch, state))
        self.unsaved = None

    def park(self, state: dict[str, Any], wait: float) -> bool:
        if not (self.parks and wait >= PARK_MIN_WAIT):
            return False
        inc = self.inc
        parked = self.persist(lambda: registry.park(self.settings, inc.row_id, inc.epoch, state, wait))
        if parked:
            self.unsaved = None
        return parked

    # -- exits ----------------------------------------------------------------------------------

    def done(self, done: Done) -> str:
        inc, settings = self.inc, self.settings
        if self.cls.policy.restart != "permanent":
            # Deregistered: the final state goes nowhere, so it is neither validated nor written.
            self.persist(lambda: registry.exit_normally(settings, inc.row_id, inc.epoch, "done", None))
            self._signal(signals.tracker_done, state=done.state)
            return "done"
        if done.state is not None:
            try:
                state = json_object(done.state, "Done's state", settings.max_state_bytes)
            except Exception as exc:
                self._signal(signals.tracker_crashed, exception=exc)
                return self._abnormal("crashed", redact_url("".join(traceback.format_exception(exc))))
            self.checkpoint(state)
        self._signal(signals.tracker_done, state=done.state)
        return self._abnormal("done", None, normal=True)

    def _abnormal(self, event: str, detail: str | None, *, normal: bool = False) -> str:
        inc, settings = self.inc, self.settings
        self.settle()  # a restart starts from init's state, and does not run init again
        decision, new = self.persist(
            lambda: registry.exit_abnormally(settings, inc.row_id, inc.epoch, event, detail, normal=normal)
        )
        if decision.action is Action.RESTART and new is not None:
            self._signal(signals.tracker_restarted, cause=event, delay=decision.delay)
            if decision.delay == 0:
                publish_or_warn(self.wp.publish, new)
            else:  # failed until its backoff is over: the waker (or a sweep) restarts it then
                self.wp.poke_waker()
        elif decision.action is Action.DEAD:
            self._signal(signals.tracker_dead, reason=self.cls.policy.why_dead())
        return f"{event}: {decision.action.value}"

    def _signal(self, signal: signals.Signal, **kwargs: Any) -> None:
        inc = self.inc
        signal.send(inc.kind, transaction_id=inc.transaction_id, epoch=inc.epoch, **kwargs)


def interrupted(loop: Exits) -> str:
    """How an incarnation interrupted between two units of work leaves (writing nothing if someone
    else moved its entry on)."""
    inc, settings = loop.inc, loop.settings
    if inc.interrupt in (None, Interrupt.FENCED, Interrupt.HANDED_OFF):
        return (inc.interrupt or Interrupt.FENCED).value  # someone else moved it on: write nothing
    if inc.interrupt is Interrupt.HAND_OFF:  # the worker shuts down: hand itself off
        loop.settle()
        reason = f"worker {loop.wp.hostname} shutting down"
        for new in loop.persist(lambda: registry.hand_off(settings, [(inc.row_id, inc.epoch)], reason)):
            publish_or_warn(loop.wp.publish, new)
        return Interrupt.HANDED_OFF.value
    stop = inc.stop_reason or "normal"
    if stop in WINNING_STOPS:
        loop.persist(lambda: registry.exit_normally(settings, inc.row_id, inc.epoch, "stopped", stop))
        return f"stopped ({stop})"
    return loop._abnormal("stopped", f"stop({stop!r})")
