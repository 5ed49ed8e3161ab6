"""Worker leases, and what a supervisor sweep reads and writes: lost workers, orphans, due and
parked entries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from tracking.models import supervisors, trackers, workers
from tracking.policy import Action, Decision
from tracking.registry.core import (
    Row,
    _aware,
    _events,
    _insert,
    _now,
    _one,
    _read,
    _rows,
    _rows_by_id,
    _tracker_with_lease,
    _translated,
    _write,
    db_now,
    lease_engine,
    new_task_id,
)
from tracking.registry.incarnations import Exit, apply_exits, plan_exit
from tracking.settings import Settings

# -- worker leases --------------------------------------------------------------------------------


def register_worker(settings: Settings, worker_id: str, hostname: str, pid: int) -> None:
    """Record a worker process start: the lease all its trackers share."""
    with _write(settings) as conn:
        conn.execute(
            workers.insert().values(
                id=worker_id,
                hostname=hostname,
                pid=pid,
                status="alive",
                started_at=db_now(),
                heartbeat_at=db_now(),
            )
        )


def renew_worker(settings: Settings, worker_id: str) -> bool:
    """Renew a worker process's lease; False if a supervisor already declared it lost.

    Atomicity: one conditional update; a supervisor's "lost" update on the same row is serialized
    with it, so either the renewal lands first (and the worker is not lost) or it fails.
    """
    with _translated(settings), lease_engine(settings).begin() as conn:
        result = conn.execute(
            workers.update()
            .where(workers.c.id == worker_id, workers.c.status == "alive")
            .values(heartbeat_at=db_now())
        )
        return result.rowcount == 1


def retire_worker(settings: Settings, worker_id: str) -> None:
    """A worker process that exits cleanly gives up its lease."""
    with _write(settings) as conn:
        conn.execute(
            workers.update()
            .where(workers.c.id == worker_id, workers.c.status == "alive")
            .values(status="stopped")
        )


def held(settings: Settings, worker_id: str, claimed_before: float) -> list[tuple[int, int]]:
    """``(row id, epoch)`` of the running entries a worker process holds, claimed more than
    ``claimed_before`` seconds ago (the process compares them with the incarnations it runs)."""
    stmt = sa.select(trackers.c.id, trackers.c.epoch).where(
        trackers.c.worker_id == worker_id,
        trackers.c.status == "running",
        trackers.c.claimed_at < db_now(-claimed_before),
    )
    return _read(settings, lambda conn: [(r.id, r.epoch) for r in conn.execute(stmt)])


# -- supervision ----------------------------------------------------------------------------------


def mark_lost_workers(settings: Settings) -> tuple[int, list[str]]:
    """Declare lost every worker process whose lease expired by the database clock.

    Returns how many were declared lost now, and the IDs of all lost or stopped worker rows (whose
    running entries are orphans).
    """
    expired = (workers.c.status == "alive", workers.c.heartbeat_at < db_now(-settings.lease_seconds))
    with _write(settings) as conn:
        newly = conn.execute(workers.update().where(*expired).values(status="lost")).rowcount
        ids = conn.execute(sa.select(workers.c.id).where(workers.c.status.in_(["lost", "stopped"])))
        return newly, [r.id for r in ids]


def forget_workers(settings: Settings, worker_ids: Sequence[str]) -> None:
    """Delete lost or stopped worker rows that no longer own a running entry."""
    if not worker_ids:
        return
    owning = sa.select(trackers.c.id).where(
        trackers.c.worker_id == workers.c.id, trackers.c.status == "running"
    )
    with _write(settings) as conn:
        conn.execute(
            workers.delete().where(
                workers.c.id.in_(list(worker_ids)),
                workers.c.status != "alive",
                ~sa.exists(owning),
            )
        )


def restart_orphans(
    settings: Settings, worker_ids: Sequence[str], limit: int = 1000
) -> list[tuple[Decision, Row | None]]:
    """Apply the restart policy to the running entries of lost or stopped worker processes.

    Returns each entry's decision and new row (a restart to publish). A stop with reason normal or
    shutdown requested before the loss is honoured: deregistered. Atomicity: one transaction for
    the whole batch, a few statements whatever its size; on PostgreSQL the entries are locked with
    SKIP LOCKED, so two supervisors split them and each is restarted exactly once.
    """
    if not worker_ids:
        return []
    stmt = (
        _tracker_with_lease.where(trackers.c.status == "running", trackers.c.worker_id.in_(list(worker_ids)))
        .order_by(trackers.c.id)
        .limit(limit)
        .with_for_update(of=trackers, skip_locked=True)
    )
    with _write(settings) as conn:
        rows = _rows(conn, stmt)
        if not rows:
            return []
        now = _now(conn)
        plans: list[Exit] = []
        for row in rows:
            if row["stop_reason"] in ("normal", "shutdown"):
                why = f"stop({row['stop_reason']!r}); its worker was lost"
                plans.append(Exit(row, Decision(Action.DEREGISTER), (("stopped", why),), row["last_error"]))
            else:
                why = f"worker {row['worker']} stopped renewing its lease"
                plans.append(plan_exit(settings, row, now, "worker_lost", why, normal=False))
        return list(zip((p.decision for p in plans), apply_exits(settings, conn, plans), strict=True))


def take_due(settings: Settings, limit: int = 1000) -> list[tuple[str, Row]]:
    """Pending entries nobody claimed in time, and failed entries whose backoff is over, made
    pending with a fresh grace period; returns ``(status they had, new row)`` to publish.

    Atomicity: one transaction for the batch; each entry is locked (SKIP LOCKED on PostgreSQL) and
    updated only while still due, so of two supervisors only one publishes it.
    """
    stmt = (
        sa.select(trackers.c.id, trackers.c.status)
        .where(trackers.c.status.in_(["pending", "failed"]), trackers.c.due_at <= db_now())
        .order_by(trackers.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with _write(settings) as conn:
        had = {r.id: r.status for r in conn.execute(stmt)}
        if not had:
            return []
        conn.execute(
            trackers.update()
            .where(trackers.c.id.in_(list(had)), trackers.c.status.in_(["pending", "failed"]))
            .values(status="pending", due_at=db_now(settings.start_grace_seconds))
        )
        rows = _rows_by_id(conn, list(had))
        _events(conn, [(r, "republished" if had[r["id"]] == "pending" else "restarting", None) for r in rows])
        return [(had[r["id"]], r) for r in rows]


def restart_now(settings: Settings, row_id: int, epoch: int) -> Row | None:
    """Turn a failed entry pending at once (its backoff timer fired); None if it moved on."""
    with _write(settings) as conn:
        result = conn.execute(
            trackers.update()
            .where(trackers.c.id == row_id, trackers.c.epoch == epoch, trackers.c.status == "failed")
            .values(status="pending", due_at=db_now(settings.start_grace_seconds))
        )
        if result.rowcount != 1:
            return None
        return _one(conn, trackers.c.id == row_id)


def next_wake(settings: Settings) -> float | None:
    """Seconds until the earliest parked entry is due (negative: overdue); None if none is parked."""
    soonest = sa.select(sa.func.min(trackers.c.due_at)).where(trackers.c.status == "parked")

    def query(conn: sa.Connection) -> float | None:
        row = conn.execute(sa.select(soonest.scalar_subquery(), db_now())).one()
        due, now = _aware(row[0]), _aware(row[1])
        return None if due is None or now is None else (due - now).total_seconds()

    return _read(settings, query)


def wake_parked(settings: Settings, limit: int = 500) -> list[Row]:
    """Make due parked entries pending, each under a new epoch and task ID; returns them to publish.

    No event is recorded (a parked tracker wakes at every tick). Atomicity: one transaction; on
    PostgreSQL the due rows are locked with SKIP LOCKED, so concurrent wakers split the work, and
    every update is conditional on the epoch, so no entry is woken twice.
    """
    stmt = (
        sa.select(trackers.c.id, trackers.c.epoch)
        .where(trackers.c.status == "parked", trackers.c.due_at <= db_now())
        .order_by(trackers.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with _write(settings) as conn:
        due_rows = conn.execute(stmt).all()
        if not due_rows:
            return []
        values = {
            "status": "pending",
            "epoch": trackers.c.epoch + 1,
            "task_id": sa.bindparam("b_task"),
            "due_at": db_now(settings.start_grace_seconds),
        }
        conn.execute(
            trackers.update()
            .where(trackers.c.id == sa.bindparam("b_id"), trackers.c.epoch == sa.bindparam("b_epoch"))
            .where(trackers.c.status == "parked")
            .values(values),
            [{"b_id": r.id, "b_epoch": r.epoch, "b_task": new_task_id()} for r in due_rows],
        )
        woken = sa.select(trackers.c.kind, trackers.c.transaction_id, trackers.c.epoch, trackers.c.task_id)
        ids = [r.id for r in due_rows]
        return _rows(conn, woken.where(trackers.c.id.in_(ids), trackers.c.status == "pending"))


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


def last_sweeps(settings: Settings) -> list[Row]:
    rows = _read(settings, lambda conn: _rows(conn, sa.select(supervisors).order_by(supervisors.c.name)))
    for row in rows:
        row["last_sweep_at"] = _aware(row["last_sweep_at"])
    return rows


def database_now(settings: Settings) -> datetime:
    return _read(settings, _now)
