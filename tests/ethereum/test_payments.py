"""The Ethereum example end to end (examples/ethereum/README.md, its blocks run as pasted against a
Ganache of the test's own): real payments confirmed N blocks deep, one never mined and replaced,
and the node killed and restarted mid-run, which the trackers ride out, on two real workers and
beat, on SQLite (embedded broker) and on PostgreSQL + Redis."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import tracking
from tests.ethereum.conftest import Ganache, readme_blocks
from tests.harness import ROOT, Cluster, Stack, wait_for
from tracking import registry
from tracking.models import events, trackers

KIND = "ethereum-payment"
pytestmark = [
    pytest.mark.ethereum,
    pytest.mark.stacks("sqlite-embedded", "postgres-redis", imports="examples.ethereum.trackers"),
]
#: what the README's send block asks for
PAYMENTS, CONFIRMATIONS = 20, 20
#: the events of a tracker that crashed, was restarted or died
FAULTS = ("crashed", "restarting", "backoff", "dead", "worker_lost")
OUTCOME = re.compile(r"outcome (0x[0-9a-f]{64}) (\w+): block (\S+), (\d+) confirmations, (\d+) ticks without")
BATCH = re.compile(rf"{KIND}: (\d+) ticked")


def run_block(text: str, stack: Stack, node: Ganache, python: bool = False) -> str:
    """A README block as pasted, from the repository root, with the stack's environment and the
    node's URL (as the README's export sets them), the venv's commands first on the PATH."""
    env = {**stack.env(), "ETHEREUM_NODE_URL": node.url}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = [sys.executable, "-c", text] if python else ["bash", "-eu", "-o", "pipefail", "-c", text]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{text}\nexited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def sent(output: str) -> dict[str, str]:
    """What the send script sent, by hash: payment, underpriced or replacement."""
    return {line.split()[1]: line.split()[0] for line in output.splitlines() if line.strip()}


def registered(stack: Stack) -> dict[str, tuple[str, dict[str, Any]]]:
    """The registered trackers of the kind, by transaction ID: status and last checkpointed state,
    read in one query (polled while the workers write)."""
    query = sa.select(trackers.c.transaction_id, trackers.c.status, trackers.c.state)
    with registry.engine(stack.settings()).connect() as conn:
        rows = conn.execute(query.where(trackers.c.kind == KIND)).all()
    return {row.transaction_id: (row.status, row.state or {}) for row in rows}


def all_registered(stack: Stack, txids: list[str], key: str) -> bool:
    """Whether every one of ``txids`` is registered and has a true ``key`` in its state."""
    found = registered(stack)
    return all(txid in found and found[txid][1].get(key) for txid in txids)


def logs(cluster: Cluster) -> str:
    return cluster.log("w1") + cluster.log("w2")


def test_payments_are_confirmed_one_is_replaced_and_a_node_restart_is_ridden_out(
    stack: Stack, ganache: Ganache
) -> None:
    from examples.ethereum.trackers import EthereumPayment

    _start_node, send, watch, replace = readme_blocks()
    stack.extra_env["ETHEREUM_NODE_URL"] = ganache.url
    with Cluster(stack) as cluster:
        cluster.start("w1", "w2", beat=True)
        assert f"--count {PAYMENTS} --confirmations {CONFIRMATIONS} --underpriced" in send.text
        first = sent(run_block(send.text, stack, ganache))
        assert sorted(first.values()) == ["payment"] * PAYMENTS + ["underpriced"]
        txids = list(first)

        # Every payment mined, none final yet: the restart comes in the middle.
        payments = [txid for txid, what in first.items() if what == "payment"]
        wait_for(lambda: all_registered(stack, payments, "block"), 60, 0.2, what="every payment mined")
        head = ganache.head()
        assert head is not None and len(EthereumPayment.lookup_many(txids)) == len(txids)
        ganache.kill()
        # Every tracker ticks without an answer at least once, and none crashes, fails or dies.
        wait_for(lambda: all_registered(stack, txids, "unreachable"), 30, 0.2, what="no news from the node")
        assert not {status for status, _ in registered(stack).values()} & {"failed", "dead"}
        listed = run_block(watch.text, stack, ganache, python=True)
        assert len(listed.splitlines()) == len(txids), listed
        ganache.start()
        assert (ganache.head() or 0) >= head, "the restarted node kept its chain"

        second = sent(run_block(replace.text, stack, ganache))
        assert list(second.values()) == ["replacement"]
        everything = txids + list(second)
        wait_for(lambda: not EthereumPayment.lookup_many(everything), 90, 0.2, what="every tracker to finish")
        log = logs(cluster)

    outcomes = {m[0]: m[1:] for m in OUTCOME.findall(log)}
    assert set(outcomes) == set(everything), "every tracker recorded its outcome: lost 0"
    for txid, (outcome, _block, confirmations, unreachable) in outcomes.items():
        what = {**first, **second}[txid]
        expected = {"payment": "confirmed", "underpriced": "replaced", "replacement": "confirmed"}[what]
        assert outcome == expected, (what, txid)
        if what == "payment":
            assert int(confirmations) >= CONFIRMATIONS
        if what != "replacement":
            assert int(unreachable) >= 1, "it was registered while the node was down"
    with registry.engine(stack.settings()).connect() as conn:
        faults = conn.execute(
            sa.select(events.c.event, sa.func.count())
            .where(events.c.kind == KIND, events.c.event.in_(FAULTS))
            .group_by(events.c.event)
        ).all()
    assert not faults, "no tracker crashed, was restarted or died"
    assert tracking.Tracker.count(kind=KIND) == 0
    report(log, len(everything))


def report(log: str, transactions: int) -> None:
    """The run's figures: ticks, and HTTP requests to the node (one per batch, answered or not)."""
    batches = [int(n) for n in BATCH.findall(log)]
    ticks, calls = sum(batches), len(batches)
    assert 0 < calls <= ticks
    print(
        f"\nethereum figures: {transactions} transactions, {CONFIRMATIONS} confirmations, "
        f"{ticks} ticks, {calls} source calls ({calls / ticks:.3f} per tick), largest batch {max(batches)}"
    )
