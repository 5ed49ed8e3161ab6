"""The registry's tables, as SQLAlchemy Core metadata (Alembic migrates exactly this), and the
values their status columns take.

``tracking_trackers``    one row per registered tracker (the Registry): unique (kind, transaction_id)
``tracking_workers``     one row per worker process start: the lease every tracker it runs shares
``tracking_events``      the recent history of each tracker: why it started, exited, restarted
``tracking_supervisors`` each supervisor's last sweep, so "nobody is supervising" is visible
``tracking_messages``    each tracker's mailbox: casts and calls not yet handled, and call replies
``tracking_token_floor`` the highest token whose events were pruned: new lives start above it
``tracking_limits``      one token bucket per rate-limited kind, shared by every worker process
"""

from __future__ import annotations

import enum

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


class Status(enum.StrEnum):
    """Where a registry entry is in its life (``tracking_trackers.status``); see
    :mod:`tracking.registry.transitions` for the transitions between them."""

    PENDING = "pending"  # recorded and published, not yet claimed by a worker
    RUNNING = "running"  # an incarnation holds the entry and ticks
    PARKED = "parked"  # between two ticks of a sparse tracker: no worker slot held, woken when due
    FAILED = "failed"  # exited abnormally; its restart waits for the backoff delay
    DEAD = "dead"  # past its restart intensity (or temporary): kept for inspection, not restarted


class WorkerStatus(enum.StrEnum):
    """The state of a worker process's lease (``tracking_workers.status``)."""

    ALIVE = "alive"  # renewed by the process; live while its heartbeat is younger than the lease
    LOST = "lost"  # expired by the database clock: a sweep declared it lost, its trackers restart
    STOPPED = "stopped"  # given up by a process that exited cleanly


class MessageType(enum.StrEnum):
    """What a mailbox message is (``tracking_messages.type``)."""

    CAST = "cast"  # handled and deleted: nobody waits for it
    CALL = "call"  # answered: its row keeps the reply (or error) until the caller takes it


class MessageStatus(enum.StrEnum):
    """Where a mailbox message is (``tracking_messages.status``)."""

    QUEUED = "queued"  # not handled yet
    REPLIED = "replied"  # a call answered by its handler
    FAILED = "failed"  # a call whose handler crashed: the caller gets TrackerCrashed


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

#: JSON documents: jsonb on PostgreSQL (queryable, compact), JSON text elsewhere
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
#: integer primary keys that autoincrement on SQLite as well
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)
#: a Celery node name: at most 255 characters, the longest hostname
Hostname = sa.String(255)
#: a worker process's ID, ``f"{hostname}/{pid}/{12 hex}"``: a 255-character hostname, a PID of up to
#: 10 digits and 12 hex digits take 279 (migrations/versions/0005_long_worker_ids.py)
WorkerId = sa.String(300)

trackers = sa.Table(
    "tracking_trackers",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(255), nullable=False),
    sa.Column("transaction_id", sa.String(255), nullable=False),
    # a Status
    sa.Column("status", sa.String(16), nullable=False),
    # the fencing token: bumped for every new incarnation; every write checks it
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("worker", Hostname),
    sa.Column("worker_id", WorkerId),
    sa.Column("args", Json, nullable=False),
    sa.Column("state", Json),
    sa.Column("policy", Json, nullable=False),
    sa.Column("restarts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("restart_times", Json, nullable=False),
    sa.Column("backoff_step", sa.Integer, nullable=False, server_default="0"),
    sa.Column("stop_reason", sa.String(255)),
    sa.Column("last_error", sa.Text),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("claimed_at", Timestamp),
    sa.Column("checkpoint_at", Timestamp),
    # pending: when to publish the message again if nobody claims it; failed: when to restart;
    # parked: when to wake it (its next tick, or now when a message or stop request arrives)
    sa.Column("due_at", Timestamp),
    # when the next tick is due, set as a tracker parks; kept through its wake-up, so that the
    # woken incarnation ticks on schedule, and cleared by every other new incarnation
    sa.Column("tick_at", Timestamp),
    # the mailbox: the newest message queued, and the newest one handled (ids of tracking_messages)
    sa.Column("last_message_id", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("handled_message_id", sa.BigInteger, nullable=False, server_default="0"),
    # pending: how often the sweep published this incarnation again (its grace doubles each time)
    sa.Column("republished", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint("kind", "transaction_id"),
    sa.CheckConstraint(f"status IN ({', '.join(repr(s.value) for s in Status)})", name="status"),
    # An ID is never reused (SQLite would reuse the highest after a delete): writes are fenced by
    # (id, epoch), and a new entry must not inherit a departed one's identity.
    sqlite_autoincrement=True,
)
sa.Index(None, trackers.c.status, trackers.c.due_at)
sa.Index(None, trackers.c.worker_id)

workers = sa.Table(
    "tracking_workers",
    metadata,
    sa.Column("id", WorkerId, primary_key=True),
    sa.Column("hostname", Hostname, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    # a WorkerStatus
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("heartbeat_at", Timestamp, nullable=False),
)
sa.Index(None, workers.c.status, workers.c.heartbeat_at)

events = sa.Table(
    "tracking_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(255), nullable=False),
    sa.Column("transaction_id", sa.String(255), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("worker", Hostname),
    sa.Column("detail", sa.Text),
    sqlite_autoincrement=True,
)
sa.Index(None, events.c.kind, events.c.transaction_id, events.c.id)
sa.Index(None, events.c.at)
#: one ``started`` event per epoch of an ID: a start whose statement missed a concurrent life that
#: took the same epoch collides here, and corrects its own (tracking.registry.starts)
sa.Index(
    "ix_tracking_events_started",
    events.c.kind,
    events.c.transaction_id,
    events.c.epoch,
    unique=True,
    postgresql_where=events.c.event == "started",
    sqlite_where=events.c.event == "started",
)

supervisors = sa.Table(
    "tracking_supervisors",
    metadata,
    # by default f"{hostname}/{pid}" (tracking.supervisor.sweep): as long as a worker ID may be
    sa.Column("name", sa.String(300), primary_key=True),
    sa.Column("last_sweep_at", Timestamp, nullable=False),
    sa.Column("last_counts", Json, nullable=False),
)

messages = sa.Table(
    "tracking_messages",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(255), nullable=False),
    sa.Column("transaction_id", sa.String(255), nullable=False),
    # a MessageType
    sa.Column("type", sa.String(8), nullable=False),
    # a MessageStatus (calls keep their row until the caller has read the reply)
    sa.Column("status", sa.String(8), nullable=False),
    sa.Column("body", Json, nullable=False),
    sa.Column("reply", Json),
    sa.Column("error", sa.Text),
    sa.Column("created_at", Timestamp, nullable=False),
    # never reused: an answer must not reach a later call that got a departed call's ID
    sqlite_autoincrement=True,
)
sa.Index(None, messages.c.kind, messages.c.transaction_id, messages.c.id)
sa.Index(None, messages.c.status, messages.c.created_at)

token_floor = sa.Table(
    "tracking_token_floor",
    metadata,
    # one row (id 1): the highest epoch of any event pruned so far. A transaction ID's first
    # incarnation of a new life gets an epoch above this and above its own remaining events.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
)

limits = sa.Table(
    "tracking_limits",
    metadata,
    # the tracker kind (or any name a caller limits by): one bucket each
    sa.Column("kind", sa.String(255), primary_key=True),
    # whole and fractional tokens left at updated_at (at most burst)
    sa.Column("tokens", sa.Double, nullable=False),
    # when the bucket was last refilled, by the database clock: never moves backwards
    sa.Column("updated_at", Timestamp, nullable=False),
    # the rate (tokens per second) and burst (capacity) of the last take: each take passes its own
    # (the kind's code declares them), stored so that an operator sees the limit in force
    sa.Column("rate", sa.Double, nullable=False),
    sa.Column("burst", sa.Double, nullable=False),
)
