"""How a start is recorded on PostgreSQL: the statement that writes a new entry and its ``started``
event at once and says whether the entry's epoch may need correcting, and the correction.

Why one statement is enough on PostgreSQL, nearly always (SPEC "Fencing", RELIABILITY.md
invariant 8: a transaction ID's token never decreases, across lives). At READ COMMITTED the insert
computes ``first_epoch`` from the statement's snapshot S, while its unique check sees the latest
commits: it waits for an uncommitted insert or delete of the key, and goes through once the key's
row is gone. Each exit deletes its row and writes its last events in one transaction. The lives of
the ID that are over when the insert goes through are of three sorts:

1. over before S: their events are in S, so the epoch is above them;
2. with a row in S, deleted since (the insert waited for that exit, or ran after it): ``seen``
   (S holds a row of the key) sends the start to the correction, whose snapshot is taken after
   the insert went through, that exit in it;
3. born and over after S (a concurrent start committed, then its exit, while the insert waited
   or before it reached the check). The first of them computed its epoch from the same events of
   the ID as S holds (a life that ended between the two snapshots is of sort 2 for one of the two
   starts, which then corrects), so it took the same epoch unless the token floor moved between
   the two: its ``started`` event holds ours off ``ix_tracking_events_started`` (``started_id``
   is None), and the correction runs. A prune that raised the floor after S updated the floor
   row, whose version in S carries that prune's ``xmax`` (``floor_moved``): the correction again.

Otherwise the start is BEGIN, one statement, COMMIT. The correction deletes the start's own
``started`` event (so that the floor it computes leaves it out) and runs ``recorded one``. What
this does not catch: a prune that raised the floor after that concurrent life had computed its
epoch (and checked the floor) and before S, the life then restarted past our epoch and ended, all
while this one statement had not yet reached its unique check: several transactions of other
processes inside one statement's stall, right after a prune.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from tracking.models import events, token_floor, trackers
from tracking.registry.core import db_now
from tracking.registry.transitions import first_epoch


def recorded(batch: bool) -> Any:
    """PostgreSQL: raise the new entries (``ids``, or the one ``row_id``) that need it to
    ``first_epoch`` as of now, and record their starts; returns ``(transaction_id, epoch)`` of
    each. An entry whose epoch holds (all of them but after a race) is not written again.

    One entry is named by a scalar: with an array, PostgreSQL's estimate for the generic plan of
    the prepared statement is worse than a custom plan's, so it plans the statement again on every
    start (most of its cost); with a scalar it keeps the generic plan."""
    ids: Any
    if batch:
        ids = sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.BigInteger())))
    else:
        ids = sa.bindparam("row_id", type_=sa.BigInteger())
    floor = first_epoch(trackers.c.kind, trackers.c.transaction_id)
    fixed = (
        trackers.update()
        .where(trackers.c.id == ids, trackers.c.epoch < floor)
        .values(epoch=floor)
        .returning(trackers.c.id, trackers.c.epoch)
        .cte("fixed")
    )
    epoch = sa.func.coalesce(fixed.c.epoch, trackers.c.epoch)
    started = (
        sa.select(trackers.c.kind, trackers.c.transaction_id, epoch, db_now(), sa.literal("started"))
        .select_from(trackers.outerjoin(fixed, fixed.c.id == trackers.c.id))
        .where(trackers.c.id == ids)
    )
    columns = ["kind", "transaction_id", "epoch", "at", "event"]
    return (
        events.insert()
        .from_select(columns, started)
        .add_cte(fixed)
        .returning(events.c.transaction_id, events.c.epoch)
    )


def recording(insert: Any) -> Any:
    """PostgreSQL: ``insert`` (of new entries, returning their columns) and their ``started``
    events in one statement: each inserted row as returned, then ``started_id`` (its event's ID;
    None when another life's ``started`` event holds that epoch), ``seen`` (the statement's
    snapshot holds a row of its key) and ``floor_moved`` (a prune changed the token floor since
    that snapshot, or may have): the last three columns."""
    inserted = insert.cte("inserted")
    written = (
        postgresql.insert(events)
        .from_select(
            ["kind", "transaction_id", "epoch", "at", "event"],
            sa.select(
                inserted.c.kind,
                inserted.c.transaction_id,
                inserted.c.epoch,
                db_now(),
                sa.literal("started"),
            ),
        )
        .on_conflict_do_nothing(
            index_elements=[events.c.kind, events.c.transaction_id, events.c.epoch],
            # a literal: PostgreSQL matches it to the index's predicate while planning, and a
            # prepared statement's generic plan knows no parameter's value
            index_where=events.c.event == sa.literal_column("'started'"),
        )
        .returning(events.c.id, events.c.transaction_id)
        .cte("written")
    )
    # The other subqueries read the statement's snapshot, not what the insert wrote.
    seen = sa.exists().where(
        trackers.c.kind == inserted.c.kind, trackers.c.transaction_id == inserted.c.transaction_id
    )
    floor_xmax = (
        sa.select(sa.cast(sa.literal_column("tracking_token_floor.xmax"), sa.Text))
        .select_from(token_floor)
        .where(token_floor.c.id == 1)
        .scalar_subquery()
    )
    # No floor row in the snapshot: one may have been inserted since, unseen.
    floor_moved = sa.func.coalesce(floor_xmax != "0", sa.true())
    return sa.select(
        inserted,
        written.c.id.label("started_id"),
        seen.label("seen"),
        floor_moved.label("floor_moved"),
    ).select_from(inserted.outerjoin(written, written.c.transaction_id == inserted.c.transaction_id))


def unrecorded() -> Any:
    """PostgreSQL: delete the ``started`` events ``ids`` (a correction writes them again)."""
    ids = sa.bindparam("ids", type_=postgresql.ARRAY(sa.BigInteger()))
    return events.delete().where(events.c.id == sa.any_(ids))
