"""System checks of the tracking app (``manage.py check``): its settings, its registry, its broker.

====================  =================================================================================
``tracking.E001``     a ``TRACKING_*`` setting cannot be read (an invalid value, an unknown name, a
                      ``TRACKING_FLOWER_URL`` that is not an http(s) address)
``tracking.W001``     the Celery app trackers are published with has a setting dangerous for
                      long-running trackers (what ``tracking check`` refuses)
``tracking.E002``     the registry's database cannot be reached
``tracking.W002``     the registry is not migrated (its tables are missing or older than this code)
``tracking.E003``     the broker cannot be reached
====================  =================================================================================

The settings checks need no service and run with every ``manage.py`` command that checks. The
registry checks connect to its database, so they run as Django's own database checks do: only when
databases are named (``manage.py check --database default``, and ``manage.py migrate``, which is why
a registry not migrated yet is a warning, not an error that would stop the migration that creates
it). The broker check connects to the broker: it is a deployment check (``manage.py check
--deploy``).

At startup an invalid ``TRACKING_*`` setting already stops Django (the app cannot run without its
settings): E001 reports it for settings changed after startup, and reports an invalid
``TRACKING_FLOWER_URL``, which only turns the admin's links to Flower off.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from kombu.exceptions import OperationalError

from tracking.check import problems
from tracking.contrib.django.conf import flower_url, settings_from_django
from tracking.exceptions import RegistryNotMigrated, RegistryRefused, RegistryUnavailable
from tracking.redact import redact_url

TAG = "tracking"


def register() -> None:
    """Register the checks (the app does it when it is ready; registering twice is harmless)."""
    checks.register(check_settings, TAG)
    checks.register(check_registry, TAG, checks.Tags.database)
    checks.register(check_broker, TAG, deploy=True)


def _skipped(app_configs: Sequence[AppConfig] | None) -> bool:
    """``manage.py check other_app``: the tracking app is not among the apps to check."""
    return app_configs is not None and apps.get_app_config("tracking") not in app_configs


Messages = list[checks.CheckMessage]


def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> Messages:
    """E001: the ``TRACKING_*`` settings as they are now; W001: the Celery app's settings."""
    from django.conf import settings as django_settings

    if _skipped(app_configs):
        return []
    found: Messages = []
    for read in (settings_from_django, flower_url):
        try:
            read(django_settings)
        except (ValueError, ImproperlyConfigured) as exc:
            found.append(
                checks.Error(
                    str(exc), hint="See the TRACKING_* settings in docs/configuration.md.", id="tracking.E001"
                )
            )
    for problem in problems(apps.get_app_config("tracking").celery):
        found.append(
            checks.Warning(
                f"The Celery app trackers are published with: {problem}.",
                hint="See docs/celery-settings.md (what `manage.py tracking check` refuses).",
                id="tracking.W001",
            )
        )
    return found


def check_registry(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> Messages:
    """E002: the registry's database cannot be reached; W002: it is not migrated. Only when
    databases are named, as Django's own database checks."""
    if databases is None or _skipped(app_configs):
        return []
    client = apps.get_app_config("tracking").client
    try:
        client.select(limit=1)  # the entries' table, every column this code reads
        client.workers()  # the workers' table
    except RegistryNotMigrated as exc:
        return [checks.Warning(str(exc), hint="Run `manage.py migrate`.", id="tracking.W002")]
    except (RegistryUnavailable, RegistryRefused) as exc:
        hint = "Check TRACKING_DATABASE_URL, or DATABASES['default'] where the registry lives."
        return [checks.Error(str(exc), hint=hint, id="tracking.E002")]
    return []


def check_broker(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> Messages:
    """E003: the broker cannot be reached (one attempt, no retries). A deployment check."""
    if _skipped(app_configs):
        return []
    connection = apps.get_app_config("tracking").celery.connection_for_write()
    try:
        connection.ensure_connection(max_retries=0)
    except (OperationalError, OSError, *connection.connection_errors) as exc:
        return [
            checks.Error(
                f"The broker {connection.as_uri()} cannot be reached: {redact_url(str(exc))}",
                hint="Check CELERY_BROKER_URL (a start is recorded meanwhile, and published later).",
                id="tracking.E003",
            )
        ]
    finally:
        connection.release()
    return []
