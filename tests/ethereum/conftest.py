"""A Ganache node of the test's own, started with the command line of examples/ethereum/README.md on
a free loopback port and a chain folder of the test's own, which it keeps across a restart.

``Ganache`` starts, kills and restarts it and asks it for its head block over plain JSON-RPC (not
through the example's code, so that a fault there cannot hide). A missing Ganache is a failure, not
a skip: ``bash scripts/setup ethereum`` installs it (the CI step does, before this one). Modules here
are marked ``ethereum``: left out of the main run, run by ``scripts/test -m ethereum``.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.blocks import ROOT, Block, page_blocks
from tests.harness import current_celery_app_restored, free_port, wait_for

README = ROOT / "examples" / "ethereum" / "README.md"
GANACHE = ROOT / "examples" / "ethereum" / "node_modules" / ".bin" / "ganache"


def readme_blocks() -> list[Block]:
    """The blocks of examples/ethereum/README.md that tests/ethereum/test_payments.py runs, in order."""
    return [
        b for b in page_blocks(README) if b.marker and b.marker.detail == "tests/ethereum/test_payments.py"
    ]


def node_command(port: int, chain: Path) -> list[str]:
    """The README's command that starts the node, on ``port`` with its chain in ``chain``."""
    block = readme_blocks()[0]
    args = shlex.split(block.text.replace("\\\n", " "))
    assert args[0] == "examples/ethereum/node_modules/.bin/ganache", block.text
    for flag, value in (("--server.port", str(port)), ("--database.dbPath", str(chain))):
        args[args.index(flag) + 1] = value  # ValueError if the README no longer sets it
    return args


class Ganache:
    """One Ganache node on a port and a chain folder of its own, as a process group of its own."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = node_command(self.port, folder / "chain")
        self.log = folder / "ganache.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Ganache:
        if not GANACHE.exists():
            pytest.fail("the Ethereum tests need Ganache: bash scripts/setup ethereum", pytrace=False)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self.head, timeout=60, interval=0.1, what=f"Ganache to answer on {self.url}")
        return self

    def head(self) -> int | None:
        """The head block's number, or None if the node does not answer."""
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"Ganache is not running:\n{self.log.read_text(errors='replace')[-2000:]}")
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}).encode()
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return int(json.load(response)["result"], 16)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, sig)
        self.process.wait(timeout=30)
        self.process = None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill(signal.SIGTERM)


@pytest.fixture
def ganache(tmp_path: Path) -> Iterator[Ganache]:
    node = Ganache(tmp_path)
    try:
        yield node.start()
    finally:
        node.close()


@pytest.fixture(scope="module", autouse=True)
def _restore_the_current_celery_app() -> Iterator[None]:
    """Each module puts back the Celery app (and client) that was current before it."""
    with current_celery_app_restored():
        yield
