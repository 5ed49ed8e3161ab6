"""One ``started`` event per epoch of a transaction ID, and a token floor row from the start.

``ix_tracking_events_started`` is unique on (kind, transaction_id, epoch) among ``started`` events:
a start on PostgreSQL writes its entry and its ``started`` event in one statement, and a collision
here tells it that a concurrent life took the same epoch (``tracking.registry.starts``). Each life
starts under an epoch above every epoch the ID had before, and a dead entry started afresh takes
its last epoch plus one, so a registry this code wrote holds no two such events; any an older
version left (a token reused by a race since fixed) are kept in the history, renamed
``started (epoch reused)``, all but the first of each epoch.

``tracking_token_floor`` gets its one row (epoch 0, the floor an empty history has) if no prune
made it yet: a start reads whether a prune changed the row while it ran, which a row inserted
after its snapshot would not show.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STARTED = sa.text("event = 'started'")


def upgrade() -> None:
    op.execute(
        "UPDATE tracking_events SET event = 'started (epoch reused)' WHERE event = 'started'"
        " AND id NOT IN (SELECT min(id) FROM tracking_events WHERE event = 'started'"
        " GROUP BY kind, transaction_id, epoch)"
    )
    op.create_index(
        "ix_tracking_events_started",
        "tracking_events",
        ["kind", "transaction_id", "epoch"],
        unique=True,
        postgresql_where=STARTED,
        sqlite_where=STARTED,
    )
    op.execute(
        "INSERT INTO tracking_token_floor (id, epoch) SELECT 1, 0"
        " WHERE NOT EXISTS (SELECT 1 FROM tracking_token_floor WHERE id = 1)"
    )


def downgrade() -> None:
    # The floor row stays: epoch 0 is the floor of an empty history, and a prune may have raised it.
    op.drop_index("ix_tracking_events_started", table_name="tracking_events")
