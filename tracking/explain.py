"""``tracking explain``: why is this tracker (not) running, and what happens next.

:func:`explanation` gathers the facts as a JSON-ready dict (``tracking explain --json``);
:func:`explain` renders the same facts as a few lines for an operator.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from tracking import registry
from tracking.models import Entry, Status
from tracking.settings import Settings

#: how many events of each kind's history an explanation shows
HISTORY = 10


def _seconds(now: datetime, then: datetime | None) -> float | None:
    """Seconds from ``then`` to ``now`` (negative: ``then`` is in the future)."""
    return None if then is None else round((now - then).total_seconds(), 3)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


#: what happens next to an entry of each status
_NEXT = {
    Status.PENDING: "waiting for a worker to claim it; published again if nobody does in time",
    Status.RUNNING: "ticking; lost (and restarted) if its worker stops renewing its lease",
    Status.PARKED: "woken for its next tick (or at once for a message or stop); holds no worker slot",
    Status.FAILED: "restart once its backoff is over",
    Status.DEAD: "not restarted (past its restart intensity, or temporary); `start` starts it "
    "afresh, `stop` removes the entry",
}


def explanation(
    settings: Settings, kind: str | None, transaction_id: str, known_kinds: Iterable[str] = ()
) -> dict[str, Any]:
    """The facts about one transaction's tracker: its entries (one per kind), their recent history
    and the supervisor's last sweep. Times are ISO 8601 by the database clock; ``*_ago`` are seconds
    (negative: in the future).

    Without ``kind`` every kind with an entry is shown; when there is none, the history of
    ``known_kinds`` (the imported tracker kinds) is searched, so a finished tracker still says why.
    """
    now = registry.database_now(settings)
    if kind is None:
        rows = registry.entries_of(settings, transaction_id)
    else:
        rows = [r for r in [registry.get(settings, kind, transaction_id)] if r is not None]
    entries = [_entry(settings, now, row) for row in rows]
    if rows:
        kinds = [r.kind for r in rows]
    elif kind is not None:
        kinds = [kind]
    else:
        kinds = sorted(set(known_kinds))
    return {
        "transaction_id": transaction_id,
        "now": _iso(now),
        "registered": bool(entries),
        "entries": entries,
        "history": _history(settings, kinds, transaction_id),
        "supervisor": _supervisor(settings, now),
    }


def _entry(settings: Settings, now: datetime, row: Entry) -> dict[str, Any]:
    """The facts about one registry entry."""
    running = row.status is Status.RUNNING
    return {
        "kind": row.kind,
        "status": row.status.value,
        "epoch": row.epoch,
        "task_id": row.task_id,
        "restarts": row.restarts,
        "worker": row.worker if running else None,
        "lease_renewed_ago": _seconds(now, row.heartbeat_at) if running else None,
        "lease_seconds": settings.lease_seconds,
        "due_at": _iso(row.due_at),
        "due_ago": _seconds(now, row.due_at),
        "stop_requested": row.stop_reason,
        "last_error": row.last_error,
        "next": _NEXT[row.status],
    }


def _history(settings: Settings, kinds: list[str], transaction_id: str) -> list[dict[str, Any]]:
    """The recent events of the transaction's tracker of each of ``kinds``, kind by kind."""
    history: list[dict[str, Any]] = []
    for k in kinds:
        for event in registry.history(settings, k, transaction_id, limit=HISTORY):
            history.append(
                {
                    "kind": k,
                    "at": _iso(event.at),
                    "epoch": event.epoch,
                    "event": event.event,
                    "worker": event.worker,
                    "detail": event.detail,
                }
            )
    return history


def _supervisor(settings: Settings, now: datetime) -> dict[str, Any]:
    """When a supervisor last swept, and whether that is recent enough."""
    latest = max((s.last_sweep_at for s in registry.last_sweeps(settings)), default=None)
    sweep_ago = _seconds(now, latest)
    return {
        "last_sweep_at": _iso(latest),
        "last_sweep_ago": sweep_ago,
        "sweep_seconds": settings.sweep_seconds,
        "healthy": sweep_ago is not None and sweep_ago <= 3 * settings.sweep_seconds,
    }


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return f"{seconds:.1f} s ago" if seconds >= 0 else f"in {-seconds:.1f} s"


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else ""


def render(facts: dict[str, Any]) -> str:
    """The lines ``tracking explain`` prints for an :func:`explanation`."""
    txid = facts["transaction_id"]
    lines: list[str] = []
    for entry in facts["entries"]:
        lines += _entry_lines(txid, entry)
    if not facts["entries"]:
        lines.append(f"{txid!r}: not registered (never started, finished, or stopped)")
    lines += _history_lines(txid, facts["history"])
    supervisor = facts["supervisor"]
    if not supervisor["healthy"]:
        lines.append(
            f"warning: no supervisor has swept since {_ago(supervisor['last_sweep_ago'])}: "
            "is beat (or a worker) running?"
        )
    else:
        lines.append(f"last supervisor sweep {_ago(supervisor['last_sweep_ago'])}")
    return "\n".join(lines)


def _entry_lines(txid: str, entry: dict[str, Any]) -> list[str]:
    """An entry's status, what happens to it next, and its last error."""
    lines = [
        f"{entry['kind']} {txid!r}: {entry['status']} (epoch {entry['epoch']}, "
        f"task {entry['task_id']}, restarts {entry['restarts']})"
    ]
    status = entry["status"]
    due = entry["due_ago"]
    if status == Status.PENDING and due is not None and due > 0:
        lines.append(
            f"  next: waiting for a worker to claim it; overdue by {due:.1f} s, so the next "
            "supervisor sweep publishes it again"
        )
    elif status == Status.PENDING:
        lines.append(f"  next: waiting for a worker to claim it; published again {_ago(due)} if nobody does")
    elif status == Status.RUNNING:
        lines.append(
            f"  running on {entry['worker']}, lease renewed {_ago(entry['lease_renewed_ago'])} "
            f"(lost after {entry['lease_seconds']:g} s without renewal)"
        )
        if entry["stop_requested"]:
            lines.append(f"  stop requested: {entry['stop_requested']!r}")
    elif status == Status.PARKED and due is not None and due > 0:
        lines.append(
            f"  parked (no worker slot held); due {_ago(due)}: a worker's waker publishes it (a "
            "supervisor sweep does once it is due for a lease period)"
        )
    elif status == Status.PARKED:
        lines.append(f"  parked (no worker slot held); next tick {_ago(due)}")
    elif status == Status.FAILED and due is not None and due > 0:
        lines.append(
            f"  next: restart overdue by {due:.1f} s: a worker's waker restarts it (a supervisor "
            "sweep does once it is due for a lease period)"
        )
    elif status == Status.FAILED:
        lines.append(f"  next: restart {_ago(due)} (backoff)")
    else:
        lines.append(f"  {status}: {entry['next']}")
    if entry["last_error"]:
        lines.append(f"  last error: {_last_line(entry['last_error'])}")
    return lines


def _history_lines(txid: str, history: list[dict[str, Any]]) -> list[str]:
    """The events, under a heading for each kind."""
    lines: list[str] = []
    shown: str | None = None
    for event in history:
        if event["kind"] != shown:
            shown = event["kind"]
            lines.append(f"  history of {shown} {txid!r} (newest last):")
        at = datetime.fromisoformat(event["at"]) if event["at"] else None
        lines.append(
            f"    {at:%Y-%m-%d %H:%M:%S} epoch {event['epoch']:<3} {event['event']:<12} "
            f"{event['worker'] or ''} {_last_line(event['detail'])}".rstrip()
        )
    return lines


def explain(
    settings: Settings, kind: str | None, transaction_id: str, known_kinds: Iterable[str] = ()
) -> str:
    """A few lines for an operator: the entry, what happens next, and its recent history."""
    return render(explanation(settings, kind, transaction_id, known_kinds))
