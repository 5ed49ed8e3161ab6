"""The waker: parked trackers whose next tick is due, and failed ones whose backoff is over, are
made pending and published for any worker to run; no thread or timer per tracker waits for them.

One cheap read finds when the earliest of them is due; the waker sleeps until then (at most
``POLL``, or until something pokes it: a message for a parked tracker, a backoff restart scheduled
by this process). Every worker process runs one; of two wakers, each entry is woken by exactly one
(``registry.wake_due``). Parking never uses the broker's ETA or countdown.
"""

from __future__ import annotations

import logging
import threading

from tracking import registry
from tracking.client import Publish, publish_or_warn
from tracking.exceptions import RegistryUnavailable
from tracking.settings import Settings

log = logging.getLogger("tracking.worker")

#: the longest the waker sleeps before it looks for due entries again (seconds)
POLL = 1.0
#: how many entries one wake-up transaction takes
BATCH = 500


class Waker:
    def __init__(self, settings: Settings, publish: Publish) -> None:
        self.settings = settings
        self.publish = publish
        self._done = threading.Event()
        self._poked = threading.Event()

    def stop(self) -> None:
        """Wake nothing more (the worker shuts down: the other workers' wakers take over)."""
        self._done.set()
        self._poked.set()

    def poke(self) -> None:
        """Something became due sooner than the waker knows."""
        self._poked.set()

    def run(self) -> None:
        while not self._done.is_set():
            delay = POLL
            try:
                delay = self._round()
            except RegistryUnavailable as exc:
                log.warning("registry unavailable in the waker: %s", exc)
            except Exception:  # keep waking whatever one round does
                log.exception("waking parked trackers failed")
            if delay > 0:
                self._poked.wait(delay)
            self._poked.clear()

    def _round(self) -> float:
        """Wake what is due; returns how long to sleep."""
        due_in = registry.next_wake(self.settings)
        if due_in is None:
            return POLL
        if due_in > 0:
            return min(POLL, due_in)
        rows = registry.wake_due(self.settings, BATCH)
        for row in rows:
            publish_or_warn(self.publish, row)
        return 0.0 if len(rows) == BATCH else min(POLL, self.settings.control_poll_seconds)
