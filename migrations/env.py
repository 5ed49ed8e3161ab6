"""Stock Alembic environment for the tracking registry.

Run through ``tracking migrate`` (which passes a connection) or plain ``alembic`` with
``-x url=...`` / ``sqlalchemy.url``. The version table is ``tracking_alembic_version`` so the registry
can live in an application's own database beside its own Alembic history.
"""

from __future__ import annotations

from alembic import context

from tracking.models import metadata

config = context.config
target_metadata = metadata
version_table = config.get_main_option("version_table") or "tracking_alembic_version"


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=version_table,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from tracking.registry import create_engine

    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    engine = create_engine(url)
    with engine.begin() as connection:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
