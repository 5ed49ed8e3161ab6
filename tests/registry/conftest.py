"""Fixtures of the registry tests: a migrated registry of its own per test, on SQLite and PostgreSQL.

Nothing here runs a worker or a broker: the tests call the registry's operations (and the
supervisor's sweep) directly, and move the database's notion of time by SQL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import migrated
from tracking.settings import Settings

#: what the model-based test ran, per database, for the summary at the end of the session
MODEL_RUNS: dict[str, dict[str, int]] = {}


@pytest.fixture
def registry_settings(database_url: str) -> Iterator[Settings]:
    """Settings on a migrated, empty registry (``database_url``: SQLite or PostgreSQL). Leases and
    grace periods are long: the tests move time on by SQL, never by sleeping, so real time never
    expires anything by itself."""
    settings = Settings(
        database_url=database_url, lease_seconds=600, heartbeat_seconds=60, start_grace_seconds=600
    )
    with migrated(settings):
        yield settings


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not MODEL_RUNS:
        return
    terminalreporter.section("registry model")
    for backend, counts in sorted(MODEL_RUNS.items()):
        done = ", ".join(f"{name} {value}" for name, value in counts.items())
        terminalreporter.write_line(f"{backend}: {done}")
