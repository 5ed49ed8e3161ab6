"""Models and migrations agree; upgrade, downgrade, upgrade works; one linear history."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from tracking.migrations import alembic_config

from tracking.models import metadata
from tracking.registry import create_engine


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/migrations.sqlite3"
    url: str = request.getfixturevalue("pg_database")
    return url


def differences(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": "tracking_alembic_version"}
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_history_has_exactly_one_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1


def test_upgrade_to_head_matches_the_models(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")
    assert differences(database_url) == []


def test_downgrade_and_upgrade_again_round_trips(database_url: str) -> None:
    cfg = alembic_config(database_url)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    assert tables(database_url) <= {"tracking_alembic_version"}
    command.upgrade(cfg, "head")
    assert differences(database_url) == []
    assert {"tracking_trackers", "tracking_workers", "tracking_events", "tracking_supervisors"} <= tables(
        database_url
    )
