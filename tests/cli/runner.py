"""Run the ``tracking`` command as a user does: its console script (or ``python -m tracking.cli``
when the package is not installed), in a subprocess, with a stack's environment."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.harness import Stack

_SCRIPT = Path(sys.executable).with_name("tracking")
#: the command line that runs ``tracking``
TRACKING = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tracking.cli"]


def tracking_cli(
    stack: Stack,
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """``tracking ARGS...`` with the stack's environment (``env`` on top), in the stack's folder."""
    return subprocess.run(
        [*TRACKING, *args],
        env={**stack.env(), **(env or {})},
        cwd=stack.folder,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


SUMMARY = re.compile(
    r"started (?P<started>\d+), already started (?P<existing>\d+), invalid (?P<invalid>\d+) "
    r"of (?P<total>\d+) IDs"
)
