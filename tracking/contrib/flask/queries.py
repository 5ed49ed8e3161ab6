"""What the pages and the JSON API read: the request's filters and a tracker's identity, checked
(a 400 that says why), one page of a list, one tracker with its state, history and explanation,
and their JSON forms. Everything goes through the :class:`~tracking.client.Client`."""

from __future__ import annotations

import dataclasses
import math
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from werkzeug.exceptions import BadRequest

from tracking.client import Client, TrackerRef
from tracking.exceptions import NotFound
from tracking.explain import explain
from tracking.models import Event, Status
from tracking.validation import transaction_id as valid_transaction_id

#: how far paging goes into one filter's entries (the client lists them from the oldest)
MAX_OFFSET = 10_000
STATUSES = tuple(s.value for s in Status)


def text(value: object, name: str) -> str:
    """``value`` if it is a usable kind or transaction ID, else a 400 that says why."""
    if value is None:
        raise BadRequest(f"{name} is required")
    if name == "transaction_id":
        return valid_transaction_id(value)  # InvalidTransactionId: a 400 too
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{name} is required (a non-empty string)")
    if len(value) > 255 or any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise BadRequest(f"{name} must be at most 255 characters, without control characters")
    return value


def identity(values: Mapping[str, Any]) -> tuple[str, str]:
    """The ``kind`` and ``transaction_id`` a request names (query, form or JSON body)."""
    return text(values.get("kind"), "kind"), text(values.get("transaction_id"), "transaction_id")


def _number(values: Mapping[str, Any], name: str, default: int, highest: int) -> int:
    raw = values.get(name) or default
    try:
        number = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, not {raw!r}") from None
    if not 1 <= number <= highest:
        raise BadRequest(f"{name} must be between 1 and {highest}, not {number}")
    return number


@dataclasses.dataclass(frozen=True)
class Filters:
    """What a list shows: a kind, a status, an exact transaction ID (each optional), which page."""

    kind: str | None = None
    status: str | None = None
    transaction_id: str | None = None
    page: int = 1
    per_page: int = 50

    @classmethod
    def read(cls, values: Mapping[str, Any], page_size: int, max_page_size: int) -> Filters:
        """The filters of a query string; a 400 for an unknown status or a bad number."""
        kind = text(values["kind"], "kind") if values.get("kind") else None
        status = values.get("status") or None
        if status is not None and status not in STATUSES:
            raise BadRequest(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
        txid = values.get("transaction_id") or None
        if txid is not None:
            txid = text(txid, "transaction_id")
        per_page = _number(values, "per_page", page_size, max_page_size)
        page = _number(values, "page", 1, MAX_OFFSET // per_page + 1)
        return cls(kind, status, txid, page, per_page)

    def query(self, **changes: Any) -> dict[str, Any]:
        """The query string of these filters (with ``changes``), for links; unset ones left out."""
        values = {**dataclasses.asdict(self), **changes}
        return {k: v for k, v in values.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of a list: its trackers and how many match in all."""

    filters: Filters
    trackers: list[TrackerRef]
    count: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.count / self.filters.per_page))

    @property
    def has_previous(self) -> bool:
        return self.filters.page > 1

    @property
    def has_next(self) -> bool:
        f = self.filters
        return f.page < self.pages and f.page * f.per_page <= MAX_OFFSET


def trackers_page(client: Client, f: Filters) -> Page:
    """The trackers the filters select, oldest first: one exact transaction ID is found across
    kinds (dead ones included; with a kind, by the registry's key); otherwise one page of the
    list."""
    if f.transaction_id is not None:
        if f.kind is not None:
            one = client.entry(f.kind, f.transaction_id)
            candidates = [one] if one is not None else []
        else:
            candidates = client.find(f.transaction_id)
        found = [ref for ref in candidates if f.status in (None, ref.status.value)]
        start = (f.page - 1) * f.per_page
        return Page(f, found[start : start + f.per_page], len(found))
    start = (f.page - 1) * f.per_page
    rows = client.select(f.kind, f.status, limit=f.per_page, offset=start)
    return Page(f, rows, client.count(f.kind, f.status))


# -- JSON -----------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def ref_json(ref: TrackerRef) -> dict[str, Any]:
    """A tracker's fields as JSON (times in ISO 8601, by the database clock)."""
    return {
        "kind": ref.kind,
        "transaction_id": ref.transaction_id,
        "status": ref.status.value,
        "epoch": ref.epoch,
        "task_id": ref.task_id,
        "worker": ref.worker,
        "restarts": ref.restarts,
        "started_at": _iso(ref.started_at),
        "heartbeat_at": _iso(ref.heartbeat_at),
        "last_error": ref.last_error,
    }


def event_json(event: Event) -> dict[str, Any]:
    """One event of a tracker's history as JSON."""
    return {
        "id": event.id,
        "at": _iso(event.at),
        "epoch": event.epoch,
        "event": event.event,
        "worker": event.worker,
        "detail": event.detail,
    }


# -- one tracker ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Detail:
    """What the registry knows of one tracker: its entry (None once it has left), its last
    checkpointed state, its recent history, and what ``tracking explain`` says about it."""

    kind: str
    transaction_id: str
    tracker: TrackerRef | None
    state: dict[str, Any] | None
    history: list[Event]
    explanation: str

    def applicable(self) -> list[str]:
        """The actions that apply to the entry as it is (stop: any; restart: a live one; start
        afresh: a dead one)."""
        if self.tracker is None:
            return []
        if self.tracker.status is Status.DEAD:
            return ["stop", "start-afresh"]
        return ["stop", "restart"]

    def json(self) -> dict[str, Any]:
        return {
            "tracker": ref_json(self.tracker) if self.tracker is not None else None,
            "state": self.state,
            "history": [event_json(e) for e in self.history],
            "explain": self.explanation,
        }


def detail(client: Client, kind: str, transaction_id: str, events: int = 20) -> Detail:
    """Everything the detail page and ``GET .../api/tracker`` show about one tracker."""
    tracker = client.entry(kind, transaction_id)
    state = None
    if tracker is not None:
        try:
            state = client.get_state(kind, transaction_id)
        except NotFound:  # it left between the two reads
            tracker = None
    return Detail(
        kind,
        transaction_id,
        tracker,
        state,
        client.history(kind, transaction_id, limit=events),
        explain(client.settings, kind, transaction_id),
    )
