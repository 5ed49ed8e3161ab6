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


def test_ids_are_never_reused_after_a_delete(database_url: str) -> None:
    # Writes are fenced by (id, epoch): a new entry must never take a departed entry's ID.
    from tracking.models import messages, trackers

    command.upgrade(alembic_config(database_url), "head")
    engine = create_engine(database_url)
    try:
        for table, values in (
            (
                trackers,
                {
                    "kind": "k",
                    "status": "pending",
                    "epoch": 1,
                    "task_id": "t",
                    "args": {},
                    "policy": {},
                    "restart_times": [],
                    "started_at": sa.func.now(),
                },
            ),
            (
                messages,
                {
                    "kind": "k",
                    "transaction_id": "x",
                    "type": "cast",
                    "status": "queued",
                    "body": {},
                    "created_at": sa.func.now(),
                },
            ),
        ):
            ids = []
            for n in range(2):
                with engine.begin() as conn:
                    row = {**values, "transaction_id": f"x{n}"}
                    ids.append(conn.execute(table.insert().values(row).returning(table.c.id)).scalar_one())
                    conn.execute(table.delete().where(table.c.id == ids[-1]))
            assert ids[1] > ids[0], table.name
    finally:
        engine.dispose()
