"""``manage.py tracking_migrate``: create or upgrade the registry's tables (Alembic), as
``tracking migrate`` does, in the registry the project is configured with."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings as django_settings
from django.core.management.base import BaseCommand, CommandError

from tracking import registry
from tracking.contrib.django.conf import database_url
from tracking.exceptions import RegistryUnavailable
from tracking.redact import redact_url

EXIT_UNAVAILABLE = 3  # as the tracking command's


class Command(BaseCommand):
    help = (
        "Create or upgrade the tracking registry's tables (Alembic) in TRACKING_DATABASE_URL, or else "
        "in the default database. Safe to run on every deploy."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--revision", default="head", help="the Alembic revision (default: head)")
        parser.add_argument(
            "--database",
            metavar="ALIAS",
            help="migrate the registry in this database of DATABASES instead (its SQLAlchemy URL is derived)",
        )

    def handle(self, *args: str, revision: str, database: str | None, **options: Any) -> None:
        settings = apps.get_app_config("tracking").settings
        if database is not None:
            if database not in django_settings.DATABASES:
                raise CommandError(f"no database {database!r} in DATABASES")
            settings = settings.with_overrides(database_url=database_url(django_settings.DATABASES[database]))
        try:
            registry.migrate(settings, revision)
        except RegistryUnavailable as exc:
            raise CommandError(str(exc), returncode=EXIT_UNAVAILABLE) from exc
        self.stdout.write(f"registry at {redact_url(settings.database_url)} migrated to {revision}")
