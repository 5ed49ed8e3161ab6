"""The supervisor: one sweep over the registry, run by beat, by every worker now and then, and by
``tracking supervise --once``.

What a sweep rescues, in order:

1. **Lost workers.** A worker process whose lease (its row in ``tracking_workers``) has not been
   renewed for ``lease_seconds`` by the database clock is declared lost. Every running tracker
   whose worker has no live lease (lost, stopped, or its row missing) has exited abnormally
   ("worker_lost"): it is restarted at once, without the backoff, and the loss counts toward its
   restart intensity. A stop requested with reason normal or shutdown before the loss is honoured
   instead: the entry is deregistered.
2. **Unclaimed starts.** An entry recorded as pending but not claimed within the start grace
   period (the broker lost the message, or was down at ``start``) is published again under the
   same epoch: if the first message does turn up later, only one of the two can claim the entry.
   Each further wait doubles, up to 32 grace periods (a publish that failed does not count).
3. **Due restarts and parked trackers.** A failed entry whose backoff is over, and a parked
   tracker whose next tick (or a message) is due, are made pending and published. Workers' wakers
   do this as soon as they are due (``tracking.worker.waker``); the sweep wakes those left due for
   a lease period (no worker is up, or the wakers fall behind).
4. **History.** Events older than ``events_retention_seconds``, and answered calls nobody
   collected, are deleted, a batch per sweep.

Caveats: a sweep's cost follows the rows it acts on (indexed on status and due time, and on the
owning worker), not the size of the registry; a lost worker's trackers are restarted in one
transaction of a few statements (up to ``limit`` per sweep). Any number of sweeps may run at once:
each change is conditional on the entry's epoch and status, and on PostgreSQL the rows one sweep
is changing are skipped by the others (SKIP LOCKED), so a second supervisor finds nothing left to
do rather than restarting a tracker twice. Returns and logs its counts.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

from tracking import registry, signals
from tracking.client import Publish, publish_or_warn
from tracking.exceptions import RegistryUnavailable
from tracking.models import Woken
from tracking.policy import Action, RestartPolicy
from tracking.settings import Settings

log = logging.getLogger("tracking.supervisor")

#: publishes woken entries, several in one message where it can; returns how many it could not
PublishWoken = Callable[[list[Woken]], int]


#: what a sweep counts, in the order it reports them
COUNTS = (
    "lost_workers",
    "restarted",
    "dead",
    "deregistered",
    "republished",
    "woken",
    "failed_publish",
    "pruned",
)


def _one_by_one(publish: Publish) -> PublishWoken:
    """Publish woken entries one message each; a failed publish leaves the entry pending (it is
    published again after the start grace)."""
    return lambda rows: sum(not publish_or_warn(publish, row) for row in rows)


def sweep(
    settings: Settings,
    publish: Publish,
    name: str | None = None,
    limit: int = 1000,
    publish_woken: PublishWoken | None = None,
) -> dict[str, int]:
    """One sweep; returns what it did, counted. ``publish_woken``: how the parked and failed
    entries it wakes are published (a worker's waker batches them); by default one message each."""
    name = name or f"{socket.gethostname()}/{os.getpid()}"
    counts = dict.fromkeys(COUNTS, 0)

    counts["lost_workers"], lost = registry.mark_lost_workers(settings)
    for old, decision, new in registry.restart_orphans(settings, limit=limit):
        about = {"transaction_id": old.transaction_id, "epoch": old.epoch}
        if decision.action is Action.DEAD:
            counts["dead"] += 1
            reason = RestartPolicy.from_json(old.policy).why_dead()
            signals.tracker_dead.send(old.kind, **about, reason=reason)
        elif decision.action is Action.DEREGISTER:
            counts["deregistered"] += 1
        elif new is not None:
            counts["restarted"] += 1
            signals.tracker_restarted.send(old.kind, **about, cause="worker_lost", delay=decision.delay)
            if not publish_or_warn(publish, new):
                counts["failed_publish"] += 1
    registry.forget_workers(settings, lost)

    unsent = []
    for row in registry.take_due(settings, limit=limit):
        counts["republished"] += 1
        if not publish_or_warn(publish, row):
            counts["failed_publish"] += 1
            unsent.append(row)
    registry.not_published(settings, unsent)  # a failed publish is no copy waiting in the broker

    # Workers' wakers wake due entries within a second, parked ones in batches; the sweep wakes
    # those they left for a lease period (no worker is up, or they fall behind). Published one by
    # one, they would cost a message and a claim each just when the workers are behind.
    woken = registry.wake_due(settings, limit=limit, overdue=settings.lease_seconds)
    counts["woken"] = len(woken)
    counts["failed_publish"] += (publish_woken or _one_by_one(publish))(woken)

    counts["pruned"] = registry.prune(settings, limit=limit)

    try:
        registry.record_sweep(settings, name, counts)
    except RegistryUnavailable as exc:
        log.warning("could not record the sweep: %s", exc)
    if any(counts.values()):
        log.info("tracking sweep by %s: %s", name, counts)
    return counts
