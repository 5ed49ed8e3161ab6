"""What a worker process knows of one running incarnation, and why it must leave its loop."""

from __future__ import annotations

import dataclasses
import enum
import threading


class Interrupt(enum.StrEnum):
    """Why an incarnation must leave its loop."""

    #: asked to stop (``Incarnation.stop_reason`` says why): it records its exit itself
    STOP = "stop"
    #: the worker is shutting down: it hands itself off once its unit of work is checkpointed
    HAND_OFF = "hand off"
    #: the worker handed it off already: it writes nothing more
    HANDED_OFF = "handed off"
    #: someone else holds the entry now (a new epoch, or its lease was declared lost): it writes
    #: nothing more
    FENCED = "fenced"


#: interrupts after which the incarnation writes nothing: they replace any other
FINAL = frozenset({Interrupt.HANDED_OFF, Interrupt.FENCED})


@dataclasses.dataclass(eq=False)
class Incarnation:
    """One running incarnation: its registry coordinates, and the flags its loop reads."""

    row_id: int
    epoch: int
    kind: str
    transaction_id: str
    task_id: str
    #: the lease it was claimed under: a process declared lost registers a new one, and the
    #: incarnations of the old one are fenced
    worker_id: str = ""
    wake: threading.Event = dataclasses.field(default_factory=threading.Event)
    interrupt: Interrupt | None = None
    #: the reason of a stop (with ``Interrupt.STOP``)
    stop_reason: str | None = None
    #: messages are waiting in its mailbox
    mail: bool = True
    #: inside a unit of work (init, a tick, a batch of messages, each with its checkpoint)
    busy: bool = False
    #: the Celery task ID of the batch it is ticked in, if any (a revoke of that task stops it)
    batch_task_id: str | None = None
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def _set(self, interrupt: Interrupt, stop_reason: str | None = None) -> None:
        with self._lock:
            if self.interrupt is None or interrupt in FINAL:
                self.interrupt, self.stop_reason = interrupt, stop_reason
        self.wake.set()

    def stop(self, reason: str) -> None:
        """Asked to stop (a stop request, a revoke): unless something else came first."""
        self._set(Interrupt.STOP, reason)

    def fence(self) -> None:
        self._set(Interrupt.FENCED)

    def hand_off_later(self) -> None:
        """The worker shuts down: hand itself off at the next unit of work."""
        self._set(Interrupt.HAND_OFF)

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
        """At a warm shutdown: an idle incarnation is handed off by the worker (True) and never
        starts another unit of work; a busy one finishes its unit, checkpoints it and then hands
        itself off, so that its successor never ticks while its tick still runs. One already asked
        to stop (a revoke seen by this worker alone) exits with that stop instead."""
        with self._lock:
            if self.interrupt not in (None, Interrupt.HAND_OFF):
                idle = False  # asked to stop, or fenced: it leaves on its own, as asked
            elif not self.busy:
                idle, self.interrupt = True, Interrupt.HANDED_OFF
            else:
                idle, self.interrupt = False, Interrupt.HAND_OFF
        self.wake.set()
        return idle

    def deliver_mail(self) -> None:
        self.mail = True
        self.wake.set()
