"""Operations released together on threads of their own: the races tests provoke without sleeping."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def at_once(calls: Sequence[Callable[[], T]], timeout: float = 60.0) -> list[T | BaseException]:
    """Run each of ``calls`` on a thread of its own, all released together by a barrier; returns
    each one's result, or the exception it raised, in the order of ``calls``.

    ``timeout`` is a safety net against a hang, not a timing threshold: a call still running after
    twice that fails the test (a deadlock?).
    """
    barrier = threading.Barrier(len(calls))
    results: dict[int, T | BaseException] = {}

    def run(index: int, call: Callable[[], T]) -> None:
        try:
            barrier.wait(timeout=timeout)
            results[index] = call()
        except BaseException as exc:  # handed to the caller, in the test's thread
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, call), daemon=True) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=2 * timeout)
    assert not any(thread.is_alive() for thread in threads), "an operation released at once hangs"
    return [results[i] for i in range(len(calls))]


def all_at_once(calls: Sequence[Callable[[], T]], timeout: float = 60.0) -> list[T]:
    """:func:`at_once` for calls that must all return: the first exception one raised is raised
    again here, in the test's thread."""
    results = at_once(calls, timeout)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [result for result in results if not isinstance(result, BaseException)]
