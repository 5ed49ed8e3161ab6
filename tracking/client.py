"""The client: what ``start``, ``lookup``, ``stop``, ``call`` and ``cast`` do, on one registry.

A :class:`Client` is the settings of a registry plus a way to publish a tracker's message (the
Celery adapter gives it one). ``Tracker.start(...)`` and the other class methods use the current
client (:func:`current`): the one a framework integration resolves for the application at hand (a
Flask app context), else the one installed last in the process, else the default one built from
the environment. Nothing here knows Celery.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from tracking import registry, signals
from tracking.exceptions import NotFound, Timeout, TrackerCrashed, TrackingError
from tracking.models import Entry, MessageStatus, MessageType, Status
from tracking.policy import RestartPolicy
from tracking.redact import redact_url
from tracking.settings import Settings
from tracking.validation import json_object, json_value
from tracking.validation import stop_reason as valid_stop_reason
from tracking.validation import transaction_id as valid_transaction_id

log = logging.getLogger("tracking")


class Publishable(Protocol):
    """What the message that starts an incarnation names: an :class:`~tracking.models.Entry`, or a
    :class:`Publication` where there is no entry at hand."""

    @property
    def kind(self) -> str: ...
    @property
    def transaction_id(self) -> str: ...
    @property
    def epoch(self) -> int: ...
    @property
    def task_id(self) -> str: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Publication:
    """The message that starts incarnation ``epoch`` of a tracker, as its task received it (a
    worker passing on a message it will not claim)."""

    kind: str
    transaction_id: str
    epoch: int
    task_id: str


#: sends the message that starts incarnation ``epoch`` of a tracker
Publish = Callable[[Publishable], None]
P = TypeVar("P", bound=Publishable)

#: the (kind, transaction ID) whose incarnation runs in this thread (set by the worker), so that
#: a tracker calling itself is told at once instead of waiting for ever
running_here: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "tracking_running_here", default=None
)


@dataclasses.dataclass(frozen=True)
class TrackerRef:
    """A registry entry as it was read: which incarnation runs a transaction's tracker, and where."""

    kind: str
    transaction_id: str
    task_id: str
    worker: str | None
    status: Status
    restarts: int
    started_at: datetime
    heartbeat_at: datetime | None
    #: the fencing token of the incarnation (grows with every restart or handoff)
    epoch: int
    last_error: str | None = None
    already_started: bool = False

    @classmethod
    def from_row(cls, entry: Entry, already_started: bool = False) -> TrackerRef:
        """The reference to a registry entry (its worker and lease only while it runs)."""
        running = entry.status is Status.RUNNING
        return cls(
            kind=entry.kind,
            transaction_id=entry.transaction_id,
            task_id=entry.task_id,
            worker=entry.worker if running else None,
            status=entry.status,
            restarts=entry.restarts,
            started_at=entry.started_at,
            heartbeat_at=entry.heartbeat_at if running else None,
            epoch=entry.epoch,
            last_error=entry.last_error,
            already_started=already_started,
        )

    def refresh(self) -> TrackerRef | None:
        """The entry as it is now (``lookup`` of the same kind and transaction ID)."""
        return current().lookup(self.kind, self.transaction_id)


def publish_or_warn(publish: Callable[[P], None], row: P, what: str = "published") -> bool:
    """Publish ``row``; if the broker cannot take it, log why and return False. The entry is
    recorded already, so the supervisor publishes it again after the start grace."""
    try:
        publish(row)
        return True
    except Exception as exc:
        log.warning("%s %s not %s yet: %s", row.kind, row.transaction_id, what, redact_url(str(exc)))
        return False


@dataclasses.dataclass(frozen=True)
class Client:
    """The registry at ``settings``, and the broker ``publish`` sends trackers' messages to."""

    settings: Settings
    publish: Publish

    def start(
        self, kind: str, transaction_id: str, args: dict[str, Any], policy: RestartPolicy
    ) -> TrackerRef:
        """Record the tracker and publish its message; idempotent (see ``Tracker.start``)."""
        valid_transaction_id(transaction_id)
        start_args = json_object(args, "start arguments", self.settings.max_state_bytes)
        row, created = registry.start(self.settings, kind, transaction_id, start_args, policy)
        if not created:
            return TrackerRef.from_row(row, already_started=True)
        publish_or_warn(self.publish, row)
        ref = TrackerRef.from_row(row)
        signals.tracker_started.send(kind, transaction_id=transaction_id, epoch=row.epoch, ref=ref)
        return ref

    def lookup(self, kind: str, transaction_id: str) -> TrackerRef | None:
        valid_transaction_id(transaction_id)
        row = registry.get(self.settings, kind, transaction_id)
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
        outcome, row = registry.request_stop(self.settings, kind, transaction_id, reason)
        if outcome == "restarting" and row is not None:
            publish_or_warn(self.publish, row, "restarted")
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
        message_id = self.send(kind, transaction_id, MessageType.CALL, message)
        began = time.monotonic()
        deadline = began + timeout
        while not registry.reply_ready(self.settings, message_id):
            now = time.monotonic()
            if now >= deadline:
                if registry.withdraw(self.settings, message_id):
                    raise Timeout(f"{kind} {transaction_id!r} did not answer within {timeout} s")
                break  # answered just now
            # Poll closely while a prompt answer is likely, then back off.
            time.sleep(min(0.002 if now - began < 0.1 else 0.02, deadline - now))
        answer = registry.take_reply(self.settings, message_id)
        if answer is None:
            raise NotFound(f"{kind} {transaction_id!r} left the registry before answering")
        if answer.status is MessageStatus.FAILED:
            raise TrackerCrashed(f"{kind} {transaction_id!r} crashed handling the call: {answer.error}")
        return answer.reply

    def select(
        self, kind: str | None = None, status: str | None = None, worker: str | None = None
    ) -> list[TrackerRef]:
        wanted = Status(status) if status is not None else None
        return [TrackerRef.from_row(r) for r in registry.select(self.settings, kind, wanted, worker)]

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
