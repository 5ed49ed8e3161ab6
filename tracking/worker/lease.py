"""A worker process's lease: one row in ``tracking_workers`` that is the lease of every tracker
the process runs, renewed by one write per heartbeat interval whatever their number.

The lease is also the process's own fence: it counts as valid only while the last successful
renewal is younger than the lease minus one heartbeat, measured from *before* that renewal was
sent. A supervisor declares the process lost only once the lease has expired by the database
clock, so a process cut off from the database (or paused) stops ticking before anyone else can
start its trackers. A renewal refused because the process was declared lost means its trackers
run elsewhere now: the process registers a fresh lease, and the incarnations of the old one are
fenced.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from tracking import registry
from tracking.settings import Settings


class Lease:
    """The lease of one worker process (its ID is unique per process start)."""

    def __init__(self, settings: Settings, hostname: str, pid: int) -> None:
        self.settings = settings
        self.hostname = hostname
        self.pid = pid
        self.worker_id = ""
        self._deadline = 0.0
        self._renewed = threading.Condition()

    def register(self) -> None:
        """Register a fresh lease (at start, or after the old one was declared lost)."""
        worker_id = f"{self.hostname}/{self.pid}/{uuid.uuid4().hex[:12]}"
        sent = time.monotonic()
        registry.register_worker(self.settings, worker_id, self.hostname, self.pid)
        with self._renewed:
            self.worker_id = worker_id
            self._valid_from(sent)

    def renew(self) -> bool:
        """Renew; False if the lease had been declared lost (the caller fences what ran under it,
        then registers a fresh one)."""
        sent = time.monotonic()
        if registry.renew_worker(self.settings, self.worker_id):
            with self._renewed:
                self._valid_from(sent)
            return True
        return False

    def _valid_from(self, sent: float) -> None:
        self._deadline = sent + self.settings.lease_seconds - self.settings.heartbeat_seconds
        self._renewed.notify_all()

    def valid(self) -> bool:
        return time.monotonic() < self._deadline

    def wait(self, give_up: Callable[[], bool]) -> bool:
        """Block while the lease is not known to be valid: True once it is, False as soon as
        ``give_up()`` (checked at least every control poll)."""
        with self._renewed:
            while not self.valid():
                if give_up():
                    return False
                self._renewed.wait(timeout=self.settings.control_poll_seconds)
        return not give_up()

    def retire(self) -> None:
        if self.worker_id:
            registry.retire_worker(self.settings, self.worker_id)
