"""Trackers the integration tests run on real workers."""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa

import tracking


class Counter(tracking.Tracker):
    """Counts its ticks; ``until=n`` finishes after n ticks."""

    interval = 0.1

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"transaction_id": transaction_id, "ticks": 0, **args}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        state["ticks"] += 1
        if "until" in state and state["ticks"] >= state["until"]:
            raise tracking.Done(state)
        return state


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
        state["ticks"] += 1
        if "until" in state and state["ticks"] >= state["until"]:
            raise tracking.Done(state)
        return state


class SlowRecorder(Recorder):
    """A Recorder at one tick every two seconds, for runs with hundreds of trackers."""

    interval = 2.0
    max_restarts, max_seconds = 20, 60


class Mailman(tracking.Tracker):
    """Ticks once a minute, running all along; records the casts it handles and answers calls."""

    interval = 60.0
    park = False
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
