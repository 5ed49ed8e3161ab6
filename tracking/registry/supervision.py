"""What a supervisor sweep reads and writes, besides the leases: orphans restarted, unclaimed
entries published again, parked and failed entries woken, history pruned, the sweeps' log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from tracking.models import (
    Entry,
    MessageStatus,
    Status,
    Sweep,
    events,
    messages,
    supervisors,
    token_floor,
    trackers,
)
from tracking.policy import Decision
from tracking.registry.core import _read, _write, db_now, greatest
from tracking.registry.exits import apply_exits
from tracking.registry.rows import _entries, _entries_by_id, _events, _insert, _now, _tracker_with_lease
from tracking.registry.transitions import (
    Op,
    guard,
    orphan_owners,
    plan_exit,
    republish_grace,
)
from tracking.settings import Settings


def restart_orphans(settings: Settings, limit: int = 1000) -> list[tuple[Entry, Decision, Entry | None]]:
    """Apply the restart policy to running entries whose worker process has no live lease (lost,
    stopped, or its row missing): an exit of cause "worker lost", restarted at once.

    Returns each entry as it was, its decision and its new row (a restart to publish). A winning
    stop requested before the loss is honoured: deregistered. Atomicity: one transaction for the
    whole batch, a few statements whatever its size; on PostgreSQL the entries are locked with
    SKIP LOCKED, so two supervisors split them and each is restarted exactly once.
    """
    with _write(settings) as conn:
        owners = list(conn.execute(orphan_owners()).scalars())
        if not owners:
            return []
        stmt = (
            _tracker_with_lease.where(trackers.c.worker_id.in_(owners), *guard(Op.RESCUE))
            .order_by(trackers.c.id)
            .limit(limit)
            .with_for_update(of=trackers, skip_locked=True)
        )
        rows = _entries(conn, stmt)
        if not rows:
            return []
        now = _now(conn)
        plans = [
            plan_exit(row, now, "worker_lost", f"worker {row.worker} has no live lease", lost=True)
            for row in rows
        ]
        written = apply_exits(settings, conn, plans)
        return [(p.row, p.decision, new) for p, new in zip(plans, written, strict=True)]


def take_due(settings: Settings, limit: int = 1000) -> list[Entry]:
    """Pending entries nobody claimed in time, published again under the same epoch: returns
    them to publish. Each wait doubles (``transitions.republish_grace``), and only the first is
    recorded as an event, so an entry that no worker takes costs a bounded trickle.

    Atomicity: one transaction for the batch; each entry is locked (SKIP LOCKED on PostgreSQL) and
    updated only while still due, so of two supervisors only one publishes it.
    """
    stmt = (
        sa.select(trackers.c.id, trackers.c.republished)
        .where(*guard(Op.REPUBLISH))
        .order_by(trackers.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with _write(settings) as conn:
        had = {r.id: r.republished for r in conn.execute(stmt)}
        if not had:
            return []
        for step in sorted(set(had.values())):
            conn.execute(
                trackers.update()
                .where(trackers.c.id.in_([i for i, n in had.items() if n == step]), *guard(Op.REPUBLISH))
                .values(republished=step + 1, due_at=db_now(republish_grace(settings, step + 1)))
            )
        rows = _entries_by_id(conn, list(had))
        _events(conn, [(r, "republished", None) for r in _not_yet_republished(conn, rows)])
        return rows


def _not_yet_republished(conn: sa.Connection, rows: list[Entry]) -> list[Entry]:
    """The rows whose incarnation has no "republished" event yet: one per epoch, however many
    times the broker was down meanwhile (a failed publish starts the waits again, not the history)."""
    keys = [(r.kind, r.transaction_id, r.epoch) for r in rows]
    recorded = {
        tuple(r)
        for r in conn.execute(
            sa.select(events.c.kind, events.c.transaction_id, events.c.epoch).where(
                events.c.event == "republished",
                sa.tuple_(events.c.kind, events.c.transaction_id, events.c.epoch).in_(keys),
            )
        )
    }
    return [r for r, key in zip(rows, keys, strict=True) if key not in recorded]


def not_published(settings: Settings, rows: Sequence[Entry]) -> None:
    """Pending entries whose message could not be published (the broker is down): due again after
    one start grace, their republish count back to zero, since no copy of them waits anywhere."""
    if not rows:
        return
    with _write(settings) as conn:
        conn.execute(
            trackers.update()
            .where(trackers.c.id == sa.bindparam("b_id"), trackers.c.epoch == sa.bindparam("b_epoch"))
            .where(trackers.c.status == Status.PENDING.value)
            .values(republished=0, due_at=db_now(settings.start_grace_seconds)),
            [{"b_id": r.id, "b_epoch": r.epoch} for r in rows],
        )


def prune(settings: Settings, limit: int = 1000) -> int:
    """Delete history older than ``events_retention_seconds``: events, and answered calls whose
    caller never collected the reply; at most ``limit`` of each (the sweep runs often). Returns
    how many rows went.

    The highest epoch among the pruned events is kept in ``tracking_token_floor`` first, in the
    same transaction, so that a transaction ID registered again after its history is gone still
    gets a larger token. Atomicity: one transaction; two concurrent prunes may delete the same
    rows, which is harmless.
    """
    cutoff = db_now(-settings.events_retention_seconds)
    oldest = sa.select(events.c.id, events.c.epoch).where(events.c.at < cutoff).order_by(events.c.id)
    batch = oldest.limit(limit).subquery()
    with _write(settings) as conn:
        top_id, top_epoch = conn.execute(sa.select(sa.func.max(batch.c.id), sa.func.max(batch.c.epoch))).one()
        pruned = 0
        if top_id is not None:
            raise_floor = _insert(conn)(token_floor).values(id=1, epoch=top_epoch)
            conn.execute(
                raise_floor.on_conflict_do_update(
                    index_elements=[token_floor.c.id],
                    set_={"epoch": greatest(token_floor.c.epoch, raise_floor.excluded.epoch)},
                )
            )
            pruned += conn.execute(
                events.delete().where(events.c.id <= top_id, events.c.at < cutoff)
            ).rowcount
        answered = (
            sa.select(messages.c.id)
            .where(messages.c.status != MessageStatus.QUEUED.value, messages.c.created_at < cutoff)
            .limit(limit)
            .scalar_subquery()
        )
        pruned += conn.execute(messages.delete().where(messages.c.id.in_(answered))).rowcount
        return pruned


def record_sweep(settings: Settings, name: str, counts: dict[str, int]) -> None:
    with _write(settings) as conn:
        stmt = _insert(conn)(supervisors).values(name=name, last_sweep_at=db_now(), last_counts=counts)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[supervisors.c.name],
                set_={"last_sweep_at": db_now(), "last_counts": counts},
            )
        )
        # Supervisors are named per process; forget the ones that have not swept for a day.
        conn.execute(supervisors.delete().where(supervisors.c.last_sweep_at < db_now(-86400)))


def last_sweeps(settings: Settings) -> list[Sweep]:
    """Every supervisor's last sweep (those of the last day), by name."""
    stmt = sa.select(supervisors).order_by(supervisors.c.name)
    return _read(settings, lambda conn: [Sweep.from_mapping(m) for m in conn.execute(stmt).mappings()])


def database_now(settings: Settings) -> datetime:
    return _read(settings, _now)
