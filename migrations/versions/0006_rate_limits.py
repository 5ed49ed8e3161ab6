"""Rate limits shared by every worker: one token bucket per kind.

``tracking_limits`` holds, per kind, the tokens left in its bucket and when it was last refilled
(by the database clock); ``tracking.registry.limits.take`` refills and takes in one transaction
that holds the row's lock, so every worker process of every host draws from the same bucket. The
rate and burst each take used are stored with it, for operators: the code passes its own.

A new table only: nothing to migrate, and a downgrade forgets the buckets (the next take after an
upgrade starts each one full).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tracking_limits",
        sa.Column("kind", sa.String(255), nullable=False),
        sa.Column("tokens", sa.Double, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rate", sa.Double, nullable=False),
        sa.Column("burst", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("kind", name=op.f("pk_tracking_limits")),
    )


def downgrade() -> None:
    op.drop_table("tracking_limits")
