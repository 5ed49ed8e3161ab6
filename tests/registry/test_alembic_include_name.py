"""An app's Alembic autogenerate, run on a database that also holds `tracking`'s registry, proposes
to drop the tracking_* tables without :func:`include_name`, and nothing about them with it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.harness import migrated
from tracking.contrib.alembic import include_name
from tracking.settings import Settings

APP = sa.MetaData()
orders = sa.Table(
    "orders", APP, sa.Column("id", sa.Integer, primary_key=True), sa.Column("total", sa.Integer)
)


def _diff(url: str, **options: Any) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            APP.create_all(conn)
            conn.commit()
            return list(compare_metadata(MigrationContext.configure(conn, opts=options), APP))
    finally:
        engine.dispose()


def _dropped_tables(diff: list[Any]) -> set[str]:
    return {op[1].name for op in diff if isinstance(op, tuple) and op[0] == "remove_table"}


def test_autogenerate_leaves_the_tracking_tables_alone_with_include_name(database_url: str) -> None:
    url = database_url
    with migrated(Settings(database_url=url)):
        pass
    assert {"tracking_trackers", "tracking_events"} <= _dropped_tables(_diff(url))
    assert _diff(url, include_name=include_name) == []
