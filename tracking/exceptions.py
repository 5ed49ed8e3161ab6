"""The errors `tracking` raises, one hierarchy under :class:`TrackingError`.

Each class's docstring is its default message. :class:`Done` is not an error: a tracker raises it
to exit normally.
"""

from __future__ import annotations

from typing import Any


class TrackingError(Exception):
    """Something went wrong in tracking."""

    def __init__(self, message: str | None = None, **context: Any) -> None:
        self.context = context
        super().__init__(message or (self.__doc__ or "").strip())


class NotFound(TrackingError):
    """No tracker is registered under that kind and transaction ID."""


class Timeout(TrackingError):
    """The tracker did not answer or exit in time."""


class TrackerCrashed(TrackingError):
    """The tracker crashed while handling the call; its restart policy applies."""


class InvalidTransactionId(TrackingError, ValueError):
    """A transaction ID must be a non-empty str of at most 255 characters, without control
    characters or lone surrogates."""


class TransactionIdNotStr(InvalidTransactionId, TypeError):
    """A transaction ID must be a str (also a TypeError)."""


class StateNotSerializable(TrackingError, TypeError):
    """Tracker state, start arguments and messages must be JSON objects within the size limit."""


class InvalidTracker(TrackingError, TypeError):
    """A Tracker subclass is misconfigured (restart type, intensity or backoff settings)."""


class RegistryUnavailable(TrackingError):
    """The registry database could not be reached; the operation may be retried."""


class RegistryRefused(TrackingError):
    """The registry database refused a value it can never store; retrying would not help."""


class RegistryNotMigrated(RegistryRefused):
    """The registry's tables are missing or older than this code: run ``tracking migrate``."""


class Fenced(TrackingError):
    """This incarnation was superseded (restarted elsewhere, stopped or handed off) and must stop."""


class Done(Exception):
    """Raised by a tracker's ``tick`` to exit normally; the tracker is deregistered.

    ``Done(state)`` gives the final state: a permanent tracker, which is restarted after ``Done``,
    starts again from it; for the others it is dropped with the registry entry.
    """

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.state = state
        super().__init__("tracker finished")
