"""Tokens that never go back, and bounded history.

``tracking_token_floor`` holds the highest epoch whose last trace was pruned from the events, so a
transaction ID registered again after its history is gone still gets a larger token.
``republished`` counts how often the sweep published a pending incarnation again: its grace doubles
each time (up to a cap), and only the first is recorded as an event.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _batch() -> dict[str, object]:
    # SQLite cannot drop a column in place: batch mode rebuilds the table, and must rebuild it
    # AUTOINCREMENT (as 0002 made it), or IDs could be reused after a delete.
    if op.get_bind().dialect.name == "sqlite":
        return {"recreate": "always", "table_kwargs": {"sqlite_autoincrement": True}}
    return {}


def upgrade() -> None:
    op.create_table(
        "tracking_token_floor",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_token_floor")),
    )
    with op.batch_alter_table("tracking_trackers") as batch:
        batch.add_column(sa.Column("republished", sa.Integer, nullable=False, server_default="0"))
    op.create_index(op.f("ix_tracking_events_at"), "tracking_events", ["at"])
    op.create_index(op.f("ix_tracking_messages_status"), "tracking_messages", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_tracking_messages_status"), table_name="tracking_messages")
    op.drop_index(op.f("ix_tracking_events_at"), table_name="tracking_events")
    with op.batch_alter_table("tracking_trackers", **_batch()) as batch:
        batch.drop_column("republished")
    op.drop_table("tracking_token_floor")
