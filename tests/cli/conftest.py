"""The command-line tests run on a PostgreSQL + Redis stack whose database URL carries a password
(``CANARY_STACK``: a role of the module's own, dropped afterwards), which must never be printed:
the ``cli`` fixture checks every command's output for it, and the cluster every worker's log."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.cli.runner import tracking_cli
from tests.harness import Stack

CANARY = f"canary-{uuid.uuid4().hex[:12]}"
#: the stack of a module's tests: ``pytestmark = [CANARY_STACK, ...]``
CANARY_STACK = pytest.mark.stacks("postgres-redis", password=CANARY)

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(stack: Stack) -> Cli:
    """``tracking ARGS...`` against the stack; fails the test if the password shows in its output."""

    def run(*args: str, **options: Any) -> subprocess.CompletedProcess[str]:
        result = tracking_cli(stack, *args, **options)
        assert CANARY not in result.stdout, f"the password reached stdout of tracking {args}"
        assert CANARY not in result.stderr, f"the password reached stderr of tracking {args}"
        return result

    return run
