"""An example tracker module: payments on an Ethereum node, followed until N confirmations.

Workers import it when ``TRACKING_IMPORTS=examples.ethereum.trackers``, and reach the node at
``ETHEREUM_NODE_URL`` (default ``http://127.0.0.1:8545``). From any process with the same settings::

    from examples.ethereum.trackers import EthereumPayment

    EthereumPayment.start(tx_hash, sender="0x90f8...", nonce=7, confirmations=12)

A tracker ends (``tracking.Done``) with one of these outcomes, which ``record_outcome`` logs:

``confirmed``  mined, succeeded, and ``confirmations`` blocks deep (its block counts as one)
``reverted``   mined and as deep, but its execution failed (receipt status 0)
``replaced``   never mined, and its sender's nonce has moved past it: another transaction of the
               same sender with the same nonce (a higher fee, a cancellation) was mined instead

Parked trackers of this kind that are due together are ticked in one call of ``tick_many``, which
asks the node once for all of them (``examples.ethereum.node``: one HTTP request, one JSON-RPC
batch). ``tick`` ticks one tracker the same way.

A node that does not answer (down, restarting, a timeout) is no news, not a crash: the tick keeps
the state as it was, counts the miss in ``state["unreachable"]`` and the next tick asks again. The
tracker's knowledge is still true while the node is away, and crashing instead would spend its
restart intensity on the node's outage: with the default of 3 restarts in 5 s at a tick a second,
a node that takes more than a few seconds to come back would leave every tracker dead. An answer
that makes no sense (an error status, an error object for one transaction) is a crash, of the
batch or of that transaction's tracker alone, and its restart policy applies.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Self

import tracking
from examples.ethereum.node import Answer, Node, NodeError, NodeUnreachable, node

log = logging.getLogger(__name__)

#: confirmations after which a transaction is final, unless its start says otherwise
DEFAULT_CONFIRMATIONS = 12

Outcome = dict[str, Any] | BaseException


class Ticks:
    """The ticks of this process so far (the node counts the source calls: ``Node.calls``)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def add(self, ticks: int) -> int:
        with self._lock:
            self.count += ticks
            return self.count


ticks = Ticks()


class EthereumPayment(tracking.Tracker):
    """A transaction on an Ethereum node, until it is ``confirmations`` blocks deep or replaced.

    Start arguments: ``sender`` (the from address) and ``nonce`` (the transaction's), so that a
    replacement can be told from a transaction still waiting, and ``confirmations``.
    """

    kind = "ethereum-payment"
    interval = 1.0  # Ganache here makes a block a second; on mainnet (12 s blocks) 12 would do
    park = True  # parked between ticks: due ones are ticked in batches
    batch_size = 100  # at most this many due trackers are ticked together
    max_restarts, max_seconds = 5, 60

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        required = int(args.get("confirmations", DEFAULT_CONFIRMATIONS))
        if not isinstance(args.get("sender"), str) or not isinstance(args.get("nonce"), int) or required < 1:
            raise ValueError(f"start {transaction_id} with sender=, nonce= and confirmations= of 1 or more")
        return {"confirmations": 0, "required": required, "block": None, "unreachable": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        (outcome,) = self.tick_many([(self, state)])
        if isinstance(outcome, BaseException):
            raise outcome  # tracking.Done when final
        return outcome

    @classmethod
    def tick_many(cls, due: list[tuple[Self, dict[str, Any]]]) -> list[Outcome]:
        """One outcome per (tracker, state), in order, from one poll of the node for all of them."""
        source = node()
        try:
            answer = source.poll(
                (tracker.args["sender"] for tracker, _ in due), (tracker.transaction_id for tracker, _ in due)
            )
        except NodeUnreachable as exc:
            log.warning("%s: %d ticked, no news: %s (%s)", cls.kind, len(due), exc, _totals(len(due), source))
            return [{**state, "unreachable": state.get("unreachable", 0) + 1} for _, state in due]
        log.info("%s: %d ticked with 1 source call (%s)", cls.kind, len(due), _totals(len(due), source))
        return [_outcome(tracker, state, answer) for tracker, state in due]


def _totals(ticked: int, source: Node) -> str:
    return f"this process: {ticks.add(ticked)} ticks, {source.calls} source calls"


def _outcome(tracker: EthereumPayment, state: dict[str, Any], answer: Answer) -> Outcome:
    """The tracker's new state, a Done, or the error the node gave for its transaction."""
    receipt = answer.receipts[tracker.transaction_id]
    if isinstance(receipt, NodeError):
        return receipt
    if receipt is None:
        nonce = answer.nonces[str(tracker.args["sender"]).lower()]
        if isinstance(nonce, NodeError):
            return nonce
        if nonce > tracker.args["nonce"]:
            return _final(tracker, {**state, "outcome": "replaced", "confirmations": 0, "block": None})
        return {**state, "confirmations": 0, "block": None}  # waiting (or back in the pool after a reorg)
    block = int(receipt["blockNumber"], 16)
    new = {**state, "block": block, "confirmations": max(0, answer.head - block + 1)}
    if new["confirmations"] < state["required"]:
        return new
    return _final(tracker, {**new, "outcome": "confirmed" if receipt.get("status") == "0x1" else "reverted"})


def _final(tracker: EthereumPayment, state: dict[str, Any]) -> tracking.Done:
    record_outcome(tracker.transaction_id, state, tracker.token)
    return tracking.Done(state)


def record_outcome(transaction_id: str, state: dict[str, Any], token: int) -> None:
    """Where the outcome goes: your database (the order is paid), a webhook, another service.

    Make the write conditional on the fencing ``token`` (it grows with every restart of the
    tracker), so that an incarnation superseded while it ran cannot overwrite a newer one's write
    (see examples/trackers.py). Here it is a log line of the worker's.
    """
    log.info(
        "outcome %s %s: block %s, %d confirmations, %d ticks without an answer (token %d)",
        transaction_id,
        state["outcome"],
        state["block"],
        state["confirmations"],
        state.get("unreachable", 0),
        token,
    )
