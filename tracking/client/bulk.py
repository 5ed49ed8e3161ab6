"""Many trackers of one kind at once: ``start_many`` records a batch in one registry transaction
(all or none) and publishes each new entry (past a few, through batch messages a worker fans out:
:mod:`tracking.celery.publishing`); ``lookup_many`` reads a batch in one query a thousand IDs.
:class:`~tracking.client.Client` has these methods."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tracking import registry
from tracking.client.joined import open_transaction
from tracking.client.refs import Publish, PublishMany, TrackerRef, announce_many
from tracking.models import Entry, Status
from tracking.policy import RestartPolicy
from tracking.settings import Settings
from tracking.validation import json_object
from tracking.validation import transaction_id as valid_transaction_id


class Bulk:
    """``start_many`` and ``lookup_many``."""

    settings: Settings
    publish: Publish
    publish_many: PublishMany | None

    def start_many(
        self, kind: str, transaction_ids: Iterable[str], args: dict[str, Any], policy: RestartPolicy
    ) -> dict[str, TrackerRef]:
        """Start a tracker for each ID (the same start arguments for all), as ``start`` does each:
        idempotent per ID (``ref.already_started`` for those registered and not dead). All the
        input is checked before anything is written, and the batch is recorded in one registry
        transaction: all or none. The new entries are then published with the client's
        ``publish_many`` when it has one (the Celery adapter's sends past 8 entries one batch
        message per 1,000, which a worker fans out into the entries' own messages), else one
        ``publish`` each. The registry stays the source of truth: an entry whose message the broker
        refuses or loses, or a batch message's worker never sends, stays pending, and the
        supervisor publishes it again after the start grace; a message delivered twice is dropped
        by the claim. Inside an application transaction, as ``start`` (:mod:`.joined`)."""
        ids = list(transaction_ids)
        for transaction_id in ids:
            valid_transaction_id(transaction_id)
        start_args = json_object(args, "start arguments", self.settings.max_state_bytes)
        joined = open_transaction(self.settings)
        if joined is not None and joined.connection is None:
            joined.on_commit(lambda: self._start_batch(kind, ids, start_args, policy))
            return {t: TrackerRef.waiting_for_commit(kind, t) for t in ids}
        connection = joined.connection if joined is not None else None
        rows = registry.start_many(self.settings, kind, ids, start_args, policy, connection)
        created = [row for row, new in rows.values() if new]
        refs = {t: TrackerRef.from_row(row, already_started=not new) for t, (row, new) in rows.items()}
        if joined is None:
            self._announce_all(created, refs)
        else:
            joined.on_commit(lambda: self._announce_all(created, refs))
        return {t: refs[t] for t in ids}

    def _start_batch(self, kind: str, ids: list[str], args: dict[str, Any], policy: RestartPolicy) -> None:
        """The batch made after the application's commit, on the registry's own connection."""
        rows = registry.start_many(self.settings, kind, ids, args, policy)
        created = [row for row, new in rows.values() if new]
        self._announce_all(created, {row.transaction_id: TrackerRef.from_row(row) for row in created})

    def _announce_all(self, created: list[Entry], refs: dict[str, TrackerRef]) -> None:
        """Publish the new entries, with ``publish_many`` when the client has one."""
        announce_many(self.publish, self.publish_many, created, [refs[row.transaction_id] for row in created])

    def lookup_many(self, kind: str, transaction_ids: Iterable[str]) -> dict[str, TrackerRef]:
        """The registered trackers among these IDs (as ``lookup``: dead ones left out), by ID;
        an ID with none is absent from the result."""
        ids = list(transaction_ids)
        for transaction_id in ids:
            valid_transaction_id(transaction_id)
        rows = registry.find_many(self.settings, kind, ids)
        return {row.transaction_id: TrackerRef.from_row(row) for row in rows if row.status is not Status.DEAD}
