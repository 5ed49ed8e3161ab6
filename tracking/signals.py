"""Signals in Celery's style: connect a receiver to hear what happens to trackers, where it
happens (the process that starts, runs or supervises the tracker).

::

    from tracking import signals

    @signals.tracker_dead.connect
    def page_someone(sender, transaction_id, epoch, reason, **kwargs):
        alert(f"{sender} tracker {transaction_id} is dead: {reason}")

Every signal is sent with ``sender`` (the tracker's kind, a ``str``), ``transaction_id`` and
``epoch`` (the incarnation it concerns), and:

=====================  ===========================================  =================================
signal                 sent when, where                             more arguments
=====================  ===========================================  =================================
``tracker_started``    ``start()`` recorded a new tracker (the      ``ref`` (the ``TrackerRef``)
                       caller; inside an app transaction, once
                       that commits)
``tracker_crashed``    ``init``, ``tick`` or a handler raised       ``exception``
                       (the worker running it)
``tracker_restarted``  a restart was decided (the worker after a    ``cause`` ("crashed", "stopped",
                       crash, the supervisor after a lost worker,   "done", "worker_lost"), ``delay``
                       the caller of an abnormal ``stop`` or of
                       ``restart`` on a tracker no worker runs)
``tracker_dead``       its restart intensity ran out, or a          ``reason``
                       temporary tracker exited abnormally (where
                       that was decided, as for restarted)
``tracker_done``       it raised ``Done`` (the worker running it)   ``state``
=====================  ===========================================  =================================

Each is sent once per event, by the process where the event happens. A receiver that raises is
logged and does not disturb the tracker or the other receivers. Receivers run in that process's
thread: keep them short (queue slow work elsewhere).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger("tracking.signals")

Receiver = Callable[..., Any]


class Signal:
    """A list of receivers, called with ``sender`` and keyword arguments by :meth:`send`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._receivers: list[Callable[[], Receiver | None]] = []
        self._lock = threading.Lock()

    def connect(self, receiver: Receiver, *, weak: bool = True) -> Receiver:
        """Connect ``receiver`` (usable as a decorator); held weakly unless ``weak=False``."""
        if weak and hasattr(receiver, "__self__"):
            ref: Callable[[], Receiver | None] = weakref.WeakMethod(receiver)
        elif weak:
            ref = weakref.ref(receiver)
        else:
            ref = lambda: receiver  # noqa: E731
        with self._lock:
            if receiver not in self.receivers():
                self._receivers.append(ref)
        return receiver

    def disconnect(self, receiver: Receiver) -> None:
        with self._lock:
            self._receivers = [ref for ref in self._receivers if ref() not in (None, receiver)]

    def receivers(self) -> list[Receiver]:
        return [r for ref in list(self._receivers) if (r := ref()) is not None]

    def send(self, sender: str, **kwargs: Any) -> None:
        """Call every receiver; one that raises is logged, and the others still run."""
        for receiver in self.receivers():
            try:
                receiver(sender=sender, signal=self, **kwargs)
            except Exception:
                log.exception("a receiver of %s failed", self.name)

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


tracker_started = Signal("tracker_started")
tracker_crashed = Signal("tracker_crashed")
tracker_restarted = Signal("tracker_restarted")
tracker_dead = Signal("tracker_dead")
tracker_done = Signal("tracker_done")
