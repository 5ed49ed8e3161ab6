"""``tracking explain``: why is this tracker (not) running, and what happens next."""

from __future__ import annotations

from datetime import datetime

from tracking import registry
from tracking.settings import Settings


def _ago(now: datetime, then: datetime | None) -> str:
    if then is None:
        return "never"
    seconds = (now - then).total_seconds()
    return f"{seconds:.1f} s ago" if seconds >= 0 else f"in {-seconds:.1f} s"


def explain(settings: Settings, kind: str | None, transaction_id: str) -> str:
    """A few lines for an operator: the entry, what happens next, and its recent history."""
    now = registry.database_now(settings)
    rows = (
        [r for r in registry.select(settings, kind) if r["transaction_id"] == transaction_id]
        if kind is None
        else [r for r in [registry.get(settings, kind, transaction_id)] if r is not None]
    )
    lines: list[str] = []
    kinds = [r["kind"] for r in rows] or ([kind] if kind else [])
    for row in rows:
        lines.append(
            f"{row['kind']} {transaction_id!r}: {row['status']} (epoch {row['epoch']}, "
            f"task {row['task_id']}, restarts {row['restarts']})"
        )
        status = row["status"]
        if status == "pending":
            lines.append(
                f"  next: waiting for a worker to claim it; published again {_ago(now, row['due_at'])} "
                "if nobody does"
            )
        elif status == "running":
            lines.append(
                f"  running on {row['worker']}, lease renewed {_ago(now, row['heartbeat_at'])} "
                f"(lost after {settings.lease_seconds:g} s without renewal)"
            )
            if row["stop_reason"]:
                lines.append(f"  stop requested: {row['stop_reason']!r}")
        elif status == "failed":
            lines.append(f"  next: restart {_ago(now, row['due_at'])} (backoff)")
        else:
            lines.append(
                "  dead: past its restart intensity, or temporary; `start` starts it afresh, "
                "`stop` removes the entry"
            )
        if row["last_error"]:
            lines.append(f"  last error: {row['last_error'].strip().splitlines()[-1]}")
    if not rows:
        lines.append(f"{transaction_id!r}: not registered (never started, finished, or stopped)")
    for k in kinds:
        events = registry.history(settings, k, transaction_id, limit=10)
        if events:
            lines.append(f"  history of {k} {transaction_id!r} (newest last):")
        for event in events:
            detail = (event["detail"] or "").strip().splitlines()
            lines.append(
                f"    {event['at']:%Y-%m-%d %H:%M:%S} epoch {event['epoch']:<3} {event['event']:<12} "
                f"{event['worker'] or ''} {detail[-1] if detail else ''}".rstrip()
            )
    sweeps = registry.last_sweeps(settings)
    latest = max((s["last_sweep_at"] for s in sweeps), default=None)
    if latest is None or (now - latest).total_seconds() > 3 * settings.sweep_seconds:
        lines.append(
            f"warning: no supervisor has swept since {_ago(now, latest)}: is beat (or a worker) running?"
        )
    else:
        lines.append(f"last supervisor sweep {_ago(now, latest)}")
    return "\n".join(lines)
