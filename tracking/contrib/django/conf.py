"""Django settings mapped into the same :class:`~tracking.Settings` as every other way of
configuring `tracking`, and the settings of the Django app itself (read by ``apps.py`` when Django
is ready, and again by the system checks of ``checks.py``)."""

from __future__ import annotations

import importlib.util
import urllib.parse
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from django.core.exceptions import ImproperlyConfigured

from tracking.contrib.framework import settings_from_config
from tracking.redact import redact_url
from tracking.settings import Settings

#: settings of the Django app itself, not of :class:`Settings`: the project's own Celery app (a
#: dotted path), and Flower's address for the admin's links to tasks
CELERY_APP_SETTING = "TRACKING_CELERY_APP"
FLOWER_URL_SETTING = "TRACKING_FLOWER_URL"
APP_SETTINGS = frozenset({CELERY_APP_SETTING, FLOWER_URL_SETTING})
#: keys of ``DATABASES[...]["OPTIONS"]`` that Django uses itself and does not pass to the driver
_DJANGO_ONLY_OPTIONS = frozenset(
    {"isolation_level", "pool", "server_side_binding", "assume_role", "cursor_factory", "init_command"}
)


def _names(django_settings: Any, prefix: str) -> dict[str, Any]:
    return {name: getattr(django_settings, name) for name in dir(django_settings) if name.startswith(prefix)}


def settings_from_django(django_settings: Any) -> Settings:
    """Settings from ``TRACKING_*`` Django settings and ``CELERY_BROKER_URL``, under the
    environment; the registry URL from ``DATABASES["default"]`` when neither sets one."""
    config = _names(django_settings, "TRACKING_")
    if getattr(django_settings, "CELERY_BROKER_URL", None):
        config["CELERY_BROKER_URL"] = django_settings.CELERY_BROKER_URL
    try:
        default = django_settings.DATABASES["default"]
    except (AttributeError, KeyError):
        default = None
    return settings_from_config(
        config,
        ignore=APP_SETTINGS,
        database_url=(lambda: database_url(default)) if default else None,
    )


def flower_url(django_settings: Any) -> str | None:
    """``TRACKING_FLOWER_URL`` without its trailing slash (None when it is not set). Anything but
    an http(s) URL is refused, and so is one with credentials: the admin shows it in its pages
    (Flower asks the browser for its own)."""
    value = getattr(django_settings, FLOWER_URL_SETTING, None)
    if not value:
        return None
    url = str(value).rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImproperlyConfigured(
            f"{FLOWER_URL_SETTING} must be Flower's http(s) address, such as http://flower:5555, "
            f"not {redact_url(str(value))!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise ImproperlyConfigured(f"{FLOWER_URL_SETTING} must not carry credentials: pages show it")
    return url


def celery_settings(django_settings: Any) -> dict[str, Any]:
    """The project's ``CELERY_*`` settings as Celery settings (``CELERY_TASK_ACKS_LATE`` is
    ``task_acks_late``), as ``app.config_from_object(settings, namespace="CELERY")`` reads them."""
    return {
        name.removeprefix("CELERY_").lower(): value
        for name, value in _names(django_settings, "CELERY_").items()
    }


def database_url(database: Mapping[str, Any]) -> str:
    """The SQLAlchemy URL of a Django database (an entry of ``DATABASES``).

    PostgreSQL (the psycopg 3 driver when it is installed, as Django prefers it) and SQLite files
    only: for any other engine, or an in-memory SQLite database that no worker could share, set
    ``TRACKING_DATABASE_URL``.
    """
    engine = str(database.get("ENGINE", ""))
    backend = engine.rsplit(".", 1)[-1]
    name = str(database.get("NAME") or "")
    if backend in {"postgresql", "postgis", "postgresql_psycopg2"} or backend.endswith("postgresql"):
        driver = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
        options = database.get("OPTIONS") or {}
        query = {k: str(v) for k, v in options.items() if k not in _DJANGO_ONLY_OPTIONS}
        host = str(database.get("HOST") or "")
        if host.startswith("/"):  # a Unix socket folder: libpq takes it as a parameter
            query["host"], host = host, ""
        port = database.get("PORT")
        url = sa.URL.create(
            f"postgresql+{driver}",
            username=database.get("USER") or None,
            password=database.get("PASSWORD") or None,
            host=host or None,
            port=int(port) if port else None,
            database=name or None,
            query=query,
        )
        return url.render_as_string(hide_password=False)
    if backend in {"sqlite3", "spatialite"}:
        if not name or name == ":memory:" or "mode=memory" in name:
            raise ImproperlyConfigured(
                "tracking: an in-memory SQLite database cannot be shared with workers; "
                "set TRACKING_DATABASE_URL"
            )
        return sa.URL.create("sqlite", database=name).render_as_string(hide_password=False)
    raise ImproperlyConfigured(
        f"tracking: cannot derive the registry's URL from the database engine {engine!r} "
        "(PostgreSQL and SQLite only); set TRACKING_DATABASE_URL"
    )
