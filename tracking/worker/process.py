"""One worker process's side of `tracking`: its lease, control loop, waker and incarnations.

Threads: the control loop (``worker.control``), the waker (``worker.waker``) and, on PostgreSQL,
a listener for wake-up notifications (a cast, call or stop for one of this process's trackers
reaches it at once, without waiting for the next poll). Each incarnation runs in the Celery pool
thread that took its message (``worker.runner``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from tracking.client import Publish
from tracking.exceptions import RegistryUnavailable
from tracking.settings import Settings
from tracking.worker import listener
from tracking.worker.control import Control, Process
from tracking.worker.incarnation import Incarnation
from tracking.worker.lease import Lease
from tracking.worker.ratelimit import RateLimiter
from tracking.worker.waker import PublishBatch, Waker

log = logging.getLogger("tracking.worker")


class WorkerProcess:
    """The lease, control loop, waker and running incarnations of one worker process."""

    def __init__(
        self,
        settings: Settings,
        hostname: str,
        publish: Publish,
        sweep: Callable[[], object] | None = None,
        revoked: Callable[[str], bool] | None = None,
        publish_batch: PublishBatch | None = None,
    ) -> None:
        self.settings = settings
        self.hostname = hostname
        self.publish = publish
        self.pid = os.getpid()
        self.lease = Lease(settings, hostname, self.pid)
        self.publish_batch = publish_batch
        self.waker = Waker(settings, publish, publish_batch)
        self.limiter = RateLimiter(settings)
        self.shutting_down = threading.Event()
        self.stopped = threading.Event()
        parts = Process(
            settings, hostname, publish, self.lease, self.incarnations, self.shutting_down, self.stopped
        )
        self.control = Control(parts, sweep, revoked or (lambda _task_id: False))
        self._incarnations: dict[int, Incarnation] = {}
        self._lock = threading.Lock()
        self._control_thread: threading.Thread | None = None

    @property
    def worker_id(self) -> str:
        return self.lease.worker_id

    def start(self) -> None:
        """Register this process's lease and start its threads (idempotent)."""
        with self._lock:
            if self._control_thread is not None:
                return
            self.lease.register()
            self._control_thread = self._thread("tracking-runtime", self.control.run)
            self._thread(
                "tracking-wakeups",
                lambda: listener.listen(self.settings, self._on_wakeup, self.stopped),
            )
            self._thread("tracking-waker", self.waker.run)

    @staticmethod
    def _thread(name: str, target: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def begin_shutdown(self) -> None:
        """Warm shutdown: idle trackers are handed off at once, busy ones after their unit of work.

        This runs in a signal handler, so it only raises flags and pokes the control loop, which
        hands the trackers off in one transaction.
        """
        self.shutting_down.set()
        self.waker.stop()
        self.control.poke()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the threads and give the lease up (after the incarnations left)."""
        deadline = time.monotonic() + timeout
        while self._incarnations and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stopped.set()
        self.waker.stop()
        self.control.poke()
        if self._control_thread is not None:
            self._control_thread.join(timeout=max(0.0, deadline - time.monotonic()))
        try:
            self.lease.retire()
        except RegistryUnavailable as exc:
            log.warning("could not retire worker lease %s: %s", self.worker_id, exc)

    # -- incarnations -----------------------------------------------------------------------------

    def add(self, inc: Incarnation) -> None:
        with self._lock:
            self._incarnations[inc.row_id] = inc
            if inc.worker_id != self.worker_id:  # claimed under a lease declared lost meanwhile
                inc.fence()
            elif self.shutting_down.is_set():
                inc.hand_off_later()

    def remove(self, inc: Incarnation) -> None:
        with self._lock:
            if self._incarnations.get(inc.row_id) is inc:
                del self._incarnations[inc.row_id]

    def incarnations(self) -> list[Incarnation]:
        with self._lock:
            return list(self._incarnations.values())

    def running(self) -> int:
        return len(self._incarnations)

    def holds(self, inc: Incarnation) -> bool:
        """The incarnation may go on: not interrupted, and its lease is this process's live one."""
        return inc.interrupt is None and inc.worker_id == self.worker_id and self.lease.valid()

    def wait_for_lease(self, inc: Incarnation) -> bool:
        """Block while the lease is not known to be valid; False if the incarnation was interrupted
        or its lease was declared lost (the process holds a new one now: it is fenced)."""

        def give_up() -> bool:
            if inc.worker_id != self.worker_id:
                inc.fence()
            return inc.interrupt is not None

        return self.lease.wait(give_up)

    def wait_for_lease_to_claim(self) -> bool:
        """Block while the lease is not known to be valid; False if the process began shutting down.

        An entry claimed under a lease that has run out would be found an orphan of a lost worker
        at once and restarted a second time; the wait ends when the lease is renewed, or when this
        process, declared lost, registers a fresh one.
        """
        return self.lease.wait(self.shutting_down.is_set)

    def throttle(self, kind: str, rate: float | None, n: int, give_up: Callable[[], bool]) -> bool:
        """Wait until ``n`` ticks of ``kind`` may run under its rate limit (see ``RateLimiter.admit``)."""
        return self.limiter.admit(kind, rate, n, give_up, self.shutting_down)

    def poke_waker(self) -> None:
        """Something became due sooner than the waker knows (a backoff restart was scheduled)."""
        self.waker.poke()

    def _on_wakeup(self, row_id: int, why: str) -> None:
        if why == "wake":  # a message for a parked tracker: it is due now
            self.waker.poke()
            return
        inc = self._incarnations.get(row_id)
        if inc is None:
            return
        if why == "mail":
            inc.deliver_mail()  # straight to the tracker: a call is answered without a poll
        else:
            self.control.poke()  # a stop: the control loop reads the reason
