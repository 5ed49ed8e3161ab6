"""Trackers the integration tests run on real workers."""

from __future__ import annotations

from typing import Any

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
    """A long interval: stop must not wait for it."""

    interval = 60.0


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
