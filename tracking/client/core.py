"""The client: what ``start``, ``lookup``, ``stop``, ``call`` and ``cast`` do, on one registry, and
which client is the current one."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from tracking import registry
from tracking.client.bulk import Bulk
from tracking.client.joined import AppTransaction, open_transaction
from tracking.client.operations import Operations
from tracking.client.refs import Publish, PublishMany, TrackerRef, announce, running_here
from tracking.client.replies import replies
from tracking.exceptions import NotFound, Timeout, TrackerCrashed, TrackingError
from tracking.models import MessageStatus, MessageType, Status
from tracking.policy import RestartPolicy
from tracking.settings import Settings
from tracking.validation import json_object, json_value
from tracking.validation import stop_reason as valid_stop_reason
from tracking.validation import transaction_id as valid_transaction_id


@dataclasses.dataclass(frozen=True)
class Client(Operations, Bulk):
    """The registry at ``settings``, and the broker ``publish`` sends trackers' messages to
    (``publish_many``, when given, sends many at once: ``start_many``'s)."""

    settings: Settings
    publish: Publish
    publish_many: PublishMany | None = None

    def start(
        self, kind: str, transaction_id: str, args: dict[str, Any], policy: RestartPolicy
    ) -> TrackerRef:
        """Record the tracker and publish its message; idempotent (see ``Tracker.start``). Inside
        an application transaction, it takes effect only if that commits (:mod:`.joined`)."""
        valid_transaction_id(transaction_id)
        start_args = json_object(args, "start arguments", self.settings.max_state_bytes)
        joined = open_transaction(self.settings)
        if joined is None:
            row, created = registry.start(self.settings, kind, transaction_id, start_args, policy)
        elif joined.connection is not None:
            row, created = registry.start_on(
                self.settings, joined.connection, kind, transaction_id, start_args, policy
            )
        else:
            return self._start_on_commit(joined, kind, transaction_id, start_args, policy)
        if not created:
            return TrackerRef.from_row(row, already_started=True)
        ref = TrackerRef.from_row(row)
        if joined is None:
            announce(self.publish, row, ref)
        else:
            joined.on_commit(lambda: announce(self.publish, row, ref))
        return ref

    def _start_on_commit(
        self,
        joined: AppTransaction,
        kind: str,
        transaction_id: str,
        args: dict[str, Any],
        policy: RestartPolicy,
    ) -> TrackerRef:
        """A start in a transaction of another database, made after the commit. Nothing touches
        the registry before then: not even a read, which could wait on a lock the application's
        transaction holds (SQLite's, when the registry's first use migrates it)."""
        joined.on_commit(lambda: self._start_now(kind, transaction_id, args, policy))
        return TrackerRef.waiting_for_commit(kind, transaction_id)

    def _start_now(self, kind: str, transaction_id: str, args: dict[str, Any], policy: RestartPolicy) -> None:
        row, created = registry.start(self.settings, kind, transaction_id, args, policy)
        if created:
            announce(self.publish, row, TrackerRef.from_row(row))

    def start_afresh(self, kind: str, transaction_id: str) -> TrackerRef:
        """Start a ``dead`` entry afresh with the start arguments and restart policy it had:
        ``init`` runs again, restarts reset (an operator's action)."""
        valid_transaction_id(transaction_id)
        row = registry.get(self.settings, kind, transaction_id)
        if row is None:
            raise NotFound(f"no {kind} tracker is registered for {transaction_id!r}")
        if row.status is not Status.DEAD:
            raise TrackingError(f"{kind} {transaction_id!r} is {row.status}, not dead: not started afresh")
        return self.start(kind, transaction_id, row.args, RestartPolicy.from_json(row.policy))

    def lookup(self, kind: str, transaction_id: str) -> TrackerRef | None:
        valid_transaction_id(transaction_id)
        row = registry.find(self.settings, kind, transaction_id)
        if row is None or row.status is Status.DEAD:
            return None
        return TrackerRef.from_row(row)

    def get_state(self, kind: str, transaction_id: str) -> dict[str, Any] | None:
        valid_transaction_id(transaction_id)
        row = registry.get(self.settings, kind, transaction_id)
        if row is None:
            raise NotFound(f"no {kind} tracker is registered for {transaction_id!r}")
        return row.state

    def stop(self, kind: str, transaction_id: str, reason: str, timeout: float) -> None:
        """Record the stop and wait until the incarnation it concerns has exited."""
        valid_transaction_id(transaction_id)
        valid_stop_reason(reason)
        before = registry.get(self.settings, kind, transaction_id)
        outcome, row = registry.request_stop(self.settings, kind, transaction_id, reason)
        if before is not None and outcome in ("restarting", "dead"):
            self._after_abnormal_stop(before, outcome, row)
        if outcome != "requested" or row is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = registry.get(self.settings, kind, transaction_id)
            if now is None or now.epoch != row.epoch or now.status is not Status.RUNNING:
                return
            time.sleep(0.02)
        raise Timeout(f"{kind} {transaction_id!r} did not exit within {timeout} s; the stop stays requested")

    def send(self, kind: str, transaction_id: str, type_: MessageType, message: Any) -> int:
        """Queue a cast or a call; returns the message's ID."""
        valid_transaction_id(transaction_id)
        body = json_value(message, "a message", self.settings.max_state_bytes)
        return registry.enqueue(self.settings, kind, transaction_id, type_, body)

    def call(self, kind: str, transaction_id: str, message: Any, timeout: float) -> Any:
        """Send a call and wait for its reply (see ``Tracker.call``)."""
        if running_here.get() == (kind, transaction_id):
            raise TrackingError(f"{kind} {transaction_id!r} called itself: it would wait forever")
        answers = replies(self.settings)
        listening = answers.listening()  # before the call is queued: its answer cannot be missed
        message_id = self.send(kind, transaction_id, MessageType.CALL, message)
        answer = answers.answer(listening, message_id, timeout)
        if answer is None:
            raise NotFound(f"{kind} {transaction_id!r} left the registry before answering")
        if answer.status is MessageStatus.QUEUED:
            raise Timeout(f"{kind} {transaction_id!r} did not answer within {timeout} s")
        if answer.status is MessageStatus.FAILED:
            raise TrackerCrashed(f"{kind} {transaction_id!r} crashed handling the call: {answer.error}")
        return answer.reply

    def select(
        self,
        kind: str | None = None,
        status: str | None = None,
        worker: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[TrackerRef]:
        wanted = Status(status) if status is not None else None
        rows = registry.select(self.settings, kind, wanted, worker, limit, offset)
        return [TrackerRef.from_row(r) for r in rows]

    def count(self, kind: str | None = None, status: str | None = None) -> int:
        wanted = Status(status) if status is not None else None
        return registry.count(self.settings, kind, wanted)


# -- the current client -----------------------------------------------------------------------------

_lock = threading.Lock()
_resolvers: list[Callable[[], Client | None]] = []
_installed: Client | None = None
_fallback: Callable[[], Client] | None = None


def current() -> Client:
    """The client ``Tracker.start`` and the other class methods use: the first a resolver gives
    (a framework's client for the application at hand), else the one installed last, else the
    fallback's (the default built from the environment)."""
    for resolve in list(_resolvers):
        found = resolve()
        if found is not None:
            return found
    if _installed is not None:
        return _installed
    if _fallback is None:
        raise TrackingError("no tracking client: install tracking onto a Celery app first")
    return _fallback()


def use(client: Client) -> None:
    """Make ``client`` the process's current one (what ``tracking.install(app)`` does)."""
    global _installed
    with _lock:
        _installed = client


def installed() -> Client | None:
    return _installed


def add_resolver(resolve: Callable[[], Client | None]) -> None:
    """Consult ``resolve`` first: it returns the client for the current context, or None."""
    with _lock:
        if resolve not in _resolvers:
            _resolvers.append(resolve)


def set_fallback(factory: Callable[[], Client]) -> None:
    """The client to use when none was installed (built on first use)."""
    global _fallback
    _fallback = factory
