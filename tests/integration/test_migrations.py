"""Models and migrations agree; upgrade, downgrade, upgrade works; one linear history (each on an
empty SQLite and PostgreSQL database, ``database_url``)."""

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


def trackers_ddl(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ddl = conn.execute(
                sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tracking_trackers'")
            ).scalar_one()
            assert isinstance(ddl, str)
            return ddl
    finally:
        engine.dispose()


@pytest.mark.parametrize("target", ["0004", "0003", "0002"])
def test_sqlite_keeps_autoincrement_on_the_trackers_through_a_downgrade(tmp_path: Path, target: str) -> None:
    # Since 0002 the trackers' IDs are never reused on SQLite either (AUTOINCREMENT). A downgrade
    # that rebuilds the table (SQLite cannot drop a column in place) must keep that.
    url = f"sqlite:///{tmp_path}/downgrade.sqlite3"
    cfg = alembic_config(url)
    command.upgrade(cfg, "head")
    assert "AUTOINCREMENT" in trackers_ddl(url)
    command.downgrade(cfg, target)
    assert "AUTOINCREMENT" in trackers_ddl(url), target
    command.upgrade(cfg, "head")
    assert "AUTOINCREMENT" in trackers_ddl(url)
    assert differences(url) == []


def test_downgrading_the_long_worker_ids_keeps_only_what_fits(database_url: str) -> None:
    # 0005 widened the worker IDs (64 -> 300) and supervisor names (255 -> 300). Its downgrade must
    # work with longer values present: on PostgreSQL they do not fit the narrower columns.
    from tracking.models import supervisors, trackers, workers

    cfg = alembic_config(database_url)
    command.upgrade(cfg, "head")
    hostname = "celery@" + "h" * 248
    long_id, short_id = f"{hostname}/4194304/0123456789ab", "celery@short/1/0123456789ab"
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            for worker_id in (long_id, short_id):
                conn.execute(
                    workers.insert().values(
                        id=worker_id,
                        hostname=worker_id.split("/")[0],
                        pid=1,
                        status="alive",
                        started_at=sa.func.now(),
                        heartbeat_at=sa.func.now(),
                    )
                )
                conn.execute(
                    trackers.insert().values(
                        kind="k",
                        transaction_id=str(len(worker_id)),
                        status="running",
                        epoch=1,
                        task_id="t",
                        worker=worker_id.split("/")[0],
                        worker_id=worker_id,
                        args={},
                        policy={},
                        restart_times=[],
                        started_at=sa.func.now(),
                    )
                )
            conn.execute(
                supervisors.insert().values(
                    name=f"{'s' * 255}/4194304", last_sweep_at=sa.func.now(), last_counts={}
                )
            )
    finally:
        engine.dispose()

    command.downgrade(cfg, "0004")
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            worker_ids = set(conn.execute(sa.text("SELECT id FROM tracking_workers")).scalars())
            held = set(conn.execute(sa.text("SELECT worker_id FROM tracking_trackers")).scalars())
    finally:
        engine.dispose()
    if database_url.startswith("sqlite"):  # no lengths enforced: nothing had to go
        assert worker_ids == {long_id, short_id} and held == {long_id, short_id}
    else:  # the long lease is gone; its entry names no live lease (the next sweep rescues it)
        assert worker_ids == {short_id} and held == {short_id, long_id[:64]}
    command.upgrade(cfg, "head")
    assert differences(database_url) == []
