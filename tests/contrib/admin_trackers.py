"""Trackers the Django admin's tests run beside the example project's (the workers import both)."""

from __future__ import annotations

import time
from typing import Any

import tracking


class TemporaryTicker(tracking.Tracker):
    """Ticks until stopped; temporary, so an abnormal exit ("Restart now") leaves it dead."""

    kind = "temporary_ticker"
    restart = "temporary"
    interval = 0.2

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"ticks": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        state["ticks"] += 1
        return state


class SlowTicker(tracking.Tracker):
    """Each tick takes ``tick_seconds`` (a start argument): a stop waits for the tick in progress."""

    kind = "slow_ticker"
    interval = 0.05
    park = False

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"ticks": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        time.sleep(float(self.args["tick_seconds"]))  # a slow source
        state["ticks"] += 1
        return state
