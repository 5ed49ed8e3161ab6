"""Django settings into :class:`tracking.Settings`, and the registry's URL from ``DATABASES`` (no
services, no Django set up: the functions take the settings object)."""

from __future__ import annotations

import types
from typing import Any

import pytest
import sqlalchemy as sa
from django.core.exceptions import ImproperlyConfigured

from tracking.contrib.django.conf import celery_settings, database_url, flower_url, settings_from_django

POSTGRES = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": "shop",
    "USER": "shop",
    "PASSWORD": "p@ss/w:rd",
    "HOST": "db.internal",
    "PORT": "5433",
    "OPTIONS": {"sslmode": "require", "isolation_level": 1, "pool": True},
}


def django_settings(**values: Any) -> Any:
    return types.SimpleNamespace(**values)


def test_a_postgresql_database_gives_a_psycopg_url_with_its_credentials_and_driver_options() -> None:
    url = sa.make_url(database_url(POSTGRES))
    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "shop",
        "p@ss/w:rd",
        "db.internal",
        5433,
        "shop",
    )
    assert dict(url.query) == {"sslmode": "require"}  # Django's own options are not the driver's


def test_a_unix_socket_folder_as_host_becomes_the_host_parameter() -> None:
    url = sa.make_url(database_url({**POSTGRES, "HOST": "/var/run/postgresql", "PORT": ""}))
    assert url.host is None and url.port is None and url.query["host"] == "/var/run/postgresql"


@pytest.mark.parametrize("engine", ["django.contrib.gis.db.backends.postgis", "myorg.backends.postgresql"])
def test_postgresql_flavoured_engines_are_postgresql(engine: str) -> None:
    assert database_url({**POSTGRES, "ENGINE": engine}).startswith("postgresql+psycopg://")


def test_a_sqlite_file_gives_a_sqlite_url_to_the_same_file() -> None:
    url = database_url({"ENGINE": "django.db.backends.sqlite3", "NAME": "/srv/app/db.sqlite3"})
    assert url == "sqlite:////srv/app/db.sqlite3"


@pytest.mark.parametrize(
    "database",
    [
        {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        {"ENGINE": "django.db.backends.mysql", "NAME": "shop"},
    ],
)
def test_a_database_no_worker_can_share_asks_for_tracking_database_url(database: dict[str, Any]) -> None:
    with pytest.raises(ImproperlyConfigured, match="TRACKING_DATABASE_URL"):
        database_url(database)


def test_tracking_settings_are_read_and_the_registry_defaults_to_the_default_database() -> None:
    settings = settings_from_django(
        django_settings(
            DATABASES={"default": POSTGRES},
            TRACKING_LEASE_SECONDS=12,
            TRACKING_IMPORTS=["shop.trackers"],
            TRACKING_CELERY_APP="shop.celery.app",  # the Django app's own setting, not refused
            CELERY_BROKER_URL="redis://redis:6379/0",
        )
    )
    assert settings.database_url == database_url(POSTGRES)
    assert settings.lease_seconds == 12.0 and settings.imports == ("shop.trackers",)
    assert settings.broker_url == "redis://redis:6379/0"


def test_tracking_database_url_wins_over_databases_and_the_environment_over_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mysql = {"default": {"ENGINE": "django.db.backends.mysql"}}
    configured = django_settings(DATABASES=mysql, TRACKING_DATABASE_URL="sqlite:///from-settings.sqlite3")
    assert settings_from_django(configured).database_url == "sqlite:///from-settings.sqlite3"

    monkeypatch.setenv("TRACKING_DATABASE_URL", "sqlite:///from-env.sqlite3")
    assert settings_from_django(configured).database_url == "sqlite:///from-env.sqlite3"
    # Nothing is derived when the environment names the registry, so an unsupported engine is fine.
    assert settings_from_django(django_settings(DATABASES=mysql)).database_url == "sqlite:///from-env.sqlite3"


def test_a_misspelt_tracking_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="TRACKING_LEASE_SECOND"):
        settings_from_django(django_settings(DATABASES={"default": POSTGRES}, TRACKING_LEASE_SECOND=12))


def test_celery_settings_are_the_celery_namespace_of_the_django_settings() -> None:
    conf = celery_settings(
        django_settings(CELERY_BROKER_URL="redis://redis:6379/0", CELERY_TASK_DEFAULT_QUEUE="web", DEBUG=True)
    )
    assert conf == {"broker_url": "redis://redis:6379/0", "task_default_queue": "web"}


def test_tracking_flower_url_is_the_app_s_own_setting_and_a_misspelling_of_it_is_refused() -> None:
    settings = django_settings(DATABASES={"default": POSTGRES}, TRACKING_FLOWER_URL="http://flower:5555/")
    assert settings_from_django(settings).database_url == database_url(POSTGRES)  # not refused
    assert flower_url(settings) == "http://flower:5555"
    assert flower_url(django_settings()) is None
    with pytest.raises(ValueError, match="TRACKING_FLOWER_ULR"):
        settings_from_django(django_settings(DATABASES={"default": POSTGRES}, TRACKING_FLOWER_ULR="http://f"))


@pytest.mark.parametrize("url", ["flower:5555", "ftp://flower", "http://", "https://admin:secret@flower:5555"])
def test_a_tracking_flower_url_that_is_not_a_plain_http_address_is_refused(url: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="TRACKING_FLOWER_URL") as refused:
        flower_url(django_settings(TRACKING_FLOWER_URL=url))
    assert "secret" not in str(refused.value)
