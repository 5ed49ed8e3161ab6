"""Every Alembic revision of `tracking` reaches Django projects through ``manage.py migrate``: the
newest migration of the Django app names the head of the Alembic history it brings the registry to."""

from __future__ import annotations

import importlib
import pkgutil

from alembic.script import ScriptDirectory
from tracking.migrations import alembic_config

import tracking.contrib.django.migrations as django_migrations


def test_the_newest_django_migration_brings_the_registry_to_the_alembic_head() -> None:
    names = sorted(m.name for m in pkgutil.iter_modules(django_migrations.__path__) if m.name[:4].isdigit())
    newest = importlib.import_module(f"{django_migrations.__name__}.{names[-1]}")
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert newest.ALEMBIC_HEAD == head, (
        f"Alembic's head is {head}: add a Django migration that runs upgrade_registry and names it"
    )
