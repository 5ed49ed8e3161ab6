"""Send payments on a local Ganache node and start a tracker for each.

::

    python -m examples.ethereum.send --count 20 --confirmations 12 --underpriced
    python -m examples.ethereum.send --replace

The first sends ``count`` payments, each from one of Ganache's unlocked accounts (all but the last one) and,
with ``--underpriced``, one from the last account with a fee of 1 wei per gas: below any base fee,
so no block ever takes it. The second replaces that one: a payment from the last account with the
same nonce at the node's usual fee, which is mined, so the first one's tracker ends ``replaced``.
Each line printed is ``<what> <transaction hash> <sender> <nonce>``. The trackers are started with
the process's tracking settings (``TRACKING_*``, ``CELERY_BROKER_URL``), the node is
``ETHEREUM_NODE_URL``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from typing import Any

from web3 import HTTPProvider, Web3  # type: ignore[import-not-found, unused-ignore]

from examples.ethereum.node import DEFAULT_URL
from examples.ethereum.trackers import DEFAULT_CONFIRMATIONS, EthereumPayment

#: one wei per gas: below the base fee of every block (it never falls under 7 wei)
UNDERPRICED = 1
#: the gas of a plain transfer
GAS = 21_000


def connect(url: str) -> Any:
    """web3.py on the node's HTTP endpoint."""
    return Web3(HTTPProvider(url, request_kwargs={"timeout": 10}))


def payments(w3: Any, count: int) -> Iterator[tuple[str, str, int]]:
    """Send ``count`` payments of 1 gwei, each from an account of its own among all but the last
    (Ganache 7 with a block time can leave a sender's second pending transaction out of blocks for
    a while); yields (hash, from, nonce)."""
    accounts = list(w3.eth.accounts)[:-1]
    if count > len(accounts):
        raise SystemExit(f"{count} payments need {count + 1} accounts: start Ganache with more")
    for i, sender in enumerate(accounts[:count]):
        nonce = int(w3.eth.get_transaction_count(sender, "pending"))
        payment = {"from": sender, "to": accounts[(i + 1) % len(accounts)], "value": 10**9, "gas": GAS}
        txhash = w3.eth.send_transaction({**payment, "nonce": nonce})
        yield txhash.to_0x_hex(), sender, nonce


def underpriced(w3: Any) -> tuple[str, str, int]:
    """A payment from the last account that no block takes (its fee is under the base fee)."""
    sender, to = w3.eth.accounts[-1], w3.eth.accounts[0]
    nonce = int(w3.eth.get_transaction_count(sender, "pending"))
    fee = {"maxFeePerGas": UNDERPRICED, "maxPriorityFeePerGas": UNDERPRICED}
    txhash = w3.eth.send_transaction(
        {"from": sender, "to": to, "value": 10**9, "gas": GAS, "nonce": nonce, **fee}
    )
    return txhash.to_0x_hex(), sender, nonce


def replacement(w3: Any) -> tuple[str, str, int]:
    """A payment from the last account at its next mined nonce (that of an underpriced one waiting),
    at the node's usual fee: mined at the next block, it replaces the waiting one."""
    sender, to = w3.eth.accounts[-1], w3.eth.accounts[0]
    nonce = int(w3.eth.get_transaction_count(sender, "latest"))
    txhash = w3.eth.send_transaction(
        {"from": sender, "to": to, "value": 2 * 10**9, "gas": GAS, "nonce": nonce}
    )
    return txhash.to_0x_hex(), sender, nonce


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=0, help="payments to send")
    parser.add_argument("--confirmations", type=int, default=DEFAULT_CONFIRMATIONS)
    parser.add_argument("--underpriced", action="store_true", help="also send one that is never mined")
    parser.add_argument("--replace", action="store_true", help="replace the underpriced one")
    options = parser.parse_args(argv)
    w3 = connect(os.environ.get("ETHEREUM_NODE_URL", DEFAULT_URL))
    sent = [("payment", *payment) for payment in payments(w3, options.count)]
    if options.underpriced:
        sent.append(("underpriced", *underpriced(w3)))
    if options.replace:
        sent.append(("replacement", *replacement(w3)))
    for what, txhash, sender, nonce in sent:
        EthereumPayment.start(txhash, sender=sender, nonce=nonce, confirmations=options.confirmations)
        print(what, txhash, sender, nonce, flush=True)


if __name__ == "__main__":
    main()
