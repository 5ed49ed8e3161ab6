"""Mailboxes: tracking_messages, and each tracker's last queued and handled message; on SQLite,
IDs that are never reused (AUTOINCREMENT), as on PostgreSQL.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def _autoincrement_on_sqlite() -> dict[str, object]:
    # SQLite reuses the highest rowid after a delete unless the table is AUTOINCREMENT; batch mode
    # rebuilds the table to change that. PostgreSQL sequences never reuse an ID.
    if op.get_bind().dialect.name == "sqlite":
        return {"recreate": "always", "table_kwargs": {"sqlite_autoincrement": True}}
    return {}


def upgrade() -> None:
    with op.batch_alter_table("tracking_trackers", **_autoincrement_on_sqlite()) as batch:
        batch.add_column(sa.Column("last_message_id", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("handled_message_id", sa.BigInteger(), server_default="0", nullable=False))
    with op.batch_alter_table("tracking_events", **_autoincrement_on_sqlite()):
        pass
    op.create_table(
        "tracking_messages",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(255), nullable=False),
        sa.Column("transaction_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("body", Json, nullable=False),
        sa.Column("reply", Json, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_messages")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_tracking_messages_kind"), "tracking_messages", ["kind", "transaction_id", "id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_tracking_messages_kind"), table_name="tracking_messages")
    op.drop_table("tracking_messages")
    with op.batch_alter_table("tracking_trackers") as batch:
        batch.drop_column("handled_message_id")
        batch.drop_column("last_message_id")
