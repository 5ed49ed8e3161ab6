"""A worker process's side of the rate limits shared by all workers: tokens taken from the
registry's bucket of each kind (:mod:`tracking.registry.limits`) in chunks, so that a tick costs a
registry round trip only now and then, and how long acquirers waited, for metrics.

How the chunks keep the shared limit. Every token spent was granted by the registry's bucket, so
the processes together never spend more than it grants (``burst + rate * T`` over ``T``
seconds). Two things could blur that:

* Tokens taken but not yet spent. A process takes what its caller asks plus, as a stock, at most
  a chunk: ``rate * chunk_seconds`` (0.1 s of the rate), at most half the burst. It takes a whole
  chunk while the bucket limits it (its last take found too few tokens), otherwise only what it
  asked for in the last ``chunk_seconds``, so that a slow consumer does not take (and drop) a
  chunk it would not use while the others starve. Stock not spent within ``2 * chunk_seconds`` is
  dropped (counted as expired), so a token is always spent within 0.2 s of its grant: over any
  window of ``T`` seconds all processes together spend at most ``burst + rate * (T + 0.2)``,
  however many they are (over 10 s, within 2 % of the bucket's own bound).
* Throughput lost to waiting. An acquirer that finds too few tokens sleeps until the bucket would
  hold what it still needs or a chunk, whichever is more, but at most half the burst, then takes
  again: the bucket keeps accruing while the takers come (it is never waited on to be full, so
  little is lost to its cap), and a process makes about ``1 / chunk_seconds`` round trips a second
  while it waits, however high the rate.

The registry is asked only by :meth:`RateLimiter.acquire`; a kind without a limit is never asked
for. Thread- and gevent-safe: acquirers of one kind queue on a lock of that kind.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping

from tracking import timings
from tracking.exceptions import RegistryUnavailable
from tracking.redact import redact_url
from tracking.registry import limits
from tracking.settings import Settings

#: a tenth of a second's worth of tokens per registry round trip, at most
CHUNK_SECONDS = 0.1
#: how long ``admit`` waits for tokens before it looks again whether it should give up
ADMIT_PATIENCE = 0.5
log = logging.getLogger("tracking.worker")


@dataclasses.dataclass(frozen=True)
class Limit:
    """A kind's limit across all workers: ``rate`` tokens a second, at most ``burst`` at once
    (by default two chunks' worth: ``max(1, rate * 2 * CHUNK_SECONDS)``)."""

    rate: float
    burst: float | None = None

    def __post_init__(self) -> None:
        limits.validate(self.rate, self.capacity)

    @property
    def capacity(self) -> float:
        return self.burst if self.burst is not None else max(1.0, self.rate * 2 * CHUNK_SECONDS)


@dataclasses.dataclass(frozen=True)
class LimitStats:
    """What one process's acquirers of one kind got and waited, since the limiter was made."""

    acquires: int = 0  # calls of acquire
    granted: int = 0  # tokens they returned
    short: int = 0  # calls that returned fewer than asked (timed out)
    waits: int = 0  # calls that had to wait for tokens (or for another acquirer of the kind)
    wait_seconds: float = 0.0  # the time those calls spent in acquire: the lateness the limit adds
    takes: int = 0  # registry round trips
    expired: int = 0  # tokens taken but dropped unspent
    held: int = 0  # tokens taken and not yet spent (now)


class _Kind:
    """One kind's tokens in this process, its recent demand and its counters; used under ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters = threading.Lock()  # the stats: read by metrics, counted by a late acquirer
        self.stock, self.stock_at = 0, 0.0
        self.window_at, self.demand, self.last_demand = 0.0, 0, 0
        self.hungry = False  # the last take found fewer tokens than wanted
        self.totals: dict[str, float] = dict.fromkeys(
            ("acquires", "granted", "short", "waits", "wait_seconds", "takes", "expired"), 0.0
        )

    def spend(self, n: int, now: float, chunk_seconds: float) -> int:
        """Up to ``n`` tokens from the stock (the stale part dropped first)."""
        if self.stock and now - self.stock_at > 2 * chunk_seconds:
            self.count(expired=self.stock)
            self.stock = 0
        used = min(n, self.stock)
        self.stock -= used
        return used

    def asked(self, n: int, now: float, chunk_seconds: float, chunk: int) -> int:
        """Record ``n`` tokens asked for, in windows of ``chunk_seconds``; returns the stock to
        take with them: what was asked before, in this window or the last, up to ``chunk``."""
        if now - self.window_at >= chunk_seconds:
            recent = now - self.window_at < 2 * chunk_seconds
            self.last_demand, self.demand, self.window_at = (self.demand if recent else 0), 0, now
        prefetch = min(chunk, max(self.demand, self.last_demand))
        self.demand += n
        return prefetch

    def count(self, **more: float) -> None:
        """Add to the counters."""
        with self.counters:
            for name, value in more.items():
                self.totals[name] += value

    def snapshot(self) -> LimitStats:
        with self.counters:
            totals = dict(self.totals)
        return LimitStats(
            acquires=int(totals["acquires"]),
            granted=int(totals["granted"]),
            short=int(totals["short"]),
            waits=int(totals["waits"]),
            wait_seconds=totals["wait_seconds"],
            takes=int(totals["takes"]),
            expired=int(totals["expired"]),
            held=self.stock,
        )


class RateLimiter:
    """This process's access to the shared rate limits; see the module's docstring.

    ``limits`` maps a kind to its :class:`Limit`; ``take``, ``clock`` and ``sleep`` are the
    registry's take, ``time.monotonic`` and ``time.sleep`` unless a test gives others.
    """

    def __init__(
        self,
        settings: Settings,
        limits_of: Mapping[str, Limit] | None = None,
        *,
        chunk_seconds: float = CHUNK_SECONDS,
        take: Callable[..., limits.Grant] = limits.take,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not chunk_seconds > 0:
            raise ValueError(f"chunk_seconds must be above 0, not {chunk_seconds!r}")
        self._settings, self._chunk_seconds = settings, chunk_seconds
        self._take, self._clock, self._sleep = take, clock, sleep
        self._limits = dict(limits_of or {})
        self._kinds: dict[str, _Kind] = {}
        self._lock = threading.Lock()

    def set_limit(self, kind: str, limit: Limit | None) -> None:
        """Limit ``kind`` from now on (None: no limit)."""
        with self._lock:
            if limit is None:
                self._limits.pop(kind, None)
            else:
                self._limits[kind] = limit

    def limit(self, kind: str) -> Limit | None:
        return self._limits.get(kind)

    def chunk(self, limit: Limit) -> int:
        """The most tokens this process keeps in stock for a kind with ``limit``: ``chunk_seconds``
        of its rate, at most half its burst (at least 1)."""
        return max(1, int(min(limit.capacity / 2, limit.rate * self._chunk_seconds)))

    def acquire(self, kind: str, n: int = 1, timeout: float | None = None) -> int:
        """Block until ``n`` tokens of ``kind`` are granted, or ``timeout`` seconds have passed
        (None: no end); returns how many were granted (``n``, or fewer at the timeout: those may
        be spent). A kind without a limit gets ``n`` at once. Raises ValueError for a negative
        ``n``, and RegistryUnavailable as the registry's take does (the tokens this call had
        gathered are kept for the next)."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"the tokens to acquire must be a whole number of at least 0, not {n!r}")
        limit = self._limits.get(kind)
        if limit is None or n == 0:
            return n
        state = self._state(kind)
        began = self._clock()
        queued = not state.lock.acquire(blocking=False)
        if queued and not state.lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            self._counted(state, n, 0, began, waited=True)
            return 0
        try:
            got, waited = self._gather(kind, limit, state, n, None if timeout is None else began + timeout)
            self._counted(state, n, got, began, waited or queued)
        finally:
            state.lock.release()
        return got

    def admit(
        self, kind: str, rate: float | None, n: int, give_up: Callable[[], bool], pause: threading.Event
    ) -> bool:
        """Wait until ``n`` ticks of ``kind`` may run under a limit of ``rate`` a second (None: at
        once), the limit set or changed to ``rate`` first. False, as soon as ``give_up()``, if
        they may not (the tokens gathered so far are spent anyway: the limit is never exceeded,
        only underused). While the registry is unavailable it waits on ``pause`` and tries again.
        The time it took is observed in ``timings.rate_limit_waits``."""
        if rate is None:
            return True
        limit = self._limits.get(kind)
        if limit is None or limit.rate != rate:
            self.set_limit(kind, Limit(rate))
        began, got = self._clock(), 0
        try:
            while got < n:
                if give_up():
                    return False
                try:
                    got += self.acquire(kind, n - got, timeout=ADMIT_PATIENCE)
                except RegistryUnavailable as exc:
                    log.warning("%s: rate limit unavailable, waiting: %s", kind, redact_url(str(exc)))
                    pause.wait(ADMIT_PATIENCE)
            return True
        finally:
            timings.rate_limit_waits.observe(kind, self._clock() - began)

    def stats(self) -> dict[str, LimitStats]:
        """Each limited kind's counters in this process (for metrics)."""
        with self._lock:
            kinds = dict(self._kinds)
        return {kind: state.snapshot() for kind, state in kinds.items()}

    def _state(self, kind: str) -> _Kind:
        with self._lock:
            state = self._kinds.get(kind)
            if state is None:
                state = self._kinds[kind] = _Kind()
            return state

    def _gather(
        self, kind: str, limit: Limit, state: _Kind, n: int, deadline: float | None
    ) -> tuple[int, bool]:
        now = self._clock()
        chunk = self.chunk(limit)
        prefetch = state.asked(n, now, self._chunk_seconds, chunk)
        if state.hungry:  # the bucket, not this process's demand, limits it: a whole chunk
            prefetch = chunk
        got, waited = state.spend(n, now, self._chunk_seconds), False
        while got < n:
            rest = n - got
            try:
                grant = self._take(self._settings, kind, limit.rate, limit.capacity, rest + prefetch)
            except BaseException:
                state.stock, state.stock_at = state.stock + got, self._clock()  # kept for the next
                raise
            now = self._clock()
            state.count(takes=1)
            got += min(rest, grant.granted)
            if grant.granted > rest:
                state.stock, state.stock_at = grant.granted - rest, now
            state.hungry = got < n
            if got == n or (deadline is not None and now >= deadline):
                break
            # until the bucket holds what is still needed or a chunk, whichever is more, but at
            # most half the burst: tokens are added while the takers come, never lost to the cap
            target = min(max(n - got, chunk), max(1.0, limit.capacity / 2))
            pause = max(grant.wait, (target - grant.left) / limit.rate)
            self._sleep(pause if deadline is None else min(pause, deadline - now))
            waited, prefetch = True, chunk
        return got, waited

    def _counted(self, state: _Kind, n: int, got: int, began: float, waited: bool) -> None:
        state.count(
            acquires=1,
            granted=got,
            short=got < n,
            waits=waited,
            wait_seconds=self._clock() - began if waited else 0.0,
        )
