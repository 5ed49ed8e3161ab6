"""Every Alembic revision of `tracking` reaches Django projects through ``manage.py migrate``: each
migration of the Django app names the head of the Alembic history the registry is at once it has
run, the newest names the current head, and a migration that moves it runs the Alembic upgrade."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from alembic.script import ScriptDirectory
from django.db import migrations
from tracking.migrations import alembic_config

import tracking.contrib.django.migrations as django_migrations


def django_migration_modules() -> list[ModuleType]:
    names = sorted(m.name for m in pkgutil.iter_modules(django_migrations.__path__) if m.name[:4].isdigit())
    return [importlib.import_module(f"{django_migrations.__name__}.{name}") for name in names]


def runs_upgrade_registry(module: ModuleType) -> bool:
    return any(
        isinstance(op, migrations.RunPython) and op.code.__name__ == "upgrade_registry"
        for op in module.Migration.operations
    )


def test_the_newest_django_migration_brings_the_registry_to_the_alembic_head() -> None:
    newest = django_migration_modules()[-1]
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert newest.ALEMBIC_HEAD == head, (
        f"Alembic's head is {head}: add a Django migration that runs upgrade_registry and names it"
    )


def test_a_django_migration_that_names_a_new_alembic_head_runs_the_upgrade() -> None:
    named = None
    for module in django_migration_modules():
        if module.ALEMBIC_HEAD != named:
            assert runs_upgrade_registry(module), f"{module.__name__} names {module.ALEMBIC_HEAD}: run it"
            named = module.ALEMBIC_HEAD
    assert named is not None
