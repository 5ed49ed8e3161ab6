"""Worker IDs and supervisor names long enough for any hostname: 300 characters (from 64 and 255).

A worker ID is ``f"{hostname}/{pid}/{12 hex}"`` (``WorkerRuntime._register``), where the hostname
is the Celery node name. At 64 characters, ``tracking_workers.id`` and
``tracking_trackers.worker_id`` refused the ID of a worker with an ordinary long name (a default
node name on EC2, ``celery@ip-172-31-22-101.eu-central-1.compute.internal``, gives about 70), so
on PostgreSQL such a worker could never register its lease nor run a tracker (SQLite does not
enforce lengths, which hid it).

The hostname columns (``tracking_workers.hostname``, ``tracking_trackers.worker``,
``tracking_events.worker``) stay at 255, the longest hostname (DNS, and what Celery documents).
The worker-ID columns hold such a hostname plus the suffix the runtime adds: ``/`` + a PID (at
most 10 digits: a 32-bit PID; Linux stays below 2**22, 7 digits) + ``/`` + 12 hex digits, at most
279 characters; 300 leaves room, rather than cutting the hostname out of the ID (the ID must stay
unique and readable as "which host, which process"). A supervisor's default name is
``f"{hostname}/{pid}"`` (``tracking.supervisor.sweep``): ``tracking_supervisors.name`` gets the same
300.

On PostgreSQL widening a ``varchar`` is a catalog change: no table rewrite, no index rebuild, even
for the primary key ``tracking_workers.id``. On SQLite batch mode rebuilds each table (SQLite
cannot alter a column's type), with ``tracking_trackers`` kept AUTOINCREMENT as since 0002.

Downgrade: values that no longer fit are dealt with first where the database enforces lengths
(PostgreSQL): leases with a longer ID are deleted (the entries they hold then run under a worker
with no lease row: fenced, and rescued by the next sweep), the trackers' references to them are
cut to 64 characters (still naming no live lease), and longer supervisor names are forgotten (a
supervisor writes its row again on its next sweep).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

WORKER_ID = 300
OLD_WORKER_ID = 64
SUPERVISOR_NAME = 300
OLD_SUPERVISOR_NAME = 255


def _batch(autoincrement: bool = False) -> dict[str, object]:
    # SQLite cannot alter a column's type: batch mode rebuilds the table. A table that is
    # AUTOINCREMENT (tracking_trackers, since 0002) must be rebuilt so, or IDs could be reused.
    if op.get_bind().dialect.name == "sqlite":
        kwargs: dict[str, object] = {"recreate": "always"}
        if autoincrement:
            kwargs["table_kwargs"] = {"sqlite_autoincrement": True}
        return kwargs
    return {}


def _resize(worker_id: int, old_worker_id: int, supervisor_name: int, old_supervisor_name: int) -> None:
    with op.batch_alter_table("tracking_trackers", **_batch(autoincrement=True)) as batch:
        batch.alter_column(
            "worker_id",
            type_=sa.String(worker_id),
            existing_type=sa.String(old_worker_id),
            existing_nullable=True,
        )
    with op.batch_alter_table("tracking_workers", **_batch()) as batch:
        batch.alter_column(
            "id", type_=sa.String(worker_id), existing_type=sa.String(old_worker_id), existing_nullable=False
        )
    with op.batch_alter_table("tracking_supervisors", **_batch()) as batch:
        batch.alter_column(
            "name",
            type_=sa.String(supervisor_name),
            existing_type=sa.String(old_supervisor_name),
            existing_nullable=False,
        )


def upgrade() -> None:
    _resize(WORKER_ID, OLD_WORKER_ID, SUPERVISOR_NAME, OLD_SUPERVISOR_NAME)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":  # SQLite does not enforce lengths: nothing to cut
        op.execute("DELETE FROM tracking_workers WHERE length(id) > 64")
        op.execute(
            "UPDATE tracking_trackers SET worker_id = substr(worker_id, 1, 64) WHERE length(worker_id) > 64"
        )
        op.execute("DELETE FROM tracking_supervisors WHERE length(name) > 255")
    _resize(OLD_WORKER_ID, WORKER_ID, OLD_SUPERVISOR_NAME, SUPERVISOR_NAME)
