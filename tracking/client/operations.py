"""What an operator does besides start and stop: restart now, the workers, a tracker's history,
every kind's entry for a transaction ID. :class:`~tracking.client.Client` has these methods."""

from __future__ import annotations

from datetime import UTC, datetime

from tracking import registry, signals
from tracking.client.refs import Publish, TrackerRef, publish_or_warn
from tracking.exceptions import NotFound, TrackingError
from tracking.models import Entry, Event, Status, Sweep, WorkerInfo
from tracking.policy import RestartPolicy
from tracking.settings import Settings
from tracking.validation import transaction_id as valid_transaction_id


class Operations:
    """What an operator does besides start and stop (the admin pages, ``tracking`` commands)."""

    settings: Settings
    publish: Publish

    def restart(self, kind: str, transaction_id: str) -> TrackerRef | None:
        """Restart now. A failed entry awaiting its restart is restarted at once (the rest of
        its backoff skipped); a running, pending or parked one is stopped abnormally with reason
        "restart", so its restart policy applies (a transient or permanent tracker comes back at
        once, under a new epoch; a temporary one is left dead). Returns the entry as it is
        afterwards, None if it left the registry. A dead one is refused: start it afresh."""
        valid_transaction_id(transaction_id)
        row = registry.get(self.settings, kind, transaction_id)
        if row is None:
            raise NotFound(f"no {kind} tracker is registered for {transaction_id!r}")
        if row.status is Status.DEAD:
            raise TrackingError(f"{kind} {transaction_id!r} is dead: start it afresh instead")
        if row.status is Status.FAILED:
            woken = registry.hurry(self.settings, kind, transaction_id)
            if woken is not None:
                publish_or_warn(self.publish, woken, "restarted")
        else:
            outcome, new = registry.request_stop(self.settings, kind, transaction_id, "restart")
            self._after_abnormal_stop(row, outcome, new)
        now = registry.get(self.settings, kind, transaction_id)
        return TrackerRef.from_row(now) if now is not None else None

    def entry(self, kind: str, transaction_id: str) -> TrackerRef | None:
        """The entry whatever its status, dead ones included (``lookup`` leaves those out)."""
        valid_transaction_id(transaction_id)
        row = registry.get(self.settings, kind, transaction_id)
        return TrackerRef.from_row(row) if row is not None else None

    def _after_abnormal_stop(self, before: Entry, outcome: str, new: Entry | None) -> None:
        """An abnormal stop of a pending or parked tracker was decided here, in the caller (no
        worker runs it): publish its restart, and send the signal its worker would have sent."""
        about = {"transaction_id": before.transaction_id, "epoch": before.epoch}
        if outcome == "restarting" and new is not None:
            delay = max(0.0, (new.due_at - datetime.now(UTC)).total_seconds()) if new.due_at else 0.0
            if new.status is Status.PENDING:
                delay = 0.0
                publish_or_warn(self.publish, new, "restarted")
            signals.tracker_restarted.send(before.kind, **about, cause="stopped", delay=delay)
        elif outcome == "dead":
            reason = RestartPolicy.from_json(before.policy).why_dead()
            signals.tracker_dead.send(before.kind, **about, reason=reason)

    def workers(self) -> list[WorkerInfo]:
        """The worker processes with a row in the registry, newest first, with their lease age."""
        return registry.worker_list(self.settings)

    def last_sweeps(self) -> list[Sweep]:
        """Each supervisor's last sweep: when, and what it counted ("is anybody supervising?")."""
        return registry.last_sweeps(self.settings)

    def history(self, kind: str, transaction_id: str, limit: int = 20) -> list[Event]:
        """The tracker's most recent events, newest last."""
        valid_transaction_id(transaction_id)
        return registry.history(self.settings, kind, transaction_id, limit)

    def find(self, transaction_id: str) -> list[TrackerRef]:
        """The entries of every kind for this exact transaction ID (dead ones included)."""
        valid_transaction_id(transaction_id)
        return [TrackerRef.from_row(r) for r in registry.entries_of(self.settings, transaction_id)]
