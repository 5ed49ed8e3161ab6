"""Fixtures of the registry tests: a migrated registry of its own per test, on SQLite and PostgreSQL.

Nothing here runs a worker or a broker: the tests call the registry's operations (and the
supervisor's sweep) directly, and move the database's notion of time by SQL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tracking import registry
from tracking.settings import Settings

BACKENDS = ["sqlite", "postgresql"]

#: what the model-based test ran, per database, for the summary at the end of the session
MODEL_RUNS: dict[str, dict[str, int]] = {}


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty registry database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('registry')}/registry.sqlite3"
    url = request.getfixturevalue("pg_database")
    assert isinstance(url, str)
    return url


@pytest.fixture
def registry_settings(database_url: str) -> Iterator[Settings]:
    """Settings on a migrated, empty registry. Leases and grace periods are long: the tests move
    time on by SQL, never by sleeping, so real time never expires anything by itself."""
    settings = Settings(
        database_url=database_url, lease_seconds=600, heartbeat_seconds=60, start_grace_seconds=600
    )
    registry.migrate(settings)
    try:
        yield settings
    finally:
        registry.dispose(settings)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not MODEL_RUNS:
        return
    terminalreporter.section("registry model")
    for backend, counts in sorted(MODEL_RUNS.items()):
        done = ", ".join(f"{name} {value}" for name, value in counts.items())
        terminalreporter.write_line(f"{backend}: {done}")
