"""Alembic in the app's own database: keep autogenerate away from `tracking`'s tables.

When the registry lives in the same database as the app's own tables, the app's
``alembic revision --autogenerate`` (or Flask-Migrate's ``flask db migrate``) sees the
``tracking_*`` tables, which are not in the app's metadata, and proposes to drop them. Pass
:func:`include_name` to the app's ``context.configure`` in its ``env.py``::

    from tracking.contrib.alembic import include_name

    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_name=include_name,
    )

`tracking`'s tables keep their own history (``tracking migrate``, with its own version table,
``tracking_alembic_version``).
"""

from __future__ import annotations

from collections.abc import Mapping

#: the prefix of every table (and index) `tracking` owns, and of its Alembic version table
PREFIX = "tracking_"


def include_name(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
    """Alembic's ``include_name`` hook: False for `tracking`'s tables and their indexes, so that
    the app's autogenerate neither drops nor alters them; True for everything else."""
    if type_ == "table":
        return not (name or "").startswith(PREFIX)
    if type_ in ("index", "unique_constraint", "foreign_key_constraint", "column"):
        return not (parent_names.get("table_name") or "").startswith(PREFIX)
    return True
