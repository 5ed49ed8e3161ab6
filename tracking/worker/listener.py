"""Keeps a wake-up listener connected for the worker process, reconnecting after a failure (a
notification missed meanwhile is found by the control poll)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tracking.exceptions import RegistryUnavailable
from tracking.registry import wakeups
from tracking.settings import Settings

log = logging.getLogger("tracking.worker")

#: how long one wait for notifications lasts: how soon the listener sees that it must stop (seconds)
POLL = 1.0
#: the pause before a reconnection (seconds)
RECONNECT_PAUSE = 1.0


def listen(settings: Settings, on_wake: Callable[[int, str], None], stopped: threading.Event) -> None:
    """Call ``on_wake(row id, why)`` for every wake-up notification until ``stopped``; returns at
    once where the registry has no notifications (control polling alone wakes trackers then)."""
    while not stopped.is_set():
        try:
            listener = wakeups.listen(settings)
            if listener is None:
                return
            with listener:
                while not stopped.is_set():
                    for row_id, why in listener.notifications(POLL):
                        _hand_on(on_wake, row_id, why)
        except RegistryUnavailable as exc:
            log.warning("%s", exc)
            stopped.wait(RECONNECT_PAUSE)


def _hand_on(on_wake: Callable[[int, str], None], row_id: int, why: str) -> None:
    try:
        on_wake(row_id, why)
    except Exception:  # one wake-up gone wrong must not end the listener (the poll finds it)
        log.exception("handling wake-up %s:%s failed", row_id, why)
