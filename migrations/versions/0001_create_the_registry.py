"""Create the registry: trackers, worker leases, events, supervisors.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the column types as they were at this revision.
Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tracking_trackers",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(255), nullable=False),
        sa.Column("transaction_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("worker_id", sa.String(64), nullable=True),
        sa.Column("args", Json, nullable=False),
        sa.Column("state", Json, nullable=True),
        sa.Column("policy", Json, nullable=False),
        sa.Column("restarts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("restart_times", Json, nullable=False),
        sa.Column("backoff_step", sa.Integer(), server_default="0", nullable=False),
        sa.Column("stop_reason", sa.String(255), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("claimed_at", Timestamp, nullable=True),
        sa.Column("checkpoint_at", Timestamp, nullable=True),
        sa.Column("due_at", Timestamp, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'failed', 'dead')",
            name=op.f("ck_tracking_trackers_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_trackers")),
        sa.UniqueConstraint("kind", "transaction_id", name=op.f("uq_tracking_trackers_kind")),
    )
    op.create_index(op.f("ix_tracking_trackers_status"), "tracking_trackers", ["status", "due_at"])
    op.create_index(op.f("ix_tracking_trackers_worker_id"), "tracking_trackers", ["worker_id"])

    op.create_table(
        "tracking_workers",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("heartbeat_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_workers")),
    )
    op.create_index(op.f("ix_tracking_workers_status"), "tracking_workers", ["status", "heartbeat_at"])

    op.create_table(
        "tracking_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(255), nullable=False),
        sa.Column("transaction_id", sa.String(255), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_events")),
    )
    op.create_index(op.f("ix_tracking_events_kind"), "tracking_events", ["kind", "transaction_id", "id"])

    op.create_table(
        "tracking_supervisors",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("last_sweep_at", Timestamp, nullable=False),
        sa.Column("last_counts", Json, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_tracking_supervisors")),
    )


def downgrade() -> None:
    op.drop_table("tracking_supervisors")
    op.drop_index(op.f("ix_tracking_events_kind"), table_name="tracking_events")
    op.drop_table("tracking_events")
    op.drop_index(op.f("ix_tracking_workers_status"), table_name="tracking_workers")
    op.drop_table("tracking_workers")
    op.drop_index(op.f("ix_tracking_trackers_worker_id"), table_name="tracking_trackers")
    op.drop_index(op.f("ix_tracking_trackers_status"), table_name="tracking_trackers")
    op.drop_table("tracking_trackers")
