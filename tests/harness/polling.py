"""Bounded polling, and the conditions on a tracker's registry entry that tests wait on."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Literal, TypeVar

import tracking
from tracking import Status

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | Literal[False] | None],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds.

    The truthy value is returned, so a ``None`` or ``False`` that the condition may give is not
    part of the result's type.
    """
    deadline = time.monotonic() + timeout
    last = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}: {last!r}")
        time.sleep(interval)
        last = condition()
    return last


def during(seconds: float, interval: float = 0.05) -> Iterator[float]:
    """A bounded window of ``seconds`` (a fault's deliberate length, a sampling period): yields the
    time left every ``interval`` until it is over. Not a wait for a condition: use
    :func:`wait_for` for that."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        yield left
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def observe(condition: Callable[[], T | Literal[False] | None], seconds: float) -> T | None:
    """Watch ``condition`` for ``seconds``: the first truthy value it returns, or None if none
    (for "this never happens": a bounded observation window)."""
    for _left in during(seconds):
        found = condition()
        if found:
            return found
    return None


def in_status(
    tracker: type[tracking.Tracker],
    txid: str,
    status: Status,
    *,
    other_than: str | None = None,
    after_epoch: int = 0,
) -> tracking.TrackerRef | None:
    """The tracker's ref if it is in ``status`` (under a task ID other than ``other_than``, at an
    epoch past ``after_epoch``), else None: a condition for :func:`wait_for`."""
    ref = tracker.lookup(txid)
    if ref is not None and ref.status is status and ref.task_id != other_than and ref.epoch > after_epoch:
        return ref
    return None


def running(
    tracker: type[tracking.Tracker], txid: str, *, other_than: str | None = None, after_epoch: int = 0
) -> tracking.TrackerRef | None:
    """The tracker's ref if it runs (see :func:`in_status`), else None."""
    return in_status(tracker, txid, Status.RUNNING, other_than=other_than, after_epoch=after_epoch)
