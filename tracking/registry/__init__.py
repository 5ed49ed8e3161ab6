"""The registry: the only package that runs SQL.

Each public function is one named operation on the registry, run in one transaction. Every write an
incarnation makes is conditional on its fencing token (``epoch``) and returns whether it still
holds; the callers never see ``sqlalchemy.exc``: driver errors become
:class:`~tracking.exceptions.RegistryUnavailable`, and a lost token becomes
:class:`~tracking.exceptions.Fenced`.

What crosses the registry's boundary is typed and frozen (:mod:`tracking.models`): an entry is an
:class:`~tracking.models.Entry`, its history :class:`~tracking.models.Event` rows, its mailbox
:class:`~tracking.models.Message` rows, a call's answer a :class:`~tracking.models.Reply`, a
supervisor's last sweep a :class:`~tracking.models.Sweep`; statuses are enums
(:class:`~tracking.models.Status`). Times are always the database's clock (``db_now``), never a
process's.

On SQLite every write transaction starts with ``BEGIN IMMEDIATE`` (a deferred transaction that
upgrades to a write can fail with ``SQLITE_BUSY`` despite ``busy_timeout``), in WAL mode.

``core``          engines, transactions, driver errors translated, the database clock, migrations
``rows``          the statements and helpers below every operation: an entry read with its lease,
                  events, wake-ups
``transitions``   the life of an entry as one table of transitions, and the exits it plans
``entries``       start (one, or many at once), get
``starts``        start's statements, built once; ``recording``: how PostgreSQL records a start in
                  one statement, and when its epoch is corrected; ``startbatches``: SQLite's
                  batch of new entries in two statements
``lookups``       an entry by its key, off the general query path (get, get_many), and what
                  lookup shows of it (find, find_many: no state, arguments or policy)
``reads``         select, count, history, entries_of
``incarnations``  one incarnation's fenced writes: claim, checkpoint, park, exits
``stops``         entries handed off (a new epoch, pending) and stops requested
``batches``       parked trackers ticked in batches: a batch claimed, and parked again, at once
``exits``         planned exits written: deregistered, dead or restarted, one entry or a batch
``calls``         a caller's side of a mailbox: a message queued, an answer taken, a call withdrawn
``mailboxes``     a tracker's side: its mailbox read, a message handled and answered; stop and mail
                  signals
``leases``        worker leases: registered, renewed, retired, declared lost, forgotten
``limits``        rate limits shared by all workers: one token bucket per kind (``take_tokens``)
``supervision``   what a sweep finds and changes: orphans, unclaimed entries, pruning
``waking``        parked and failed entries made pending once due (the waker's, and the sweep's)
``metrics``       counts from the events table (Prometheus, benchmarks)
"""

from tracking.models import (
    Entry,
    Event,
    Message,
    MessageStatus,
    MessageType,
    Reply,
    Status,
    Sweep,
    WorkerInfo,
)
from tracking.registry.batches import MAX_BATCH, claim_batch, park_batch
from tracking.registry.calls import enqueue, take_reply, withdraw
from tracking.registry.core import create_engine, db_now, dispose, engine, migrate
from tracking.registry.entries import get, get_many, start, start_many, start_on
from tracking.registry.incarnations import checkpoint, claim, exit_abnormally, exit_normally, park
from tracking.registry.leases import (
    forget_workers,
    held,
    mark_lost_workers,
    register_worker,
    renew_worker,
    retire_worker,
    worker_list,
)
from tracking.registry.limits import Grant
from tracking.registry.limits import take as take_tokens
from tracking.registry.lookups import find, find_many
from tracking.registry.mailboxes import REPLY_CHANNEL, handled, mailbox, signals
from tracking.registry.metrics import census, count_events, count_restarts, recoveries, settled_event_id
from tracking.registry.reads import count, entries_of, history, select
from tracking.registry.rows import WAKE_CHANNEL
from tracking.registry.stops import hand_off, request_stop
from tracking.registry.supervision import (
    database_now,
    last_sweeps,
    not_published,
    prune,
    record_sweep,
    restart_orphans,
    take_due,
)
from tracking.registry.waking import hurry, next_wake, pending, wake_due

__all__ = [
    "MAX_BATCH",
    "REPLY_CHANNEL",
    "WAKE_CHANNEL",
    "Entry",
    "Event",
    "Grant",
    "Message",
    "MessageStatus",
    "MessageType",
    "Reply",
    "Status",
    "Sweep",
    "WorkerInfo",
    "census",
    "checkpoint",
    "claim",
    "claim_batch",
    "count",
    "count_events",
    "count_restarts",
    "create_engine",
    "database_now",
    "db_now",
    "dispose",
    "engine",
    "enqueue",
    "entries_of",
    "exit_abnormally",
    "exit_normally",
    "forget_workers",
    "find",
    "find_many",
    "get",
    "get_many",
    "hand_off",
    "held",
    "handled",
    "history",
    "hurry",
    "last_sweeps",
    "mailbox",
    "mark_lost_workers",
    "migrate",
    "not_published",
    "prune",
    "next_wake",
    "park",
    "park_batch",
    "pending",
    "record_sweep",
    "recoveries",
    "register_worker",
    "renew_worker",
    "request_stop",
    "restart_orphans",
    "retire_worker",
    "select",
    "settled_event_id",
    "signals",
    "start",
    "start_many",
    "start_on",
    "take_due",
    "take_tokens",
    "take_reply",
    "wake_due",
    "withdraw",
    "worker_list",
]
