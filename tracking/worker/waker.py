"""The waker: parked trackers whose next tick is due, and failed ones whose backoff is over, are
made pending and published for any worker to run; no thread or timer per tracker waits for them.

Parked entries of one kind that woke for their tick (not for a message) are published together,
as one :class:`Batch` of at most the kind's ``batch_size`` (``worker.batch`` ticks them); the
others are published one message each.

One cheap read finds when the earliest of them is due; the waker sleeps until then (at most
``POLL``, or until something pokes it: a message for a parked tracker, a backoff restart scheduled
by this process). Every worker process runs one; of two wakers, each entry is woken by exactly one
(``registry.wake_due``). Parking never uses the broker's ETA or countdown.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections.abc import Callable

from tracking import registry
from tracking.client import Publish, publish_or_warn
from tracking.exceptions import RegistryUnavailable
from tracking.models import Woken
from tracking.redact import redact_url
from tracking.settings import Settings
from tracking.tracker import of_kind

log = logging.getLogger("tracking.worker")

#: the longest the waker sleeps before it looks for due entries again (seconds)
POLL = 1.0
#: how many entries one wake-up transaction takes
BATCH = 500
#: how many entries may wait pending (woken or started, not yet claimed) before the waker wakes no
#: more: past it the workers are behind, and waking more would only pile messages up in the broker
#: until the start grace ran out and the sweep published each of them again
MAX_PENDING = 5000
#: how long the waker waits before it counts the pending entries again when there were too many
BEHIND = 0.1


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    """The message that asks a worker to tick parked entries of one kind together: the
    ``(transaction ID, epoch)`` of each woken incarnation."""

    kind: str
    members: tuple[tuple[str, int], ...]
    task_id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))


#: sends a batch's message
PublishBatch = Callable[[Batch], None]


class Waker:
    def __init__(
        self, settings: Settings, publish: Publish, publish_batch: PublishBatch | None = None
    ) -> None:
        self.settings = settings
        self.publish = publish
        self.publish_batch = publish_batch
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
        room = MAX_PENDING - registry.pending(self.settings, MAX_PENDING)
        if room < BATCH:
            # The workers are behind: parked entries stay due (and parked) until they catch up,
            # and are then woken a whole round at a time, so that their batches stay full (a round
            # cut to the room left made batches of a few entries, a message and a claim each).
            # Restarts of failed entries are few and run alone: they do not wait.
            self.publish_woken(registry.wake_due(self.settings, BATCH, parked=False))
            return BEHIND
        rows = registry.wake_due(self.settings, BATCH)
        self.publish_woken(rows)
        return 0.0 if len(rows) == BATCH else min(POLL, self.settings.control_poll_seconds)

    def publish_woken(self, rows: list[Woken]) -> int:
        """Publish woken rows, in batches where they can be (:meth:`batched`); returns how many
        entries could not be published (they stay pending: a sweep publishes each again after
        the start grace)."""
        alone, batches = self.batched(rows)
        failed = sum(not publish_or_warn(self.publish, row) for row in alone)
        return failed + sum(len(batch.members) for batch in batches if not self._publish_batch(batch))

    def batched(self, rows: list[Woken]) -> tuple[list[Woken], list[Batch]]:
        """The woken rows to publish alone, and the batches of the others.

        A batch holds parked entries of one kind that woke for their tick: a failed entry's
        restart, or a parked one woken early by a message, runs alone (its incarnation handles the
        message first), as does a kind this process does not know or that ticks one at a time.
        """
        if self.publish_batch is None:
            return rows, []
        alone: list[Woken] = []
        by_kind: dict[str, tuple[int, list[Woken]]] = {}
        for row in rows:
            cls = of_kind(row.kind)
            woke_for_tick = row.tick_at is not None and not row.mail_waiting
            if cls is None or cls.batch_size < 2 or not woke_for_tick or not row.initialised:
                alone.append(row)
            else:
                by_kind.setdefault(row.kind, (cls.batch_size, []))[1].append(row)
        batches = []
        for kind, (size, members) in by_kind.items():
            for begin in range(0, len(members), size):
                chunk = members[begin : begin + size]
                if len(chunk) == 1:
                    alone += chunk
                else:
                    batches.append(Batch(kind, tuple((r.transaction_id, r.epoch) for r in chunk)))
        return alone, batches

    def _publish_batch(self, batch: Batch) -> bool:
        assert self.publish_batch is not None
        try:
            self.publish_batch(batch)
        except Exception as exc:  # left pending: a sweep publishes each entry again
            detail = redact_url(str(exc))
            log.warning("%s: could not publish a batch of %d: %s", batch.kind, len(batch.members), detail)
            return False
        return True
