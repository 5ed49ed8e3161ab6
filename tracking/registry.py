"""The registry: the only module that runs SQL.

Each public function is one named operation on the registry, run in one transaction. Every write an
incarnation makes is conditional on its fencing token (``epoch``) and returns whether it still
holds; the callers never see ``sqlalchemy.exc``: driver errors become
:class:`~tracking.exceptions.RegistryUnavailable`, and a lost token becomes
:class:`~tracking.exceptions.Fenced`.

Times are always the database's clock (``db_now``), never a process's.

On SQLite every write transaction starts with ``BEGIN IMMEDIATE`` (a deferred transaction that
upgrades to a write can fail with ``SQLITE_BUSY`` despite ``busy_timeout``), in WAL mode.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from tracking.exceptions import Fenced, NotFound, RegistryUnavailable
from tracking.models import events, messages, supervisors, trackers, workers
from tracking.policy import Action, Decision, RestartPolicy, decide
from tracking.redact import redact_url
from tracking.settings import Settings

log = logging.getLogger("tracking.registry")
Row = dict[str, Any]
T = TypeVar("T")


# -- the database clock --------------------------------------------------------------------------


class db_now(FunctionElement[datetime]):
    """The database's current time, plus ``offset`` seconds (a bound parameter)."""

    type = sa.DateTime(timezone=True)
    inherit_cache = True

    def __init__(self, offset: float = 0.0) -> None:
        super().__init__(sa.literal(round(float(offset), 3), sa.Float()))


@compiles(db_now, "postgresql")
def _now_pg(element: db_now, compiler: Any, **kw: Any) -> str:
    return f"(now() + make_interval(secs => {compiler.process(element.clauses, **kw)}))"


@compiles(db_now, "sqlite")
def _now_sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    offset = compiler.process(element.clauses, **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now', ({offset}) || ' seconds')"


def _aware(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- engines -------------------------------------------------------------------------------------

_engines: dict[str, sa.Engine] = {}
_engines_lock = threading.Lock()
_migrated: set[str] = set()


def _reset_after_fork() -> None:
    # A forked child must not share its parent's connections.
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()


os.register_at_fork(after_in_child=_reset_after_fork)


def engine(settings: Settings) -> sa.Engine:
    """The process-wide engine for the registry database (created on first use)."""
    url = settings.database_url
    eng = _engines.get(url)
    if eng is None:
        with _engines_lock:
            eng = _engines.get(url)
            if eng is None:
                eng = _engines[url] = create_engine(url)
    if settings.migrates_itself and url not in _migrated:
        with _engines_lock:
            if url not in _migrated:
                migrate(settings)
                _migrated.add(url)
    return eng


def create_engine(url: str) -> sa.Engine:
    """An engine with the registry's connection settings for that database."""
    sa_url = sa.make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        eng = sa.create_engine(
            sa_url, connect_args={"timeout": 30, "isolation_level": None}, pool_pre_ping=False
        )

        @sa.event.listens_for(eng, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @sa.event.listens_for(eng, "begin")
        def _sqlite_begin(conn: sa.Connection) -> None:
            mode = "IMMEDIATE" if conn.get_execution_options().get("tracking_write", True) else ""
            conn.exec_driver_sql(f"BEGIN {mode}")

        return eng
    connect_args: dict[str, Any] = {}
    if sa_url.get_backend_name() == "postgresql":
        connect_args = {
            "application_name": f"tracking-{os.getpid()}",
            "connect_timeout": 5,
            # A process paused (or cut off) inside a transaction must not hold its row locks, and
            # so the takeover of its trackers, for ever: the server ends such a session, and a
            # statement waits at most this long for a lock (then the caller retries).
            "options": "-c idle_in_transaction_session_timeout=10000 -c lock_timeout=10000",
        }
    return sa.create_engine(
        # No pre-ping (a round trip per checkout): reads retry once on a dead connection, and a
        # failed write is retried by its caller.
        sa_url,
        pool_pre_ping=False,
        pool_size=10,
        max_overflow=20,
        connect_args=connect_args,
    )


@contextlib.contextmanager
def _translated(settings: Settings) -> Iterator[None]:
    try:
        yield
    except sa_exc.DBAPIError as exc:
        raise RegistryUnavailable(
            f"registry database {redact_url(settings.database_url)} failed: "
            f"{type(exc.orig).__name__}: {redact_url(str(exc.orig))}"
        ) from exc


@contextlib.contextmanager
def _write(settings: Settings) -> Iterator[sa.Connection]:
    """One write transaction, committed on success."""
    with _translated(settings), engine(settings).begin() as conn:
        yield conn


def _read(settings: Settings, query: Callable[[sa.Connection], T]) -> T:
    """Run a read-only query: in autocommit on PostgreSQL (no BEGIN/COMMIT round trips), in a
    deferred transaction on SQLite (never takes the write lock). A pooled connection found dead
    (the database restarted) is replaced and the query tried once more."""
    for attempt in (1, 2):
        try:
            with _translated(settings), engine(settings).connect() as conn:
                if conn.dialect.name == "postgresql":
                    return query(conn.execution_options(isolation_level="AUTOCOMMIT"))
                conn = conn.execution_options(tracking_write=False)
                with conn.begin():
                    return query(conn)
        except RegistryUnavailable as exc:
            cause = exc.__cause__
            if attempt == 1 and isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated:
                continue
            raise
    raise AssertionError("unreachable")


def migrate(settings: Settings, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with the Alembic history shipped in the package."""
    from alembic import command

    from tracking.migrations import alembic_config

    logging.getLogger("alembic").setLevel(logging.WARNING)

    cached = _engines.get(settings.database_url)
    eng = cached or create_engine(settings.database_url)
    try:
        with _translated(settings), eng.begin() as conn:
            cfg = alembic_config(settings.database_url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        if cached is None:
            eng.dispose()


def dispose(settings: Settings) -> None:
    """Close this process's connections to the registry (tests, shutdown)."""
    with _engines_lock:
        eng = _engines.pop(settings.database_url, None)
        _migrated.discard(settings.database_url)
    if eng is not None:
        eng.dispose()


# -- helpers -------------------------------------------------------------------------------------

_tracker_with_lease = sa.select(trackers, workers.c.heartbeat_at).select_from(
    trackers.outerjoin(workers, workers.c.id == trackers.c.worker_id)
)


def _one(conn: sa.Connection, *where: Any, lock: bool = False) -> Row | None:
    """One entry with its lease. ``lock``: hold its row until the transaction ends (PostgreSQL
    ``FOR UPDATE``; SQLite's write transaction already excludes every other writer), so that a
    concurrent writer waits and then sees the new version instead of acting on a stale read."""
    stmt = _tracker_with_lease.where(*where)
    if lock:
        stmt = stmt.with_for_update(of=trackers)
    row = conn.execute(stmt).mappings().first()
    return _row(row) if row is not None else None


def _rows(conn: sa.Connection, stmt: Any) -> list[Row]:
    return [_row(m) for m in conn.execute(stmt).mappings()]


def _row(mapping: Any) -> Row:
    row = dict(mapping)
    for key in ("started_at", "claimed_at", "checkpoint_at", "due_at", "tick_at", "heartbeat_at", "db_now"):
        if key in row:
            row[key] = _aware(row[key])
    return row


def _now(conn: sa.Connection) -> datetime:
    value = conn.execute(sa.select(db_now())).scalar_one()
    now = _aware(value)
    assert now is not None
    return now


def _insert(conn: sa.Connection) -> Any:
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise RegistryUnavailable(f"unsupported registry database {name!r} (use PostgreSQL or SQLite)")


def _event(
    conn: sa.Connection, row: Row, event: str, detail: str | None = None, epoch: int | None = None
) -> None:
    conn.execute(
        events.insert().values(
            kind=row["kind"],
            transaction_id=row["transaction_id"],
            epoch=row["epoch"] if epoch is None else epoch,
            at=db_now(),
            event=event,
            worker=row.get("worker"),
            detail=detail,
        )
    )


def new_task_id() -> str:
    return str(uuid.uuid4())


def _fresh_incarnation(settings: Settings) -> dict[str, Any]:
    """Column values that make a row a new, not yet claimed incarnation."""
    return {
        "status": "pending",
        "epoch": trackers.c.epoch + 1,
        "task_id": new_task_id(),
        "worker": None,
        "worker_id": None,
        "claimed_at": None,
        "stop_reason": None,
        "due_at": db_now(settings.start_grace_seconds),
        "tick_at": None,
    }


# -- start, lookup, list -------------------------------------------------------------------------


def start(
    settings: Settings, kind: str, transaction_id: str, args: dict[str, Any], policy: RestartPolicy
) -> tuple[Row, bool]:
    """Register a tracker, or return the one registered. ``(row, created)``.

    Atomicity: one transaction. The insert relies on the unique (kind, transaction_id) key: two
    concurrent starts block on each other's uncommitted insert and exactly one creates the row;
    if that one rolls back, the other's insert goes through. A ``dead`` entry is started afresh
    (new epoch, args, no state, restarts reset) by an update conditional on it still being dead.
    """
    values = {
        "kind": kind,
        "transaction_id": transaction_id,
        "status": "pending",
        "epoch": 1,
        "task_id": new_task_id(),
        "args": args,
        "policy": policy.to_json(),
        "restarts": 0,
        "restart_times": [],
        "backoff_step": 0,
        "started_at": db_now(),
        "due_at": db_now(settings.start_grace_seconds),
    }
    key = (trackers.c.kind == kind, trackers.c.transaction_id == transaction_id)
    with _write(settings) as conn:
        stmt = _insert(conn)(trackers).values(values).on_conflict_do_nothing()
        created = conn.execute(stmt.returning(trackers.c.id)).first() is not None
        row = _one(conn, *key, lock=True)
        assert row is not None
        if created:
            _event(conn, row, "started")
            return row, True
        if row["status"] != "dead":
            return row, False
        fresh = {
            **_fresh_incarnation(settings),
            "args": args,
            "state": None,
            "policy": policy.to_json(),
            "restarts": 0,
            "restart_times": [],
            "backoff_step": 0,
            "last_error": None,
            "started_at": db_now(),
            "checkpoint_at": None,
        }
        result = conn.execute(
            trackers.update()
            .where(trackers.c.id == row["id"], trackers.c.epoch == row["epoch"])
            .where(trackers.c.status == "dead")
            .values(fresh)
        )
        if result.rowcount != 1:  # pragma: no cover - the write lock makes this unreachable
            raise Fenced("the dead entry changed while it was being started afresh")
        _forget_mail(conn, row)
        row = _one(conn, *key)
        assert row is not None
        _event(conn, row, "started", "started afresh after dead")
        return row, True


def get(settings: Settings, kind: str, transaction_id: str) -> Row | None:
    """The registry entry for (kind, transaction_id), whatever its status, or None."""
    return _read(
        settings,
        lambda conn: _one(conn, trackers.c.kind == kind, trackers.c.transaction_id == transaction_id),
    )


def select(
    settings: Settings,
    kind: str | None = None,
    status: str | None = None,
    worker: str | None = None,
    limit: int | None = None,
) -> list[Row]:
    """Registry entries, oldest first, narrowed by kind, status and worker hostname."""
    stmt = _tracker_with_lease.order_by(trackers.c.id)
    if kind is not None:
        stmt = stmt.where(trackers.c.kind == kind)
    if status is not None:
        stmt = stmt.where(trackers.c.status == status)
    if worker is not None:
        stmt = stmt.where(trackers.c.worker == worker)
    if limit is not None:
        stmt = stmt.limit(limit)
    return _read(settings, lambda conn: _rows(conn, stmt))


def count(settings: Settings, kind: str | None = None, status: str | None = None) -> int:
    stmt = sa.select(sa.func.count()).select_from(trackers)
    if kind is not None:
        stmt = stmt.where(trackers.c.kind == kind)
    if status is not None:
        stmt = stmt.where(trackers.c.status == status)
    return _read(settings, lambda conn: int(conn.execute(stmt).scalar_one()))


def history(settings: Settings, kind: str, transaction_id: str, limit: int = 20) -> list[Row]:
    """The most recent events of a tracker, newest last."""
    stmt = (
        sa.select(events)
        .where(events.c.kind == kind, events.c.transaction_id == transaction_id)
        .order_by(events.c.id.desc())
        .limit(limit)
    )
    rows = _read(settings, lambda conn: _rows(conn, stmt))
    for row in rows:
        row["at"] = _aware(row["at"])
    return rows[::-1]


# -- one incarnation's writes (all fenced by epoch) ----------------------------------------------


def _fence(row_id: int, epoch: int) -> tuple[Any, ...]:
    return (trackers.c.id == row_id, trackers.c.epoch == epoch, trackers.c.status == "running")


def claim(
    settings: Settings,
    kind: str,
    transaction_id: str,
    epoch: int,
    *,
    worker: str,
    worker_id: str,
    policy: RestartPolicy,
) -> Row | None:
    """Take a pending entry for the incarnation ``epoch``; None if it is not ours to run.

    The row comes back with ``db_now``, the database's time of the claim (a woken tracker's next
    tick is ``tick_at`` by that clock). Atomicity: one conditional update (status pending and the
    same epoch), so of two deliveries of one message, or a stale message of an older epoch, at
    most one claim succeeds. A tracker woken from its park is not a new start: no event.
    """
    with _write(settings) as conn:
        found = (
            conn.execute(
                trackers.update()
                .where(trackers.c.kind == kind, trackers.c.transaction_id == transaction_id)
                .where(trackers.c.epoch == epoch, trackers.c.status == "pending")
                .values(
                    status="running",
                    worker=worker,
                    worker_id=worker_id,
                    claimed_at=db_now(),
                    due_at=None,
                    policy=policy.to_json(),
                )
                .returning(*trackers.c, db_now().label("db_now"))
            )
            .mappings()
            .first()
        )
        if found is None:
            return None
        row = _row(found)
        row["heartbeat_at"] = None
        if row["tick_at"] is None:
            _event(conn, row, "running")
        return row


def checkpoint(settings: Settings, row_id: int, epoch: int, state: dict[str, Any]) -> None:
    """Store the state of incarnation ``epoch``. Raises Fenced if it no longer owns the entry."""
    with _write(settings) as conn:
        result = conn.execute(
            trackers.update().where(*_fence(row_id, epoch)).values(state=state, checkpoint_at=db_now())
        )
        if result.rowcount != 1:
            raise Fenced()


def park(settings: Settings, row_id: int, epoch: int, state: dict[str, Any], wait: float) -> bool:
    """Park incarnation ``epoch`` with its new state until its next tick, ``wait`` seconds from now.

    The entry keeps its epoch and gives up its worker: it is ``parked``, and :func:`wake_parked`
    makes it pending again (under a new epoch) when the tick is due. Returns False, writing
    nothing, if a message or a stop request is waiting (the incarnation deals with it first);
    raises Fenced if the incarnation no longer owns the entry. Atomicity: one conditional update.
    """
    with _write(settings) as conn:
        result = conn.execute(
            trackers.update()
            .where(*_fence(row_id, epoch), trackers.c.stop_reason.is_(None))
            .where(trackers.c.last_message_id <= trackers.c.handled_message_id)
            .values(
                status="parked",
                state=state,
                checkpoint_at=db_now(),
                worker=None,
                worker_id=None,
                due_at=db_now(wait),
                tick_at=db_now(wait),
            )
        )
        if result.rowcount == 1:
            return True
        if _one(conn, *_fence(row_id, epoch)) is None:
            raise Fenced()
        return False


def exit_normally(settings: Settings, row_id: int, epoch: int, event: str, detail: str | None) -> None:
    """Deregister: delete the entry of incarnation ``epoch`` and record why. Fenced if not ours."""
    with _write(settings) as conn:
        row = _one(conn, *_fence(row_id, epoch), lock=True)
        if row is None or conn.execute(trackers.delete().where(*_fence(row_id, epoch))).rowcount != 1:
            raise Fenced()
        _forget_mail(conn, row)
        _event(conn, row, event, detail)


def exit_abnormally(
    settings: Settings, row_id: int, epoch: int, event: str, detail: str | None, *, normal: bool = False
) -> tuple[Decision, Row | None]:
    """Apply the restart policy to incarnation ``epoch``'s exit; returns the decision and new row.

    ``normal`` is a ``Done`` of a permanent tracker. Atomicity: one transaction that reads the
    restart history and writes the decision, conditional on the epoch.
    """
    with _write(settings) as conn:
        row = _one(conn, *_fence(row_id, epoch), lock=True)
        if row is None:
            raise Fenced()
        return _after_exit(settings, conn, row, event, detail, normal=normal)


def _after_exit(
    settings: Settings, conn: sa.Connection, row: Row, event: str, detail: str | None, *, normal: bool
) -> tuple[Decision, Row | None]:
    now = _now(conn)
    claimed = row["claimed_at"]
    decision = decide(
        RestartPolicy.from_json(row["policy"]),
        normal=normal,
        now=now,
        restart_times=list(row["restart_times"]),
        backoff_step=row["backoff_step"],
        ran_seconds=(now - claimed).total_seconds() if claimed else None,
    )
    same = (trackers.c.id == row["id"], trackers.c.epoch == row["epoch"], trackers.c.status == row["status"])

    def write(stmt: Any) -> None:
        # The caller read ``row`` under a lock; a changed row means someone else moved it on.
        if conn.execute(stmt.where(*same)).rowcount != 1:
            raise Fenced("the entry changed while its exit was being recorded")

    _event(conn, row, event, detail)
    if decision.action is Action.DEREGISTER:
        write(trackers.delete())
        _forget_mail(conn, row)
        return decision, None
    if decision.action is Action.DEAD:
        write(
            trackers.update().values(
                status="dead", worker_id=None, due_at=None, stop_reason=None, last_error=detail
            )
        )
        _event(conn, row, "dead", _why_dead(row["policy"]))
        return decision, None
    values = _fresh_incarnation(settings)
    values.update(
        restarts=trackers.c.restarts + 1,
        restart_times=list(decision.restart_times),
        backoff_step=decision.backoff_step,
        last_error=detail if not normal else row["last_error"],
    )
    if decision.delay > 0:
        values.update(status="failed", due_at=db_now(decision.delay))
    write(trackers.update().values(values))
    new = _one(conn, trackers.c.id == row["id"])
    assert new is not None
    _event(
        conn,
        new,
        "restarting" if decision.delay == 0 else "backoff",
        None if decision.delay == 0 else f"restart in {decision.delay:g} s",
    )
    return decision, new


def _why_dead(policy: dict[str, Any]) -> str:
    if policy["restart"] == "temporary":
        return "temporary trackers are not restarted"
    return f"more than {policy['max_restarts']} restarts in {policy['max_seconds']} s"


def hand_off(settings: Settings, incarnations: Sequence[tuple[int, int]], reason: str) -> list[Row]:
    """Give entries back as pending, each under a new epoch: a handoff, not a crash.

    ``incarnations`` are ``(row id, epoch)`` pairs; an entry no longer held by that epoch is left
    alone. Returns the new rows, to publish. Atomicity: one transaction for all of them (a worker
    shutting down with thousands of trackers makes one round trip, not thousands).
    """
    if not incarnations:
        return []
    wanted = dict(incarnations)
    with _write(settings) as conn:
        owned: list[Row] = []
        ids = list(wanted)
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            stmt = _tracker_with_lease.where(trackers.c.id.in_(chunk), trackers.c.status == "running")
            owned += _rows(conn, stmt.with_for_update(of=trackers))
        owned = [r for r in owned if wanted[r["id"]] == r["epoch"]]
        if not owned:
            return []
        values = {**_fresh_incarnation(settings), "task_id": sa.bindparam("b_task")}
        conn.execute(
            trackers.update()
            .where(trackers.c.id == sa.bindparam("b_id"), trackers.c.epoch == sa.bindparam("b_epoch"))
            .values(values),
            [{"b_id": r["id"], "b_epoch": r["epoch"], "b_task": new_task_id()} for r in owned],
        )
        conn.execute(
            events.insert().values(at=db_now(), event="handoff", detail=reason),
            [
                {
                    "kind": r["kind"],
                    "transaction_id": r["transaction_id"],
                    "epoch": r["epoch"],
                    "worker": r["worker"],
                }
                for r in owned
            ],
        )
        new: list[Row] = []
        for start in range(0, len(owned), 1000):
            chunk = [r["id"] for r in owned[start : start + 1000]]
            new += _rows(conn, _tracker_with_lease.where(trackers.c.id.in_(chunk)))
        return new


# -- stop --------------------------------------------------------------------------------------


def request_stop(
    settings: Settings, kind: str, transaction_id: str, reason: str, task_id: str | None = None
) -> tuple[str, Row | None]:
    """Ask a tracker to stop. Returns what happened and the row to act on:

    ``("requested", row)``   it is running; its incarnation will exit (wait for the epoch to change)
    ``("removed", None)``    it was pending, parked, failed or dead and is deregistered now
    ``("restarting", row)``  an abnormal stop of a pending or parked tracker: restarted by its
                             policy (publish)
    ``("unchanged", row)``   an abnormal stop of a tracker already failed and awaiting its restart

    With ``task_id``, only that incarnation is stopped (``("unchanged", row)`` if another one holds
    the entry). Raises NotFound when nothing is registered. Atomicity: one transaction, conditional
    on epoch.
    """
    normal = reason in ("normal", "shutdown")
    with _write(settings) as conn:
        row = _one(conn, trackers.c.kind == kind, trackers.c.transaction_id == transaction_id, lock=True)
        if row is None:
            raise NotFound(f"no {kind} tracker is registered for {transaction_id!r}")
        if task_id is not None and row["task_id"] != task_id:
            return "unchanged", row
        same = (trackers.c.id == row["id"], trackers.c.epoch == row["epoch"])
        if row["status"] == "running":
            conn.execute(trackers.update().where(*same).values(stop_reason=reason))
            _wake(conn, row["id"], "stop")
            return "requested", row
        if normal or row["status"] == "dead":
            conn.execute(trackers.delete().where(*same))
            _forget_mail(conn, row)
            _event(conn, row, "stopped", f"stop({reason!r}) while {row['status']}")
            return "removed", None
        if row["status"] == "failed":
            return "unchanged", row
        decision, new = _after_exit(
            settings, conn, row, "stopped", f"stop({reason!r}) while {row['status']}", normal=False
        )
        return ("restarting" if decision.action is Action.RESTART else "removed"), new


# -- mailboxes -----------------------------------------------------------------------------------

#: the PostgreSQL channel a cast, call or stop notifies, so that the tracker wakes at once
WAKE_CHANNEL = "tracking_wakeup"


def _wake(conn: sa.Connection, row_id: int, why: str) -> None:
    """Wake the tracker of entry ``row_id`` (``why``: "mail" or "stop") when this transaction
    commits (PostgreSQL NOTIFY; elsewhere its worker finds out on its next control poll)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_notify(WAKE_CHANNEL, f"{row_id}:{why}")))


def _forget_mail(conn: sa.Connection, row: Row) -> None:
    """Drop the mailbox of an entry that leaves the registry (a waiting caller sees NotFound)."""
    conn.execute(
        messages.delete().where(
            messages.c.kind == row["kind"], messages.c.transaction_id == row["transaction_id"]
        )
    )


def enqueue(settings: Settings, kind: str, transaction_id: str, type_: str, body: Any) -> int:
    """Queue a cast or call for a registered, not dead tracker; returns the message ID.

    Atomicity: one transaction that locks the entry first, so that the messages of one tracker get
    their IDs in the order they commit (the mailbox is read in ID order and never skips one).
    """
    with _write(settings) as conn:
        row = _one(conn, trackers.c.kind == kind, trackers.c.transaction_id == transaction_id, lock=True)
        if row is None or row["status"] == "dead":
            raise NotFound(f"no live {kind} tracker for {transaction_id!r}")
        message_id = conn.execute(
            messages.insert()
            .values(
                kind=kind,
                transaction_id=transaction_id,
                type=type_,
                status="queued",
                body=body,
                created_at=db_now(),
            )
            .returning(messages.c.id)
        ).scalar_one()
        values: dict[str, Any] = {"last_message_id": message_id}
        if row["status"] == "parked":  # wake it now: the message is handled before its next tick
            values["due_at"] = db_now()
        conn.execute(trackers.update().where(trackers.c.id == row["id"]).values(values))
        _wake(conn, row["id"], "mail")
        return int(message_id)


def mailbox(settings: Settings, kind: str, transaction_id: str, after: int, limit: int = 100) -> list[Row]:
    """Queued messages of a tracker after message ``after``, oldest first."""
    stmt = (
        sa.select(messages.c.id, messages.c.type, messages.c.body)
        .where(messages.c.kind == kind, messages.c.transaction_id == transaction_id)
        .where(messages.c.id > after, messages.c.status == "queued")
        .order_by(messages.c.id)
        .limit(limit)
    )
    return _read(settings, lambda conn: _rows(conn, stmt))


def handled(
    settings: Settings,
    row_id: int,
    epoch: int,
    message_id: int,
    state: dict[str, Any] | None,
    *,
    reply: Any = None,
    error: str | None = None,
) -> None:
    """Record that incarnation ``epoch`` handled a message: its new state (None: a handler that
    crashed changes no state), the handled mark, and the reply or error of a call, or the removal of
    a cast. Atomicity: one transaction, fenced by epoch, so each message is handled exactly once.
    """
    values: dict[str, Any] = {"handled_message_id": message_id}
    if state is not None:
        values.update(state=state, checkpoint_at=db_now())
    with _write(settings) as conn:
        result = conn.execute(
            trackers.update()
            .where(*_fence(row_id, epoch), trackers.c.handled_message_id < message_id)
            .values(values)
        )
        if result.rowcount != 1:
            raise Fenced()
        message = messages.c.id == message_id
        if conn.execute(sa.select(messages.c.type).where(message)).scalar_one_or_none() == "call":
            status = "failed" if error is not None else "replied"
            conn.execute(messages.update().where(message).values(status=status, reply=reply, error=error))
        else:
            conn.execute(messages.delete().where(message))


def take_reply(settings: Settings, message_id: int) -> Row | None:
    """The answer to a call once it has one, deleting it; ``{"status": "queued"}`` while it waits;
    None if the message is gone (the tracker left the registry)."""
    with _write(settings) as conn:
        row = (
            conn.execute(
                sa.select(messages.c.status, messages.c.reply, messages.c.error).where(
                    messages.c.id == message_id
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        if row["status"] != "queued":
            conn.execute(messages.delete().where(messages.c.id == message_id))
        return dict(row)


def reply_ready(settings: Settings, message_id: int) -> bool:
    """Whether a call has been answered or is gone (a cheap read for the caller's wait)."""
    stmt = sa.select(messages.c.status).where(messages.c.id == message_id)
    return _read(settings, lambda conn: conn.execute(stmt).scalar_one_or_none()) != "queued"


def withdraw(settings: Settings, message_id: int) -> bool:
    """Take back a call nobody answered in time; False if it was handled meanwhile."""
    with _write(settings) as conn:
        deleted = conn.execute(
            messages.delete().where(messages.c.id == message_id, messages.c.status == "queued")
        ).rowcount
        return deleted == 1


def signals(settings: Settings, worker_id: str) -> list[tuple[int, int, str | None, bool]]:
    """``(row id, epoch, stop reason, has mail)`` of this worker process's trackers that were asked
    to stop or have messages waiting."""
    stmt = sa.select(
        trackers.c.id,
        trackers.c.epoch,
        trackers.c.stop_reason,
        (trackers.c.last_message_id > trackers.c.handled_message_id).label("mail"),
    ).where(
        trackers.c.worker_id == worker_id,
        trackers.c.status == "running",
        sa.or_(
            trackers.c.stop_reason.is_not(None), trackers.c.last_message_id > trackers.c.handled_message_id
        ),
    )
    return _read(
        settings, lambda conn: [(r.id, r.epoch, r.stop_reason, bool(r.mail)) for r in conn.execute(stmt)]
    )


def listen_for_wakeups(
    settings: Settings, on_wake: Callable[[int, str], None], stopped: threading.Event
) -> None:
    """Call ``on_wake(row id, why)`` for every wake-up notification until ``stopped`` (PostgreSQL with
    psycopg 3 only: elsewhere it returns at once and control polling alone wakes trackers).
    Reconnects after a failure; a notification missed meanwhile is found by the control poll."""
    url = sa.make_url(settings.database_url)
    if url.get_backend_name() != "postgresql":
        return
    listener = sa.create_engine(
        url,
        poolclass=sa.NullPool,
        connect_args={"application_name": f"tracking-{os.getpid()}-listen", "connect_timeout": 5},
    )
    try:
        while not stopped.is_set():
            try:
                raw = listener.raw_connection()
            except (sa_exc.DBAPIError, listener.dialect.loaded_dbapi.Error) as exc:
                # raw_connection() raises the driver's own error, not wrapped in DBAPIError.
                log.warning("wake-up listener cannot connect: %s", redact_url(str(getattr(exc, "orig", exc))))
                stopped.wait(1.0)
                continue
            try:
                driver: Any = raw.driver_connection
                if not hasattr(driver, "notifies"):
                    return  # not psycopg 3
                driver.autocommit = True
                driver.execute(f"LISTEN {WAKE_CHANNEL}")
                while not stopped.is_set():
                    for note in driver.notifies(timeout=1.0):
                        row_id, _, why = note.payload.partition(":")
                        if row_id.isdigit():
                            on_wake(int(row_id), why)
            except Exception as exc:  # the connection broke: reconnect
                log.warning("wake-up listener lost its connection: %s", redact_url(str(exc)))
                stopped.wait(1.0)
            finally:
                raw.close()
    finally:
        listener.dispose()


# -- worker leases --------------------------------------------------------------------------------


def register_worker(settings: Settings, worker_id: str, hostname: str, pid: int) -> None:
    """Record a worker process start: the lease all its trackers share."""
    with _write(settings) as conn:
        conn.execute(
            workers.insert().values(
                id=worker_id,
                hostname=hostname,
                pid=pid,
                status="alive",
                started_at=db_now(),
                heartbeat_at=db_now(),
            )
        )


def renew_worker(settings: Settings, worker_id: str) -> bool:
    """Renew a worker process's lease; False if a supervisor already declared it lost.

    Atomicity: one conditional update; a supervisor's "lost" update on the same row is serialized
    with it, so either the renewal lands first (and the worker is not lost) or it fails.
    """
    with _write(settings) as conn:
        result = conn.execute(
            workers.update()
            .where(workers.c.id == worker_id, workers.c.status == "alive")
            .values(heartbeat_at=db_now())
        )
        return result.rowcount == 1


def retire_worker(settings: Settings, worker_id: str) -> None:
    """A worker process that exits cleanly gives up its lease."""
    with _write(settings) as conn:
        conn.execute(
            workers.update()
            .where(workers.c.id == worker_id, workers.c.status == "alive")
            .values(status="stopped")
        )


# -- supervision ----------------------------------------------------------------------------------


def mark_lost_workers(settings: Settings) -> tuple[int, list[str]]:
    """Declare lost every worker process whose lease expired by the database clock.

    Returns how many were declared lost now, and the IDs of all lost or stopped worker rows (whose
    running entries are orphans).
    """
    expired = (workers.c.status == "alive", workers.c.heartbeat_at < db_now(-settings.lease_seconds))
    with _write(settings) as conn:
        newly = conn.execute(workers.update().where(*expired).values(status="lost")).rowcount
        ids = conn.execute(sa.select(workers.c.id).where(workers.c.status.in_(["lost", "stopped"])))
        return newly, [r.id for r in ids]


def orphans(settings: Settings, worker_ids: Sequence[str], limit: int = 1000) -> list[Row]:
    """Running entries owned by the given (lost or stopped) worker processes."""
    if not worker_ids:
        return []
    stmt = _tracker_with_lease.where(
        trackers.c.status == "running", trackers.c.worker_id.in_(list(worker_ids))
    ).limit(limit)
    return _read(settings, lambda conn: _rows(conn, stmt))


def forget_workers(settings: Settings, worker_ids: Sequence[str]) -> None:
    """Delete lost or stopped worker rows that no longer own a running entry."""
    if not worker_ids:
        return
    owning = sa.select(trackers.c.id).where(
        trackers.c.worker_id == workers.c.id, trackers.c.status == "running"
    )
    with _write(settings) as conn:
        conn.execute(
            workers.delete().where(
                workers.c.id.in_(list(worker_ids)),
                workers.c.status != "alive",
                ~sa.exists(owning),
            )
        )


def restart_orphan(settings: Settings, row: Row) -> tuple[Decision, Row | None] | None:
    """Apply the restart policy to an entry whose worker was lost; None if it moved on meanwhile.

    A stop with reason normal or shutdown requested before the loss is honoured: deregistered.
    """
    with _write(settings) as conn:
        current = _one(
            conn, *_fence(row["id"], row["epoch"]), trackers.c.worker_id == row["worker_id"], lock=True
        )
        if current is None:
            return None
        if current["stop_reason"] in ("normal", "shutdown"):
            conn.execute(trackers.delete().where(*_fence(row["id"], row["epoch"])))
            _forget_mail(conn, current)
            _event(conn, current, "stopped", f"stop({current['stop_reason']!r}); its worker was lost")
            return Decision(Action.DEREGISTER), None
        return _after_exit(
            settings,
            conn,
            current,
            "worker_lost",
            f"worker {current['worker']} stopped renewing its lease",
            normal=False,
        )


def due(settings: Settings, limit: int = 1000) -> list[Row]:
    """Pending entries nobody claimed in time, and failed entries whose backoff is over."""
    stmt = (
        _tracker_with_lease.where(trackers.c.status.in_(["pending", "failed"]), trackers.c.due_at <= db_now())
        .order_by(trackers.c.due_at)
        .limit(limit)
    )
    return _read(settings, lambda conn: _rows(conn, stmt))


def take_due(settings: Settings, row: Row) -> Row | None:
    """Claim a due entry for publishing: pending again with a fresh grace period.

    Conditional on epoch, status and due_at, so of two supervisors only one publishes it.
    """
    with _write(settings) as conn:
        result = conn.execute(
            trackers.update()
            .where(trackers.c.id == row["id"], trackers.c.epoch == row["epoch"])
            .where(trackers.c.status == row["status"], trackers.c.due_at <= db_now())
            .values(status="pending", due_at=db_now(settings.start_grace_seconds))
        )
        if result.rowcount != 1:
            return None
        new = _one(conn, trackers.c.id == row["id"])
        assert new is not None
        _event(conn, new, "republished" if row["status"] == "pending" else "restarting")
        return new


def restart_now(settings: Settings, row_id: int, epoch: int) -> Row | None:
    """Turn a failed entry pending at once (its backoff timer fired); None if it moved on."""
    with _write(settings) as conn:
        result = conn.execute(
            trackers.update()
            .where(trackers.c.id == row_id, trackers.c.epoch == epoch, trackers.c.status == "failed")
            .values(status="pending", due_at=db_now(settings.start_grace_seconds))
        )
        if result.rowcount != 1:
            return None
        return _one(conn, trackers.c.id == row_id)


def next_wake(settings: Settings) -> float | None:
    """Seconds until the earliest parked entry is due (negative: overdue); None if none is parked."""
    soonest = sa.select(sa.func.min(trackers.c.due_at)).where(trackers.c.status == "parked")

    def query(conn: sa.Connection) -> float | None:
        row = conn.execute(sa.select(soonest.scalar_subquery(), db_now())).one()
        due, now = _aware(row[0]), _aware(row[1])
        return None if due is None or now is None else (due - now).total_seconds()

    return _read(settings, query)


def wake_parked(settings: Settings, limit: int = 500) -> list[Row]:
    """Make due parked entries pending, each under a new epoch and task ID; returns them to publish.

    No event is recorded (a parked tracker wakes at every tick). Atomicity: one transaction; on
    PostgreSQL the due rows are locked with SKIP LOCKED, so concurrent wakers split the work, and
    every update is conditional on the epoch, so no entry is woken twice.
    """
    stmt = (
        sa.select(trackers.c.id, trackers.c.epoch)
        .where(trackers.c.status == "parked", trackers.c.due_at <= db_now())
        .order_by(trackers.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with _write(settings) as conn:
        due_rows = conn.execute(stmt).all()
        if not due_rows:
            return []
        values = {
            "status": "pending",
            "epoch": trackers.c.epoch + 1,
            "task_id": sa.bindparam("b_task"),
            "due_at": db_now(settings.start_grace_seconds),
        }
        conn.execute(
            trackers.update()
            .where(trackers.c.id == sa.bindparam("b_id"), trackers.c.epoch == sa.bindparam("b_epoch"))
            .where(trackers.c.status == "parked")
            .values(values),
            [{"b_id": r.id, "b_epoch": r.epoch, "b_task": new_task_id()} for r in due_rows],
        )
        woken = sa.select(trackers.c.kind, trackers.c.transaction_id, trackers.c.epoch, trackers.c.task_id)
        ids = [r.id for r in due_rows]
        return _rows(conn, woken.where(trackers.c.id.in_(ids), trackers.c.status == "pending"))


def record_sweep(settings: Settings, name: str, counts: dict[str, int]) -> None:
    with _write(settings) as conn:
        stmt = _insert(conn)(supervisors).values(name=name, last_sweep_at=db_now(), last_counts=counts)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[supervisors.c.name],
                set_={"last_sweep_at": db_now(), "last_counts": counts},
            )
        )
        # Supervisors are named per process; forget the ones that have not swept for a day.
        conn.execute(supervisors.delete().where(supervisors.c.last_sweep_at < db_now(-86400)))


def last_sweeps(settings: Settings) -> list[Row]:
    rows = _read(settings, lambda conn: _rows(conn, sa.select(supervisors).order_by(supervisors.c.name)))
    for row in rows:
        row["last_sweep_at"] = _aware(row["last_sweep_at"])
    return rows


def database_now(settings: Settings) -> datetime:
    return _read(settings, _now)


# -- metrics (tracking.contrib.prometheus) ----------------------------------------------------------
#
# Counters come from tracking_events, which only grows: a scrape reads the events after the last one
# it counted (a range of the primary key), never the whole table again.


def census(settings: Settings) -> list[tuple[str, str, int]]:
    """``(kind, status, entries)`` for every kind and status present in the registry.

    One aggregate over the registry (its live entries, not its history).
    """
    stmt = sa.select(trackers.c.kind, trackers.c.status, sa.func.count()).group_by(
        trackers.c.kind, trackers.c.status
    )
    return _read(settings, lambda conn: [(r[0], r[1], int(r[2])) for r in conn.execute(stmt)])


def settled_event_id(settings: Settings, after: int, settle_seconds: float) -> int:
    """The highest event ID up to which the events after ``after`` can be counted once and for all.

    Event IDs are taken when an event is written but become visible when its transaction commits, so
    a recent event may still be hidden behind a lower ID. Settled are the events older than
    ``settle_seconds`` (by the database clock) below the first recent one: a registry transaction
    that stays open longer than that could still be missed. Returns ``after`` when there is nothing
    new. One statement over the new events (primary key range).
    """
    recent = (
        sa.select(sa.func.min(events.c.id))
        .where(events.c.id > after, events.c.at > db_now(-settle_seconds))
        .scalar_subquery()
    )
    stmt = sa.select(sa.func.max(events.c.id)).where(
        events.c.id > after, events.c.id < sa.func.coalesce(recent, 2**62)
    )
    return _read(settings, lambda conn: int(conn.execute(stmt).scalar_one_or_none() or after))


def count_events(
    settings: Settings, after: int, upto: int, names: Sequence[str]
) -> list[tuple[str, str, int]]:
    """``(kind, event, count)`` of the events named ``names`` with ``after < id <= upto``.

    One statement over that primary key range.
    """
    stmt = (
        sa.select(events.c.kind, events.c.event, sa.func.count())
        .where(events.c.id > after, events.c.id <= upto, events.c.event.in_(list(names)))
        .group_by(events.c.kind, events.c.event)
    )
    return _read(settings, lambda conn: [(r[0], r[1], int(r[2])) for r in conn.execute(stmt)])


def count_restarts(settings: Settings, after: int, upto: int) -> list[tuple[str, int]]:
    """``(kind, restarts)`` decided by the events with ``after < id <= upto``.

    A restart is recorded as ``restarting`` (at once) or ``backoff`` (after a delay); when the delay
    is over the supervisor records ``restarting`` again for the same restart, which is not counted:
    a ``restarting`` event right after the tracker's ``backoff`` event. One statement over that
    primary key range, with one index lookup (kind, transaction ID) per ``restarting`` event.
    """
    previous = events.alias("previous")
    previous_event = (
        sa.select(previous.c.event)
        .where(
            previous.c.kind == events.c.kind,
            previous.c.transaction_id == events.c.transaction_id,
            previous.c.id < events.c.id,
        )
        .order_by(previous.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    is_restart = sa.or_(
        events.c.event == "backoff",
        sa.and_(events.c.event == "restarting", sa.func.coalesce(previous_event, "") != "backoff"),
    )
    stmt = (
        sa.select(events.c.kind, sa.func.count())
        .where(events.c.id > after, events.c.id <= upto, events.c.event.in_(["restarting", "backoff"]))
        .where(is_restart)
        .group_by(events.c.kind)
    )
    return _read(settings, lambda conn: [(r[0], int(r[1])) for r in conn.execute(stmt)])


def recoveries(settings: Settings, after: int, upto: int) -> list[tuple[str, float]]:
    """``(kind, seconds)`` from a lost worker to the restarted incarnation running, for each
    ``running`` event with ``after < id <= upto`` of epoch e + 1 whose tracker's epoch e ended with
    ``worker_lost`` (in the same life of the entry: no ``started`` event between the two).

    One statement over that primary key range, with index lookups (kind, transaction ID) per
    ``running`` event of a restarted incarnation.
    """
    lost = events.alias("lost")
    started = events.alias("started")
    restarted_since = (
        sa.exists()
        .where(
            started.c.kind == events.c.kind,
            started.c.transaction_id == events.c.transaction_id,
            started.c.event == "started",
            started.c.id > lost.c.id,
            started.c.id < events.c.id,
        )
        .correlate(events, lost)
    )
    lost_at = (
        sa.select(lost.c.at)
        .where(
            lost.c.kind == events.c.kind,
            lost.c.transaction_id == events.c.transaction_id,
            lost.c.id < events.c.id,
            lost.c.epoch == events.c.epoch - 1,
            lost.c.event == "worker_lost",
            ~restarted_since,
        )
        .order_by(lost.c.id.desc())
        .limit(1)
        .correlate(events)
        .scalar_subquery()
    )
    running = (
        sa.select(events.c.kind, lost_at.label("lost_at"), events.c.at.label("running_at"))
        .where(events.c.id > after, events.c.id <= upto)
        .where(events.c.event == "running", events.c.epoch > 1)
        .subquery()
    )
    stmt = sa.select(running.c.kind, running.c.lost_at, running.c.running_at).where(
        running.c.lost_at.is_not(None)
    )

    def query(conn: sa.Connection) -> list[tuple[str, float]]:
        found: list[tuple[str, float]] = []
        for kind, lost_at_, running_at in conn.execute(stmt):
            began, ended = _aware(lost_at_), _aware(running_at)
            assert began is not None and ended is not None
            found.append((kind, max(0.0, (ended - began).total_seconds())))
        return found

    return _read(settings, query)


def entries_of(settings: Settings, transaction_id: str) -> list[Row]:
    """Every kind's entry for a transaction ID (``tracking explain`` without ``--kind``).

    The unique key leads with the kind, so this reads the whole registry on databases that cannot
    skip-scan an index: an operator's query, not one for hot paths (pass the kind there).
    """
    stmt = _tracker_with_lease.where(trackers.c.transaction_id == transaction_id).order_by(trackers.c.kind)
    return _read(settings, lambda conn: _rows(conn, stmt))
