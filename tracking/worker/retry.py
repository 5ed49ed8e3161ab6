"""The one way a worker retries a registry write: until it lands, or it no longer matters."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from tracking.exceptions import Fenced, RegistryUnavailable

log = logging.getLogger("tracking.worker")
T = TypeVar("T")

#: how long, during a warm shutdown, a write is retried while the registry is unavailable
SHUTDOWN_PATIENCE = 5.0
#: the longest wait between two tries (seconds)
MAX_DELAY = 2.0


def _never() -> bool:
    return False


def retrying(
    what: str,
    write: Callable[[], T],
    shutting_down: threading.Event,
    fenced: Callable[[], bool] = _never,
) -> T:
    """Run ``write`` until the registry takes it, waiting longer after each failure (up to 2 s).

    A worker never gives an entry up because of a database blip. Raises Fenced as soon as
    ``fenced()`` says the write no longer matters; once ``shutting_down`` is set it gives up
    (RegistryUnavailable) after ``SHUTDOWN_PATIENCE``, so that the worker can exit: the lease then
    runs out and a supervisor takes over.
    """
    delay, began = 0.1, time.monotonic()
    while True:
        try:
            return write()
        except RegistryUnavailable as exc:
            if fenced():
                raise Fenced() from exc
            if shutting_down.is_set() and time.monotonic() - began > SHUTDOWN_PATIENCE:
                raise
            if delay == 0.1:
                log.warning("%s: registry unavailable, retrying: %s", what, exc)
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
