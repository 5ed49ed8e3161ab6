"""An example tracker module: card payments at a fake, slow and sometimes failing payment provider.

Workers import it when ``TRACKING_IMPORTS=examples.trackers`` (as ``docker-compose.yml`` sets).
From any process with the same settings (a web view, a shell, another task)::

    from examples.trackers import PaymentTracker

    ref = PaymentTracker.start("pay_123", amount_cents=4200, currency="EUR")
    PaymentTracker.lookup("pay_123")       # which worker runs it, how often it was restarted
    PaymentTracker.get_state("pay_123")    # its last checkpoint: status, polls, ...
    PaymentTracker.stop("pay_123")         # no longer interested: deregister it

Replace this module with your own: the provider client, what "final" means, and where the outcome
goes are yours.
"""

from __future__ import annotations

import logging
import random
import time
import zlib
from typing import Any

import tracking

log = logging.getLogger(__name__)

#: statuses after which the provider never changes its mind
FINAL = frozenset({"succeeded", "declined"})


class ProviderUnavailable(Exception):
    """The provider timed out or answered 5xx. The tracker lets it propagate: that is a crash, and
    the supervisor restarts the tracker from its last checkpoint."""


class FakeProvider:
    """A stand-in for a payment provider's "retrieve payment" endpoint.

    A payment is "processing" for 5 to 20 seconds (fixed per payment ID), then "succeeded", or
    "declined" when its ID ends with ``-declined``. ``failure_rate`` of the calls fail as a real
    provider's do now and then.
    """

    def __init__(self, failure_rate: float = 0.05) -> None:
        self.failure_rate = failure_rate

    def retrieve(self, payment_id: str, created_at: float) -> str:
        if random.random() < self.failure_rate:
            raise ProviderUnavailable(f"provider timed out retrieving {payment_id}")
        settles_after = 5 + zlib.crc32(payment_id.encode()) % 16
        if time.time() - created_at < settles_after:
            return "processing"
        return "declined" if payment_id.endswith("-declined") else "succeeded"


class PaymentTracker(tracking.Tracker):
    """Polls the provider until the payment succeeded or was declined, then records the outcome."""

    kind = "payment"
    interval = 2.0
    restart = "transient"
    # A provider outage of a few minutes should not make the tracker give up: at most 5 restarts in
    # any minute, with the backoff (1 s doubling up to 60 s) between them.
    max_restarts, max_seconds = 5, 60

    provider = FakeProvider()

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {
            "payment_id": transaction_id,
            "amount_cents": int(args.get("amount_cents", 0)),
            "currency": str(args.get("currency", "EUR")),
            "status": "processing",
            "polls": 0,
            "created_at": time.time(),
        }

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        state["status"] = self.provider.retrieve(state["payment_id"], state["created_at"])
        state["polls"] += 1
        if state["status"] in FINAL:
            record_outcome(state, token=self.token)
            raise tracking.Done(state)
        return state


def record_outcome(state: dict[str, Any], token: int) -> None:
    """Where the final status goes: your database, a webhook, a message to another service.

    Make the write conditional on the fencing ``token`` (it grows with every restart of the
    tracker), so that an older incarnation that wakes up late (its worker was paused past its
    lease) cannot overwrite what a newer one wrote. In SQL::

        UPDATE payments SET status = :status, tracker_token = :token
        WHERE id = :payment_id AND tracker_token <= :token
    """
    log.info(
        "payment %s %s after %d polls (%d %s, token %d)",
        state["payment_id"],
        state["status"],
        state["polls"],
        state["amount_cents"],
        state["currency"],
        token,
    )
