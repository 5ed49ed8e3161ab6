"""The control loop of a worker process: one thread that renews the lease, hands stop requests
and mail to the incarnations they concern, hands off entries held here but run nowhere, starts a
supervisor sweep now and then (on a thread of its own: a sweep publishes to the broker, which must
never hold up the lease), and at a warm shutdown hands every idle incarnation off at once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from tracking import registry
from tracking.client import Publish, publish_or_warn
from tracking.exceptions import RegistryUnavailable
from tracking.models import Entry
from tracking.settings import Settings
from tracking.worker.incarnation import Incarnation
from tracking.worker.lease import Lease
from tracking.worker.retry import retrying

log = logging.getLogger("tracking.worker")


@dataclasses.dataclass(frozen=True)
class Process:
    """What the control loop reads of its worker process."""

    settings: Settings
    hostname: str
    publish: Publish
    lease: Lease
    #: the running incarnations, as they are now
    incarnations: Callable[[], list[Incarnation]]
    shutting_down: threading.Event
    stopped: threading.Event

    @property
    def worker_id(self) -> str:
        return self.lease.worker_id


class Control:
    def __init__(
        self, process: Process, sweep: Callable[[], object] | None, revoked: Callable[[str], bool]
    ) -> None:
        self.process = process
        self.settings = process.settings
        self._sweep = sweep
        self._revoked = revoked
        self._poked = threading.Event()
        self._handed_off = threading.Event()
        self._sweeper: threading.Thread | None = None

    def poke(self) -> None:
        """Run a round now (a stop request arrived, the worker shuts down)."""
        self._poked.set()

    @property
    def handed_off(self) -> bool:
        """The warm shutdown's handoff is done."""
        return self._handed_off.is_set()

    def run(self) -> None:
        settings, process = self.settings, self.process
        now = time.monotonic()
        next_beat, next_sweep = now + settings.heartbeat_seconds, now + settings.sweep_seconds
        next_stray_check = now + settings.lease_seconds
        while True:
            self._poked.wait(settings.control_poll_seconds)
            self._poked.clear()
            if process.stopped.is_set():
                return
            if process.shutting_down.is_set() and not self._handed_off.is_set():
                self._hand_off_all()
                self._handed_off.set()
            now = time.monotonic()
            try:
                if now >= next_beat or not process.lease.valid():
                    next_beat = now + settings.heartbeat_seconds
                    self._renew()
                self._deliver_signals()
                if now >= next_stray_check and not process.shutting_down.is_set():
                    next_stray_check = now + settings.lease_seconds
                    self._hand_off_strays()
                if self._sweep is not None and now >= next_sweep:
                    next_sweep = now + settings.sweep_seconds
                    self._sweep_aside()
            except RegistryUnavailable as exc:
                log.warning("registry unavailable in worker runtime: %s", exc)
            except Exception:  # keep the lease thread alive whatever one round does
                log.exception("worker runtime round failed")

    def _renew(self) -> None:
        if self.process.lease.renew():
            return
        # A supervisor declared this process lost: its trackers run elsewhere now. They are fenced
        # before a fresh lease lets this process claim anything again.
        lease = self.process.lease
        incarnations = self.process.incarnations()
        log.error(
            "worker lease %s was declared lost; fencing %d trackers", lease.worker_id, len(incarnations)
        )
        for inc in incarnations:
            inc.fence()
        lease.register()

    def _hand_off_all(self) -> None:
        process = self.process
        handing = [inc for inc in process.incarnations() if inc.hand_off_if_idle()]
        reason = f"worker {process.hostname} shutting down"
        try:
            rows = retrying(
                "handoff",
                lambda: registry.hand_off(self.settings, [(i.row_id, i.epoch) for i in handing], reason),
                process.shutting_down,
            )
        except RegistryUnavailable as exc:
            log.error("handoff failed, leaving %d trackers to the supervisor: %s", len(handing), exc)
            return
        for row in rows:
            publish_or_warn(process.publish, row)
        log.info("handed off %d trackers", len(rows))

    def _hand_off_strays(self) -> None:
        """Hand off entries this process holds in the registry but runs no incarnation of.

        A claim whose commit succeeded but whose answer was lost with the connection leaves such an
        entry: running under this (live) lease, so no supervisor would ever restart it. Entries
        claimed in the last lease period are left alone: their incarnation may be starting.
        """
        process = self.process
        held = registry.held(self.settings, process.worker_id, claimed_before=self.settings.lease_seconds)
        running = {(inc.row_id, inc.epoch) for inc in process.incarnations()}
        strays = [pair for pair in held if pair not in running]
        if not strays:
            return
        log.error("%d entries held by this worker run nowhere; handing them off", len(strays))
        rows = registry.hand_off(self.settings, strays, f"not running in worker {process.hostname}")
        # Published aside: a broker that is down makes each publish slow, and this thread renews
        # the lease.
        threading.Thread(target=self._publish_all, args=(rows,), name="tracking-publish", daemon=True).start()

    def _publish_all(self, rows: list[Entry]) -> None:
        for row in rows:
            publish_or_warn(self.process.publish, row)

    def _deliver_signals(self) -> None:
        """Hand stop requests and mail addressed to this process's trackers to them."""
        incarnations = {inc.row_id: inc for inc in self.process.incarnations()}
        if not incarnations:
            return
        for row_id, epoch, reason, mail in registry.signals(self.settings, self.process.worker_id):
            inc = incarnations.get(row_id)
            if inc is None or inc.epoch != epoch:
                continue
            if reason is not None:
                inc.stop(reason)
            if mail:
                inc.deliver_mail()
        for inc in incarnations.values():
            if self._revoked(inc.task_id) or (
                inc.batch_task_id is not None and self._revoked(inc.batch_task_id)
            ):
                inc.stop("shutdown")

    def _sweep_aside(self) -> None:
        """Start a sweep on a thread of its own, unless the last one is still running.

        A sweep publishes to the broker, and every publish fails slowly while the broker is down:
        run in this thread it would hold up the lease renewal, and the trackers with it.
        """
        if self._sweeper is not None and self._sweeper.is_alive():
            return
        self._sweeper = threading.Thread(target=self._sweep_once, name="tracking-sweep", daemon=True)
        self._sweeper.start()

    def _sweep_once(self) -> None:
        assert self._sweep is not None
        try:
            self._sweep()
        except RegistryUnavailable as exc:
            log.warning("registry unavailable in worker sweep: %s", exc)
        except Exception:
            log.exception("worker sweep failed")
