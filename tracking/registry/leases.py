"""Worker leases: one row per worker process, shared by all its trackers. The process renews it on
a connection of its own; a sweep declares it lost once it has expired by the database clock, and
the process's running entries become orphans (restarted by
:func:`tracking.registry.supervision.restart_orphans`)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from tracking.models import Status, WorkerInfo, WorkerStatus, aware, trackers, workers
from tracking.registry.core import _read, _translated, _write, db_now, lease_engine
from tracking.settings import Settings

# -- a worker process's own lease -----------------------------------------------------------------


def register_worker(settings: Settings, worker_id: str, hostname: str, pid: int) -> None:
    """Record a worker process start: the lease all its trackers share."""
    with _write(settings) as conn:
        conn.execute(
            workers.insert().values(
                id=worker_id,
                hostname=hostname,
                pid=pid,
                status=WorkerStatus.ALIVE.value,
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
            .where(workers.c.id == worker_id, workers.c.status == WorkerStatus.ALIVE.value)
            .values(heartbeat_at=db_now())
        )
        return result.rowcount == 1


def retire_worker(settings: Settings, worker_id: str) -> None:
    """A worker process that exits cleanly gives up its lease."""
    with _write(settings) as conn:
        conn.execute(
            workers.update()
            .where(workers.c.id == worker_id, workers.c.status == WorkerStatus.ALIVE.value)
            .values(status=WorkerStatus.STOPPED.value)
        )


def held(settings: Settings, worker_id: str, claimed_before: float) -> list[tuple[int, int]]:
    """``(row id, epoch)`` of the running entries a worker process holds, claimed more than
    ``claimed_before`` seconds ago (the process compares them with the incarnations it runs)."""
    stmt = sa.select(trackers.c.id, trackers.c.epoch).where(
        trackers.c.worker_id == worker_id,
        trackers.c.status == Status.RUNNING.value,
        trackers.c.claimed_at < db_now(-claimed_before),
    )
    return _read(settings, lambda conn: [(r.id, r.epoch) for r in conn.execute(stmt)])


# -- what a sweep does with expired leases --------------------------------------------------------


def mark_lost_workers(settings: Settings) -> tuple[int, list[str]]:
    """Declare lost every worker process whose lease expired by the database clock.

    Returns how many were declared lost now, and the IDs of all lost or stopped worker rows (whose
    running entries are orphans).
    """
    expired = (
        workers.c.status == WorkerStatus.ALIVE.value,
        workers.c.heartbeat_at < db_now(-settings.lease_seconds),
    )
    gone = [WorkerStatus.LOST.value, WorkerStatus.STOPPED.value]
    with _write(settings) as conn:
        newly = conn.execute(workers.update().where(*expired).values(status=WorkerStatus.LOST.value)).rowcount
        ids = conn.execute(sa.select(workers.c.id).where(workers.c.status.in_(gone)))
        return newly, [r.id for r in ids]


def forget_workers(settings: Settings, worker_ids: Sequence[str]) -> None:
    """Delete lost or stopped worker rows that no longer own a running entry."""
    if not worker_ids:
        return
    owning = sa.select(trackers.c.id).where(
        trackers.c.worker_id == workers.c.id, trackers.c.status == Status.RUNNING.value
    )
    with _write(settings) as conn:
        conn.execute(
            workers.delete().where(
                workers.c.id.in_(list(worker_ids)),
                workers.c.status != WorkerStatus.ALIVE.value,
                ~sa.exists(owning),
            )
        )


def worker_list(settings: Settings) -> list[WorkerInfo]:
    """The worker processes with a row (alive, or lost or stopped and not yet forgotten), newest
    first, with their lease age by the database clock and the entries each runs."""
    running = (
        sa.select(sa.func.count())
        .where(trackers.c.worker_id == workers.c.id, trackers.c.status == Status.RUNNING.value)
        .scalar_subquery()
    )
    stmt = sa.select(workers, running.label("running")).order_by(workers.c.started_at.desc())

    def query(conn: sa.Connection) -> list[WorkerInfo]:
        now = aware(conn.execute(sa.select(db_now())).scalar_one())
        assert now is not None
        return [WorkerInfo.from_mapping(m, now) for m in conn.execute(stmt).mappings()]

    return _read(settings, query)
