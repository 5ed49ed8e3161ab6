"""The example's tracker: a transaction on a simulated chain, final after enough confirmations.

Workers import this module (``TRACKING_IMPORTS=examples.flask_app.trackers``); so does the web app.
Nothing here knows about Flask.
"""

from __future__ import annotations

from typing import Any

import tracking

#: confirmations after which a transaction is final, unless the start says otherwise
DEFAULT_CONFIRMATIONS = 12


class TransactionTracker(tracking.Tracker):
    """Polls the (simulated) chain until the transaction has ``confirmations`` confirmations.

    The chain is a stand-in: one new block per poll. Replace ``new_blocks`` with a call to your
    node; if that call raises, the tracker crashes and is restarted from its last checkpoint.
    """

    kind = "transaction"
    interval = 1.0  # seconds between polls
    max_restarts, max_seconds = 5, 60

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"confirmations": 0, "required": int(args.get("confirmations", DEFAULT_CONFIRMATIONS))}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        state["confirmations"] += self.new_blocks()
        if state["confirmations"] >= state["required"]:
            raise tracking.Done(state)  # final: the tracker leaves the registry
        return state

    def new_blocks(self) -> int:
        return 1
