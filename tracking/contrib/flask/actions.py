"""The actions of the pages and the API (stop, restart now, start afresh) done through the
:class:`~tracking.client.Client`, and what each did in words and as an HTTP status."""

from __future__ import annotations

import dataclasses

from tracking.client import Client, TrackerRef
from tracking.exceptions import NotFound, RegistryRefused, RegistryUnavailable, Timeout, TrackingError
from tracking.models import Status


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What an action did, in words for a person and as an HTTP status for the API."""

    status: int
    message: str
    #: "success", "info" or "error" (a flash category)
    category: str
    #: the entry afterwards (None: it left the registry, or there was none)
    tracker: TrackerRef | None


def perform(client: Client, action: str, kind: str, transaction_id: str, stop_timeout: float) -> Outcome:
    """Do ``action`` through the client. A missing entry is a 404 and an action that does not
    apply (restart a dead tracker, start a live one afresh) a 409; the registry's own failures
    (unavailable, not migrated) are raised."""
    name = f"{kind} {transaction_id!r}"
    try:
        if action == "stop":
            try:
                client.stop(kind, transaction_id, "normal", stop_timeout)
            except Timeout:
                return Outcome(
                    202,
                    f"Stop requested: {name} has not exited within {stop_timeout:g} s; it stops at its "
                    "next check.",
                    "info",
                    client.entry(kind, transaction_id),
                )
            return Outcome(200, f"Stopped {name}: it has left the registry.", "success", None)
        if action == "restart":
            ref = client.restart(kind, transaction_id)
            if ref is not None and ref.status is Status.DEAD:
                return Outcome(200, f"Restarted {name}: it is temporary, so it is left dead.", "info", ref)
            return Outcome(200, f"Restarted {name}.", "success", ref)
        ref = client.start_afresh(kind, transaction_id)
        return Outcome(200, f"Started {name} afresh.", "success", ref)
    except NotFound:
        message = f"No {kind} tracker is registered for {transaction_id!r}"
        return Outcome(404, f"{message} (finished, stopped or never started).", "error", None)
    except (RegistryUnavailable, RegistryRefused):
        raise
    except TrackingError as exc:  # the action does not apply to the entry as it is
        return Outcome(409, f"Not done: {exc}.", "error", client.entry(kind, transaction_id))
