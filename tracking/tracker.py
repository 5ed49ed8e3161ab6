"""The :class:`Tracker` base class users subclass, and the kinds this process knows.

A subclass registers itself under its ``kind`` when it is defined. Whoever must act on each kind
(the Celery adapter makes one task per kind) subscribes (:func:`subscribe`) and is told of the
kinds known already and of every later one. The class methods (``start``, ``lookup``, ...) are the
current :class:`~tracking.client.Client`'s operations for the class's kind.
"""

from __future__ import annotations

import builtins
import inspect
import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Self

from tracking import client
from tracking.client import TrackerRef
from tracking.exceptions import InvalidTracker
from tracking.models import Entry, MessageType
from tracking.policy import RestartPolicy
from tracking.registry import MAX_BATCH

__all__ = ["Tracker", "TrackerRef", "kinds", "of_kind", "subscribe"]

_KIND = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")


class _OfItsKind:
    """What :class:`Tracker` subclasses share about their kind: its name, and the class methods
    for many transaction IDs at once (``tick_many`` among them)."""

    kind: ClassVar[str] = "Tracker"
    policy: ClassVar[RestartPolicy] = RestartPolicy()

    @classmethod
    def _own_kind(cls) -> str:
        if cls is Tracker:
            raise TypeError("call this on a Tracker subclass, not on tracking.Tracker")
        return cls.kind

    @classmethod
    def start_many(cls, transaction_ids: Iterable[str], /, **args: Any) -> dict[str, TrackerRef]:
        """Start a tracker for each ID, with the same ``args``, as ``start`` does each (idempotent
        per ID); the batch is recorded in one registry transaction, all or none, and each new one
        enqueued. Returns the references by ID."""
        return client.current().start_many(cls._own_kind(), transaction_ids, args, cls.policy)

    @classmethod
    def lookup_many(cls, transaction_ids: Iterable[str]) -> dict[str, TrackerRef]:
        """The registered trackers among these IDs, by ID (as ``lookup``; IDs with none left out),
        read in one query a thousand IDs."""
        return client.current().lookup_many(cls._own_kind(), transaction_ids)

    @classmethod
    def tick_many(
        cls, due: builtins.list[tuple[Self, dict[str, Any]]]
    ) -> Sequence[dict[str, Any] | BaseException]:
        """Optional: tick many due trackers of this kind at once, to ask the source once for all.

        Receives ``(tracker, state)`` pairs of parked trackers due together and returns one outcome
        per pair, in the same order: the new state, a ``tracking.Done`` when final, or an exception
        instance for an entry that failed alone (its restart policy applies; the others go on). If
        it raises, every entry of the batch fails. Not defined: each tracker's ``tick`` is called.
        """
        raise NotImplementedError(f"{cls.__name__} does not define tick_many")

    @classmethod
    def ticks_in_bulk(cls) -> bool:
        """Whether the kind defines ``tick_many``."""
        default = getattr(_OfItsKind.tick_many, "__func__", None)
        return getattr(cls.tick_many, "__func__", None) is not default


class Tracker(_OfItsKind):
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
    ``batch_size``    parked trackers of this kind due together are ticked in batches of at most
                      this many, one after another in one worker slot (or all at once by
                      ``tick_many``); 1 ticks each in a task of its own
    ``rate_limit``    at most this many ticks a second for the kind, all workers together
                      (None: no limit); a tick waits for its turn, and the wait shows in metrics

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
    batch_size: ClassVar[int] = 50
    rate_limit: ClassVar[float | None] = None
    policy: ClassVar[RestartPolicy] = RestartPolicy()

    transaction_id: str
    args: dict[str, Any]
    task_id: str
    token: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _configure(cls)
        _register(cls)

    @classmethod
    def incarnate(cls, entry: Entry) -> Self:
        """An instance for the incarnation of ``entry`` (what a worker runs)."""
        tracker = cls()
        tracker.transaction_id = entry.transaction_id
        tracker.args = dict(entry.args)
        tracker.task_id = entry.task_id
        tracker.token = entry.epoch
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
    def start(cls, transaction_id: str, /, **args: Any) -> TrackerRef:
        """Register the tracker for ``transaction_id`` and enqueue it; idempotent.

        If one is registered and not dead, returns it with ``already_started=True`` and changes
        nothing. If the broker cannot be reached, the entry stays ``pending`` and the supervisor
        publishes it once the broker is back.
        """
        return client.current().start(cls._own_kind(), transaction_id, args, cls.policy)

    @classmethod
    def lookup(cls, transaction_id: str) -> TrackerRef | None:
        """The registered tracker (pending, running, parked or failed awaiting restart), or None."""
        return client.current().lookup(cls._own_kind(), transaction_id)

    @classmethod
    def get_state(cls, transaction_id: str) -> dict[str, Any] | None:
        """The last checkpointed state; None before the first checkpoint; NotFound if no entry."""
        return client.current().get_state(cls._own_kind(), transaction_id)

    @classmethod
    def stop(cls, transaction_id: str, reason: str = "normal", timeout: float = 30.0) -> None:
        """Stop the tracker and return once it has exited.

        ``"normal"`` or ``"shutdown"`` deregisters it, whatever its restart type, and wins over
        whatever happens to it meanwhile (a crash, a handoff, a lost worker): no incarnation ticks
        after it. Any other reason is an abnormal exit and its restart policy applies. Raises
        NotFound for an unknown or finished ID, Timeout if it has not exited within ``timeout``
        (the request stays recorded), ValueError for a reason the registry cannot record.
        """
        client.current().stop(cls._own_kind(), transaction_id, reason, timeout)

    @classmethod
    def cast(cls, transaction_id: str, message: Any) -> None:
        """Queue ``message`` (any JSON value) for the tracker and return at once.

        Messages survive crashes, restarts and handoffs, and are handled in order, each once.
        Raises NotFound if no live tracker has that ID, StateNotSerializable if it is not JSON.
        """
        cls._handles(MessageType.CAST)
        client.current().send(cls._own_kind(), transaction_id, MessageType.CAST, message)

    @classmethod
    def call(cls, transaction_id: str, message: Any, timeout: float = 5.0) -> Any:
        """Send ``message`` to the tracker and return its reply (``handle_call``'s).

        Raises NotFound if no live tracker has that ID (or it exits before answering), Timeout if
        no reply comes within ``timeout`` seconds (the message is then withdrawn), TrackerCrashed if
        the tracker crashed handling it. A tracker calling itself gets an error at once.
        """
        cls._handles(MessageType.CALL)
        return client.current().call(cls._own_kind(), transaction_id, message, timeout)

    @classmethod
    def _handles(cls, type_: MessageType) -> None:
        if getattr(cls, f"handle_{type_}") is getattr(Tracker, f"handle_{type_}"):
            raise TypeError(f"{cls.__name__} does not define handle_{type_}")

    @classmethod
    def list(
        cls, status: str | None = None, worker: str | None = None, kind: str | None = None
    ) -> builtins.list[TrackerRef]:
        """Registry entries of this kind (on ``tracking.Tracker``: every kind, or ``kind``), dead
        ones included, narrowed by status and worker hostname."""
        return client.current().select(kind if cls is Tracker else cls.kind, status, worker)

    @classmethod
    def count(cls, status: str | None = None, kind: str | None = None) -> int:
        """How many registry entries ``list`` would return."""
        return client.current().count(kind if cls is Tracker else cls.kind, status)


def _configure(cls: type[Tracker]) -> None:
    """Check a subclass's class attributes (InvalidTracker) and derive its kind and policy."""
    if "kind" not in cls.__dict__:
        cls.kind = cls.__name__
    if not isinstance(cls.kind, str) or not _KIND.match(cls.kind):
        raise InvalidTracker(f"kind must match {_KIND.pattern}, not {cls.kind!r}")
    interval = cls.interval
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
        raise InvalidTracker(f"interval must be a positive number of seconds, not {interval!r}")
    if cls.park is not None and not isinstance(cls.park, bool):
        raise InvalidTracker(f"park must be True, False or None, not {cls.park!r}")
    size = cls.batch_size
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BATCH:
        raise InvalidTracker(f"batch_size must be an int from 1 to {MAX_BATCH}, not {size!r}")
    rate = cls.rate_limit
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf
    ):
        raise InvalidTracker(f"rate_limit must be a positive number of ticks a second or None, not {rate!r}")
    if not isinstance(inspect.getattr_static(cls, "tick_many"), classmethod):
        raise InvalidTracker("tick_many must be a class method (@classmethod)")
    cls.policy = RestartPolicy(
        restart=cls.restart,  # type: ignore[arg-type]  # validated by RestartPolicy
        max_restarts=cls.max_restarts,
        max_seconds=cls.max_seconds,
        backoff=cls.backoff,
        backoff_max=cls.backoff_max,
    )


# -- the kinds this process knows ---------------------------------------------------------------------

_kinds: dict[str, type[Tracker]] = {}
_subscribers: list[Callable[[type[Tracker]], None]] = []
_lock = threading.RLock()


def _register(cls: type[Tracker]) -> None:
    """Record ``cls`` under its kind. A class redefined under the same kind (a module reloaded)
    replaces the old one; two different classes cannot share a kind."""
    with _lock:
        known = _kinds.get(cls.kind)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise InvalidTracker(
                f"kind {cls.kind!r} is already used by {known.__module__}.{known.__qualname__}"
            )
        _kinds[cls.kind] = cls
        subscribers = builtins.list(_subscribers)
    for subscriber in subscribers:
        subscriber(cls)


def of_kind(kind: str) -> type[Tracker] | None:
    """The class defined last under ``kind``, or None."""
    return _kinds.get(kind)


def kinds() -> builtins.list[str]:
    """The kinds this process has defined, sorted."""
    with _lock:
        return sorted(_kinds)


def subscribe(subscriber: Callable[[type[Tracker]], None]) -> None:
    """Call ``subscriber`` for every kind known now and every kind defined later."""
    with _lock:
        _subscribers.append(subscriber)
        classes = builtins.list(_kinds.values())
    for cls in classes:
        subscriber(cls)
