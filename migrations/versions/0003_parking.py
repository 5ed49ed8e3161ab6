"""Parking: the ``parked`` status and each tracker's next tick time (``tick_at``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STATUSES = "'pending', 'running', 'parked', 'failed', 'dead'"
OLD_STATUSES = "'pending', 'running', 'failed', 'dead'"


def _batch() -> dict[str, object]:
    # SQLite cannot alter a CHECK constraint: batch mode rebuilds the table (keeping AUTOINCREMENT).
    if op.get_bind().dialect.name == "sqlite":
        return {"recreate": "always", "table_kwargs": {"sqlite_autoincrement": True}}
    return {}


def _status_check(statuses: str) -> None:
    with op.batch_alter_table("tracking_trackers", **_batch()) as batch:
        batch.drop_constraint(op.f("ck_tracking_trackers_status"), type_="check")
        batch.create_check_constraint(op.f("ck_tracking_trackers_status"), f"status IN ({statuses})")


def upgrade() -> None:
    with op.batch_alter_table("tracking_trackers") as batch:
        batch.add_column(sa.Column("tick_at", sa.DateTime(timezone=True), nullable=True))
    _status_check(STATUSES)


def downgrade() -> None:
    # Parked trackers go back to pending: the supervisor publishes them after the start grace.
    op.execute("UPDATE tracking_trackers SET status = 'pending' WHERE status = 'parked'")
    _status_check(OLD_STATUSES)
    with op.batch_alter_table("tracking_trackers", **_batch()) as batch:
        batch.drop_column("tick_at")
