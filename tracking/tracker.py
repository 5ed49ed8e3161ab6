"""The :class:`Tracker` base class users subclass, and :class:`TrackerRef`, what the API returns."""

from __future__ import annotations

import builtins
import dataclasses
import logging
import re
import time
from datetime import datetime
from typing import Any, ClassVar, Self

from tracking import celery as glue
from tracking import mailbox, registry
from tracking.exceptions import InvalidTracker, NotFound, Timeout, TrackerCrashed, TrackingError
from tracking.policy import RestartPolicy
from tracking.redact import redact_url
from tracking.registry import Status
from tracking.validation import json_object, json_value
from tracking.validation import stop_reason as valid_stop_reason
from tracking.validation import transaction_id as valid_transaction_id

log = logging.getLogger("tracking")

_KIND = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")


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
    def from_row(cls, row: registry.Row, already_started: bool = False) -> TrackerRef:
        status = Status(row["status"])
        return cls(
            kind=row["kind"],
            transaction_id=row["transaction_id"],
            task_id=row["task_id"],
            worker=row["worker"] if status is Status.RUNNING else None,
            status=status,
            restarts=row["restarts"],
            started_at=row["started_at"],
            heartbeat_at=row["heartbeat_at"] if status is Status.RUNNING else None,
            epoch=row["epoch"],
            last_error=row["last_error"],
            already_started=already_started,
        )

    def refresh(self) -> TrackerRef | None:
        """The entry as it is now (``lookup`` of the same kind and transaction ID)."""
        row = registry.get(glue.current_settings(), self.kind, self.transaction_id)
        if row is None or row["status"] == Status.DEAD:
            return None
        return TrackerRef.from_row(row)


class Tracker:
    """A long-running tracker of one transaction: subclass it, define ``init`` and ``tick``.

    Class attributes configure it (checked when the subclass is defined):

    ``kind``          the registry namespace (default: the class name)
    ``interval``      seconds between ticks
    ``restart``       "transient" (default), "permanent" or "temporary", as OTP
    ``max_restarts``, ``max_seconds``  restart intensity: more restarts in the window and it is dead
    ``backoff``, ``backoff_max``       delay before the second and later restarts, doubling
    ``park``          park between ticks, giving the worker slot back: None (default) parks when
                      ``interval`` is at least ``TRACKING_PARK_SECONDS`` (60 s), True always,
                      False never

    While it runs, an instance has ``transaction_id``, ``args`` (the start arguments), ``task_id``
    and ``token``: the fencing token of this incarnation, which grows with every restart. Pass it
    along with side effects outside the registry so that a superseded incarnation's late writes can
    be refused.
    """

    kind: ClassVar[str] = "Tracker"
    interval: ClassVar[float] = 15.0
    restart: ClassVar[str] = "transient"
    max_restarts: ClassVar[int] = 3
    max_seconds: ClassVar[float] = 5.0
    backoff: ClassVar[float] = 1.0
    backoff_max: ClassVar[float] = 60.0
    park: ClassVar[bool | None] = None
    policy: ClassVar[RestartPolicy] = RestartPolicy()

    transaction_id: str
    args: dict[str, Any]
    task_id: str
    token: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:
            cls.kind = cls.__name__
        if not isinstance(cls.kind, str) or not _KIND.match(cls.kind):
            raise InvalidTracker(f"kind must match {_KIND.pattern}, not {cls.kind!r}")
        interval = cls.interval
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
            raise InvalidTracker(f"interval must be a positive number of seconds, not {interval!r}")
        if cls.park is not None and not isinstance(cls.park, bool):
            raise InvalidTracker(f"park must be True, False or None, not {cls.park!r}")
        cls.policy = RestartPolicy(
            restart=cls.restart,  # type: ignore[arg-type]  # validated by RestartPolicy
            max_restarts=cls.max_restarts,
            max_seconds=cls.max_seconds,
            backoff=cls.backoff,
            backoff_max=cls.backoff_max,
        )
        glue.register(cls)

    @classmethod
    def _incarnate(cls, row: registry.Row) -> Self:
        tracker = cls()
        tracker.transaction_id = row["transaction_id"]
        tracker.args = dict(row["args"])
        tracker.task_id = row["task_id"]
        tracker.token = row["epoch"]
        return tracker

    # -- what subclasses define ---------------------------------------------------------------------

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        """The initial state; runs on the first start only (default: the start arguments)."""
        return dict(args)

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        """One poll of the source; return the new state, or raise ``tracking.Done`` when final."""
        raise NotImplementedError(f"{type(self).__name__} must define tick(self, state)")

    def handle_call(self, message: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Answer ``call(message)``: return ``(reply, new state)``. Optional."""
        raise NotImplementedError(f"{type(self).__name__} does not define handle_call")

    def handle_cast(self, message: Any, state: dict[str, Any]) -> dict[str, Any]:
        """Handle ``cast(message)``: return the new state. Optional."""
        raise NotImplementedError(f"{type(self).__name__} does not define handle_cast")

    # -- the API ------------------------------------------------------------------------------------

    @classmethod
    def _own_kind(cls) -> str:
        if cls is Tracker:
            raise TypeError("call this on a Tracker subclass, not on tracking.Tracker")
        return cls.kind

    @classmethod
    def start(cls, transaction_id: str, /, **args: Any) -> TrackerRef:
        """Register the tracker for ``transaction_id`` and enqueue it; idempotent.

        If one is registered and not dead, returns it with ``already_started=True`` and changes
        nothing. If the broker cannot be reached, the entry stays ``pending`` and the supervisor
        publishes it once the broker is back.
        """
        kind = cls._own_kind()
        settings = glue.current_settings()
        valid_transaction_id(transaction_id)
        start_args = json_object(args, "start arguments", settings.max_state_bytes)
        row, created = registry.start(settings, kind, transaction_id, start_args, cls.policy)
        if not created:
            return TrackerRef.from_row(row, already_started=True)
        try:
            glue.publish(row)
        except Exception as exc:  # broker down: recorded, the supervisor publishes it later
            log.warning(
                "%s %s recorded but not published yet: %s", kind, transaction_id, redact_url(str(exc))
            )
        return TrackerRef.from_row(row)

    @classmethod
    def lookup(cls, transaction_id: str) -> TrackerRef | None:
        """The registered tracker (pending, running, parked or failed awaiting restart), or None."""
        valid_transaction_id(transaction_id)
        row = registry.get(glue.current_settings(), cls._own_kind(), transaction_id)
        if row is None or row["status"] == Status.DEAD:
            return None
        return TrackerRef.from_row(row)

    @classmethod
    def get_state(cls, transaction_id: str) -> dict[str, Any] | None:
        """The last checkpointed state; None before the first checkpoint; NotFound if no entry."""
        valid_transaction_id(transaction_id)
        row = registry.get(glue.current_settings(), cls._own_kind(), transaction_id)
        if row is None:
            raise NotFound(f"no {cls.kind} tracker is registered for {transaction_id!r}")
        state: dict[str, Any] | None = row["state"]
        return state

    @classmethod
    def stop(cls, transaction_id: str, reason: str = "normal", timeout: float = 30.0) -> None:
        """Stop the tracker and return once it has exited.

        ``"normal"`` or ``"shutdown"`` deregisters it, whatever its restart type, and wins over
        whatever happens to it meanwhile (a crash, a handoff, a lost worker): no incarnation ticks
        after it. Any other reason is an abnormal exit and its restart policy applies. Raises
        NotFound for an unknown or finished ID, Timeout if it has not exited within ``timeout``
        (the request stays recorded), ValueError for a reason the registry cannot record.
        """
        kind = cls._own_kind()
        valid_transaction_id(transaction_id)
        valid_stop_reason(reason)
        settings = glue.current_settings()
        outcome, row = registry.request_stop(settings, kind, transaction_id, reason)
        if outcome == "restarting" and row is not None:
            try:
                glue.publish(row)
            except Exception as exc:  # broker down: the supervisor publishes it after the grace period
                log.warning("%s %s restart not published yet: %s", kind, transaction_id, redact_url(str(exc)))
        if outcome != "requested" or row is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = registry.get(settings, kind, transaction_id)
            if now is None or now["epoch"] != row["epoch"] or now["status"] != Status.RUNNING:
                return
            time.sleep(0.02)
        raise Timeout(f"{kind} {transaction_id!r} did not exit within {timeout} s; the stop stays requested")

    @classmethod
    def cast(cls, transaction_id: str, message: Any) -> None:
        """Queue ``message`` (any JSON value) for the tracker and return at once.

        Messages survive crashes, restarts and handoffs, and are handled in order, each once.
        Raises NotFound if no live tracker has that ID, StateNotSerializable if it is not JSON.
        """
        cls._send(transaction_id, message, "cast")

    @classmethod
    def call(cls, transaction_id: str, message: Any, timeout: float = 5.0) -> Any:
        """Send ``message`` to the tracker and return its reply (``handle_call``'s).

        Raises NotFound if no live tracker has that ID (or it exits before answering), Timeout if
        no reply comes within ``timeout`` seconds (the message is then withdrawn), TrackerCrashed if
        the tracker crashed handling it. A tracker calling itself gets an error at once.
        """
        if mailbox.current.get() == (cls._own_kind(), transaction_id):
            raise TrackingError(f"{cls.kind} {transaction_id!r} called itself: it would wait forever")
        settings = glue.current_settings()
        message_id = cls._send(transaction_id, message, "call")
        began = time.monotonic()
        deadline = began + timeout
        while not registry.reply_ready(settings, message_id):
            now = time.monotonic()
            if now >= deadline:
                if registry.withdraw(settings, message_id):
                    raise Timeout(f"{cls.kind} {transaction_id!r} did not answer within {timeout} s")
                break  # answered just now
            # Poll closely while a prompt answer is likely, then back off.
            time.sleep(min(0.002 if now - began < 0.1 else 0.02, deadline - now))
        answer = registry.take_reply(settings, message_id)
        if answer is None:
            raise NotFound(f"{cls.kind} {transaction_id!r} left the registry before answering")
        if answer["status"] == "failed":
            raise TrackerCrashed(
                f"{cls.kind} {transaction_id!r} crashed handling the call: {answer['error']}"
            )
        return answer["reply"]

    @classmethod
    def _send(cls, transaction_id: str, message: Any, type_: str) -> int:
        kind = cls._own_kind()
        valid_transaction_id(transaction_id)
        handler = getattr(Tracker, f"handle_{type_}")
        if getattr(cls, f"handle_{type_}") is handler:
            raise TypeError(f"{cls.__name__} does not define handle_{type_}")
        settings = glue.current_settings()
        body = json_value(message, "a message", settings.max_state_bytes)
        return registry.enqueue(settings, kind, transaction_id, type_, body)

    @classmethod
    def list(
        cls, status: str | None = None, worker: str | None = None, kind: str | None = None
    ) -> builtins.list[TrackerRef]:
        """Registry entries of this kind (on ``tracking.Tracker``: every kind, or ``kind``), dead
        ones included, narrowed by status and worker hostname."""
        kind = kind if cls is Tracker else cls.kind
        if status is not None:
            status = Status(status).value
        rows = registry.select(glue.current_settings(), kind, status, worker)
        return [TrackerRef.from_row(r) for r in rows]

    @classmethod
    def count(cls, status: str | None = None, kind: str | None = None) -> int:
        """How many registry entries ``list`` would return."""
        kind = kind if cls is Tracker else cls.kind
        if status is not None:
            status = Status(status).value
        return registry.count(glue.current_settings(), kind, status)
