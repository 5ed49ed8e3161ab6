"""Trackers the integration tests run on real workers."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ClassVar

import sqlalchemy as sa

import tracking
from tracking import registry, signals


def counted(state: dict[str, Any]) -> dict[str, Any]:
    """One more tick in ``state``; Done once it has ``until`` ticks (a start argument), if given."""
    state["ticks"] += 1
    if "until" in state and state["ticks"] >= state["until"]:
        raise tracking.Done(state)
    return state


class Counter(tracking.Tracker):
    """Counts its ticks; ``until=n`` finishes after n ticks."""

    interval = 0.1

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"transaction_id": transaction_id, "ticks": 0, **args}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        return counted(state)


class SlowCounter(Counter):
    """A long interval: stop must not wait for it (it stays running: no parking)."""

    interval = 60.0
    park = False


class Sparse(Counter):
    """Parks between ticks, one tick a second: holds a worker slot only while it ticks."""

    interval = 1.0
    park = True


class Crasher(tracking.Tracker):
    """Raises on every tick."""

    interval = 0.05
    max_restarts, max_seconds = 3, 60
    backoff, backoff_max = 0.1, 0.4

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"ticks": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("the source is on fire")


class TemporaryCrasher(Crasher):
    restart = "temporary"


class PermanentFinisher(tracking.Tracker):
    """Finishes normally after two ticks; being permanent, it is restarted each time."""

    interval = 0.05
    restart = "permanent"
    max_restarts, max_seconds = 100, 60
    backoff, backoff_max = 0.05, 0.1

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"ticks": 0, "finished": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        state["ticks"] += 1
        if state["ticks"] % 2 == 0:
            state["finished"] += 1
            raise tracking.Done(state)
        return state


class BadState(tracking.Tracker):
    """Returns a state that is not JSON on its third tick."""

    interval = 0.05
    max_restarts = 0

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"ticks": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        state["ticks"] += 1
        if state["ticks"] == 3:
            return {"ticks": state["ticks"], "when": {1, 2, 3}}
        return state


TICKS_TABLE = "test_ticks"


def create_ticks_table(engine: sa.Engine) -> None:
    """The side table the Recorder writes its ticks to, with their fencing token."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS {TICKS_TABLE} (id bigserial PRIMARY KEY, txid text NOT NULL, "
                "epoch bigint NOT NULL, pid int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
        else:
            conn.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS {TICKS_TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "txid TEXT NOT NULL, epoch INTEGER NOT NULL, pid INTEGER NOT NULL, "
                "at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')))"
            )


# A side effect fenced by the tracker's token: it lands only while this incarnation owns the entry.
FENCED_TICK = sa.text(
    f"INSERT INTO {TICKS_TABLE} (txid, epoch, pid) SELECT :txid, :epoch, :pid WHERE EXISTS ("
    "SELECT 1 FROM tracking_trackers WHERE kind = :kind AND transaction_id = :txid "
    "AND epoch = :epoch AND status = 'running')"
)


class Recorder(tracking.Tracker):
    """Records every tick, with its token, in a side table (a fenced effect)."""

    interval = 0.1
    max_restarts, max_seconds = 50, 60

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"ticks": 0, **args}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        from tracking import registry
        from tracking.celery import current_settings

        with registry.engine(current_settings()).begin() as conn:
            conn.execute(
                FENCED_TICK,
                {"txid": self.transaction_id, "epoch": self.token, "pid": os.getpid(), "kind": self.kind},
            )
        return counted(state)


class SlowRecorder(Recorder):
    """A Recorder at one tick every two seconds, for runs with hundreds of trackers."""

    interval = 2.0
    max_restarts, max_seconds = 20, 60


class Mailman(tracking.Tracker):
    """Ticks once a minute, running all along; records the casts it handles and answers calls."""

    interval = 60.0
    park: ClassVar[bool | None] = False
    max_restarts, max_seconds = 20, 60

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"seen": [], "ticks": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        state["ticks"] += 1
        return state

    def handle_cast(self, message: Any, state: dict[str, Any]) -> dict[str, Any]:
        state["seen"].append(message["n"])
        return state

    def handle_call(self, message: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if message == "seen":
            return state["seen"], state
        if isinstance(message, dict) and "sleep" in message:
            import time

            time.sleep(message["sleep"])
            return "slept", state
        if message == "boom":
            raise RuntimeError("the handler blew up")
        if message == "self":
            return type(self).call(self.transaction_id, "seen"), state
        return {"echo": message}, state


class ParkedMailman(Mailman):
    """A Mailman that ticks every five minutes and so parks by default (TRACKING_PARK_SECONDS)."""

    interval = 300.0
    park = None


# -- edge cases of shutdown, stop and worker loss (tests/chaos/test_edges.py, test_double_finish.py) --

#: every tick of a TimedTicker: its number (from the state), token, process and wall-clock span
EDGE_TICKS_TABLE = "test_edge_ticks"
#: the "finished" side effect a GatedFinisher writes in its final tick, with its token (unfenced)
FINISHES_TABLE = "test_edge_finishes"
#: a GatedFinisher's final tick records here that it waits ("waiting", with its token); the test
#: inserts "open" to let it go on
GATES_TABLE = "test_edge_gates"


def create_edge_tables(engine: sa.Engine) -> None:
    """The side tables of the edge-case trackers (times are ``time.time()`` of the writer: one host)."""
    serial = "bigserial" if engine.dialect.name == "postgresql" else "INTEGER"
    auto = "" if engine.dialect.name == "postgresql" else " AUTOINCREMENT"
    real = "double precision" if engine.dialect.name == "postgresql" else "REAL"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {EDGE_TICKS_TABLE} (id {serial} PRIMARY KEY{auto}, "
            f"txid TEXT NOT NULL, tick INTEGER NOT NULL, epoch BIGINT NOT NULL, pid INTEGER NOT NULL, "
            f"started {real} NOT NULL, ended {real})"
        )
        conn.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {FINISHES_TABLE} (id {serial} PRIMARY KEY{auto}, "
            f"txid TEXT NOT NULL, epoch BIGINT NOT NULL, pid INTEGER NOT NULL, at {real} NOT NULL, "
            "current INTEGER NOT NULL)"
        )
        conn.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {GATES_TABLE} (txid TEXT NOT NULL, what TEXT NOT NULL, epoch BIGINT)"
        )


def _edge_engine() -> sa.Engine:
    from tracking import registry
    from tracking.celery import current_settings

    return registry.engine(current_settings())


class TimedTicker(tracking.Tracker):
    """Ticks back to back, each tick ``tick_seconds`` (start argument, default 3) long, and records
    each one's number, token and start and end times in EDGE_TICKS_TABLE (unfenced: what ran).

    ``outcome`` says how a tick ends: None returns the state, "crash" raises, "done" raises Done.
    """

    interval = 0.1
    park = False
    max_restarts, max_seconds = 50, 60
    backoff, backoff_max = 0.05, 0.1
    outcome: str | None = None

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"ticks": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        import time

        number = state["ticks"] + 1
        with _edge_engine().begin() as conn:
            row_id = conn.execute(
                sa.text(
                    f"INSERT INTO {EDGE_TICKS_TABLE} (txid, tick, epoch, pid, started) "
                    "VALUES (:txid, :tick, :epoch, :pid, :started) RETURNING id"
                ),
                {
                    "txid": self.transaction_id,
                    "tick": number,
                    "epoch": self.token,
                    "pid": os.getpid(),
                    "started": time.time(),
                },
            ).scalar_one()
        try:
            time.sleep(float(self.args.get("tick_seconds", 3.0)))
        finally:
            with _edge_engine().begin() as conn:
                conn.execute(
                    sa.text(f"UPDATE {EDGE_TICKS_TABLE} SET ended = :ended WHERE id = :id"),
                    {"ended": time.time(), "id": row_id},
                )
        state["ticks"] = number
        if self.outcome == "crash":
            raise RuntimeError(f"tick {number} crashed on purpose")
        if self.outcome == "done":
            raise tracking.Done(state)
        return state


class SlowCrasher(TimedTicker):
    """A transient tracker whose every (slow) tick crashes; restarts are allowed."""

    outcome = "crash"


class SlowPermanentFinisher(TimedTicker):
    """A permanent tracker whose every (slow) tick raises Done: it is restarted each time."""

    restart = "permanent"
    outcome = "done"


class LossRecorder(Recorder):
    """A Recorder with room for many restarts and a real backoff (which a worker loss must not pay)."""

    interval = 0.2
    park = False
    max_restarts, max_seconds = 20, 60
    backoff, backoff_max = 1.0, 60.0


# The finish, unfenced, with whether a write fenced by the registry (like FENCED_TICK) would have
# landed: the entry was still running under this token when it was written.
FINISH = sa.text(
    f"INSERT INTO {FINISHES_TABLE} (txid, epoch, pid, at, current) SELECT :txid, :epoch, :pid, :at, "
    "CASE WHEN EXISTS (SELECT 1 FROM tracking_trackers WHERE kind = :kind AND transaction_id = :txid "
    "AND epoch = :epoch AND status = 'running') THEN 1 ELSE 0 END"
)


class GatedFinisher(tracking.Tracker):
    """Finishes at tick ``until`` (start argument, default 3). Its final tick writes a "finished" row
    with its token (unfenced) to FINISHES_TABLE and raises Done; it waits for the test to open its
    gate (a row in GATES_TABLE; at most 60 s) before the write (``gate="before"``) or after it
    (``gate="after"``, the default), so that a test can kill or pause the worker at that point.
    """

    interval = 0.2
    park = False
    max_restarts, max_seconds = 20, 60
    backoff, backoff_max = 0.05, 0.1

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"ticks": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        import time

        state["ticks"] += 1
        if state["ticks"] < int(self.args.get("until", 3)):
            return state
        gate = self.args.get("gate", "after")
        if gate == "before":
            self._wait_for_gate()
        finish = {
            "txid": self.transaction_id,
            "epoch": self.token,
            "pid": os.getpid(),
            "at": time.time(),
            "kind": self.kind,
        }
        _patiently(lambda: _execute(FINISH, finish))
        if gate == "after":
            self._wait_for_gate()
        raise tracking.Done(state)

    def _wait_for_gate(self) -> None:
        import time

        waiting = sa.text(f"INSERT INTO {GATES_TABLE} (txid, what, epoch) VALUES (:t, 'waiting', :e)")
        _patiently(lambda: _execute(waiting, {"t": self.transaction_id, "e": self.token}))
        deadline = time.monotonic() + 60
        query = sa.text(f"SELECT count(*) FROM {GATES_TABLE} WHERE txid = :t AND what = 'open'")
        while time.monotonic() < deadline:
            if _patiently(lambda: _execute(query, {"t": self.transaction_id})):
                return
            time.sleep(0.05)


def _execute(statement: sa.TextClause, params: dict[str, Any]) -> int:
    """Run one statement in a transaction of its own; returns the first column of its first row
    (0 if it returns none)."""
    with _edge_engine().begin() as conn:
        result = conn.execute(statement, params)
        return int(result.scalar() or 0) if result.returns_rows else 0


def _patiently(action: Any) -> Any:
    """Run ``action``, again after a database error: a tick resumed after a long pause may find its
    pooled connection closed by the server, and goes on as a real tracker would."""
    import time

    for _ in range(20):
        try:
            return action()
        except sa.exc.DBAPIError:
            time.sleep(0.2)
    return action()


SIGNALS_TABLE = "test_signals"


def create_signals_table(engine: sa.Engine) -> None:
    """The side table the receivers below write every tracking signal to."""
    serial = "bigserial" if engine.dialect.name == "postgresql" else "INTEGER"
    auto = "" if engine.dialect.name == "postgresql" else " AUTOINCREMENT"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {SIGNALS_TABLE} (id {serial} PRIMARY KEY{auto}, "
            "signal TEXT NOT NULL, kind TEXT NOT NULL, txid TEXT NOT NULL, epoch BIGINT NOT NULL, "
            "detail TEXT, pid INTEGER NOT NULL)"
        )


def _record_signal(sender: str, signal: signals.Signal, **kwargs: Any) -> None:
    """Every tracking signal, in whatever process sends it, into the signals table (if the registry
    of this process has one: only stacks created with it do)."""
    detail = kwargs.get("cause") or kwargs.get("reason")
    if "exception" in kwargs:
        detail = type(kwargs["exception"]).__name__
    try:
        with registry.engine(tracking.celery.current_settings()).begin() as conn:
            if not sa.inspect(conn).has_table(SIGNALS_TABLE):
                return
            conn.execute(
                sa.text(
                    f"INSERT INTO {SIGNALS_TABLE} (signal, kind, txid, epoch, detail, pid) "
                    "VALUES (:signal, :kind, :txid, :epoch, :detail, :pid)"
                ),
                {
                    "signal": signal.name,
                    "kind": sender,
                    "txid": kwargs["transaction_id"],
                    "epoch": kwargs["epoch"],
                    "detail": detail,
                    "pid": os.getpid(),
                },
            )
    except sa.exc.DBAPIError:  # a registry being torn down at the end of a test
        pass


for _signal in (
    signals.tracker_started,
    signals.tracker_crashed,
    signals.tracker_restarted,
    signals.tracker_dead,
    signals.tracker_done,
):
    _signal.connect(_record_signal)


class CrashesTwiceThenFinishes(tracking.Tracker):
    """Crashes in its first two incarnations, then finishes (the incarnation is its token)."""

    interval = 0.05
    max_restarts, max_seconds = 10, 60
    backoff, backoff_max = 0.05, 0.1

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        if self.token <= 2:
            raise RuntimeError(f"incarnation {self.token} crashes")
        raise tracking.Done(state)


#: the side tables a stack may hold (``pytest.mark.stacks(..., tables=("ticks", "edges"))``): how
#: to create them, and their names
SIDE_TABLES: dict[str, tuple[Callable[[sa.Engine], None], tuple[str, ...]]] = {
    "ticks": (create_ticks_table, (TICKS_TABLE,)),
    "edges": (create_edge_tables, (EDGE_TICKS_TABLE, FINISHES_TABLE, GATES_TABLE)),
    "signals": (create_signals_table, (SIGNALS_TABLE,)),
}


class Batched(tracking.Tracker):
    """Parked five minutes between ticks: after its first tick it ticks only when a test makes it
    due, and then in a batch. Its start argument ``then`` says what its ticks do: "tick", "crash"
    (it is dead at once: no restarts) or "done". Each tick records the Celery task it ran in."""

    interval = 300.0
    park = True
    max_restarts = 0

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"ticks": 0, "then": args.get("then", "tick"), "task": None}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        return _batched_tick(state, self.token, [self.transaction_id])


class BulkBatched(Batched):
    """A Batched whose batches are ticked by ``tick_many``: each state records which trackers the
    hook saw together, and the token each was seen with."""

    @classmethod
    def tick_many(cls, due: list[tuple[BulkBatched, dict[str, Any]]]) -> list[dict[str, Any] | BaseException]:
        seen = sorted(tracker.transaction_id for tracker, _ in due)
        outcomes: list[dict[str, Any] | BaseException] = []
        for tracker, state in due:
            try:
                outcomes.append(_batched_tick(state, tracker.token, seen))
            except Exception as exc:  # Done included: an outcome of that entry alone
                outcomes.append(exc)
        return outcomes


def _batched_tick(state: dict[str, Any], token: int, seen: list[str]) -> dict[str, Any]:
    from celery import current_task

    state = {**state, "ticks": state["ticks"] + 1, "token": token, "seen": seen}
    state["task"] = current_task.name if current_task is not None else None
    if state["then"] == "crash" and state["ticks"] > 1:
        raise RuntimeError("crash asked for")
    if state["then"] == "done" and state["ticks"] > 1:
        raise tracking.Done(state)
    return state


class Limited(Counter):
    """Would tick a hundred times a second each; its kind may tick 20 times a second in all."""

    interval = 0.01
    park = False
    rate_limit = 20.0


class LimitedParked(Counter):
    """Parked trackers ticked in batches, due every second each; the kind may tick 20 times a
    second in all."""

    interval = 1.0
    park = True
    rate_limit = 20.0


class ParkedRecorder(Recorder):
    """A Recorder that parks between ticks a second apart: woken and ticked in batches of 20."""

    interval = 1.0
    park = True
    batch_size = 20
