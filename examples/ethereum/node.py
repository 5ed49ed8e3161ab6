"""The Ethereum node as the trackers see it: one JSON-RPC batch per poll, over web3.py's HTTP provider.

``Node.poll`` asks, in one HTTP request, for the next nonce of every sender, the receipt of every
transaction and the head block, in that order (so that a receipt missing in the answer was still
missing after its sender's nonce was read, and the head is at least the block of every receipt
found). ``Node.calls`` counts the HTTP requests made to the node: the source calls.

Failures come in two kinds:

- ``NodeUnreachable``: no answer at all (connection refused or reset, a timeout). The node is down
  or restarting; what the trackers know is still true, so they treat it as no news.
- ``NodeError``: an answer that is not what JSON-RPC promises (an HTTP error status, not a batch,
  a reply missing), or an error object for one request (raised for that transaction alone).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterable
from typing import Any

import requests  # type: ignore[import-untyped, import-not-found, unused-ignore]
from web3 import HTTPProvider  # type: ignore[import-not-found, unused-ignore]

#: where the node listens unless ETHEREUM_NODE_URL says otherwise (Ganache's default port)
DEFAULT_URL = "http://127.0.0.1:8545"
#: seconds to wait for the node's answer before treating it as unreachable
TIMEOUT = 5.0


class NodeUnreachable(Exception):
    """The node did not answer: down, restarting, or too slow."""


class NodeError(Exception):
    """The node answered with something other than the replies asked for."""


@dataclasses.dataclass(frozen=True)
class Answer:
    """What the node said in one poll."""

    head: int
    #: the next nonce of each sender asked about (its count of mined transactions), by address in
    #: lower case; a NodeError where the node answered that request with an error
    nonces: dict[str, int | NodeError]
    #: the receipt of each transaction asked about, or None while it is not mined, by hash; an
    #: exception where the node answered that request with an error
    receipts: dict[str, dict[str, Any] | None | NodeError]


class Node:
    """A node's JSON-RPC endpoint. Thread-safe: web3.py keeps an HTTP session per thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        # No retries: a poll that gets no answer is no news, and the next tick asks again.
        self.provider: Any = HTTPProvider(
            url, request_kwargs={"timeout": TIMEOUT}, exception_retry_configuration=None
        )
        #: HTTP requests made to the node so far (the source calls)
        self.calls = 0
        self._lock = threading.Lock()

    def poll(self, senders: Iterable[str], transactions: Iterable[str]) -> Answer:
        """The senders' nonces, the transactions' receipts and the head block, in one request."""
        senders, transactions = sorted({s.lower() for s in senders}), list(dict.fromkeys(transactions))
        batch = [("eth_getTransactionCount", [sender, "latest"]) for sender in senders]
        batch += [("eth_getTransactionReceipt", [txhash]) for txhash in transactions]
        batch.append(("eth_blockNumber", []))
        replies = self._batch(batch)
        results = [_result(reply) for reply in replies]
        head = _number(results[-1])
        if isinstance(head, NodeError):
            raise head
        nonces = {sender: _number(result) for sender, result in zip(senders, results, strict=False)}
        receipts = {
            txhash: _receipt(result)
            for txhash, result in zip(transactions, results[len(senders) : -1], strict=True)
        }
        return Answer(head, nonces, receipts)

    def _batch(self, batch: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        with self._lock:
            self.calls += 1
        try:
            raw: Any = self.provider.make_batch_request(batch)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise NodeUnreachable(f"no answer from the node: {type(exc).__name__}") from exc
        except (requests.HTTPError, ValueError) as exc:  # an error status, or not JSON
            raise NodeError(f"the node answered {exc}") from exc
        if not isinstance(raw, list) or len(raw) != len(batch):
            raise NodeError(f"the node answered {len(batch)} requests with {str(raw)[:200]}")
        replies: list[dict[str, Any]] = raw
        return replies


def _result(reply: dict[str, Any]) -> Any:
    """A reply's result, or a NodeError for a reply that carries an error (kept, not raised)."""
    if "error" in reply:
        return NodeError(f"the node refused a request: {reply['error']}")
    return reply.get("result")


def _number(result: Any) -> int | NodeError:
    if isinstance(result, NodeError):
        return result
    if not isinstance(result, str) or not result.startswith("0x"):
        return NodeError(f"the node answered {result!r} where a number was expected")
    return int(result, 16)


def _receipt(result: Any) -> dict[str, Any] | None | NodeError:
    if result is None or isinstance(result, NodeError):
        return result
    if not isinstance(result, dict) or not isinstance(result.get("blockNumber"), str):
        return NodeError(f"the node answered {str(result)[:200]} where a receipt was expected")
    return result


_nodes: dict[str, Node] = {}
_nodes_lock = threading.Lock()


def node() -> Node:
    """This process's node, at ETHEREUM_NODE_URL (default ``DEFAULT_URL``)."""
    url = os.environ.get("ETHEREUM_NODE_URL", DEFAULT_URL)
    with _nodes_lock:
        if url not in _nodes:
            _nodes[url] = Node(url)
        return _nodes[url]
