"""The example Django project set up in the test process, on a test module's stack: the fixtures
the Django test modules share (each imports them).

Django is set up here, not when pytest starts: the example's settings read the stack's database
from the environment, and the stack exists only once the module's fixtures have made it. Django
is set up once per process, so a later module points the project at its own stack: its database
in ``DATABASES["default"]`` (changed in place: Django's connections read that very mapping), and
the tracking app reads its settings again. The registry's URL is derived from the project's
``DATABASES`` (the example sets no ``TRACKING_DATABASE_URL``), so the admin and the workers share
one database.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tests.harness import ROOT, Stack
from tracking import registry

EXAMPLE = ROOT / "examples" / "django_project"


def project_env(stack: Stack) -> dict[str, str]:
    """The environment the example project runs in on the stack: its database in ``POSTGRES_*``,
    and the registry's URL left out (derived from ``DATABASES["default"]``)."""
    database = sa.make_url(stack.database_url)
    env = {
        **stack.web_env(),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "POSTGRES_DB": database.database or "",
        "POSTGRES_USER": database.username or "",
        "POSTGRES_HOST": database.host or "",
        "POSTGRES_PORT": str(database.port or ""),
    }
    del env["TRACKING_DATABASE_URL"]
    return env


def _point_at(env: dict[str, str]) -> None:
    """Django, set up by an earlier module, on this module's database, and the tracking app's
    settings read again (as when Django is ready)."""
    from django.apps import apps
    from django.conf import settings
    from django.contrib.contenttypes.models import ContentType
    from django.db import connections

    connections.close_all()
    names = {"NAME": "POSTGRES_DB", "USER": "POSTGRES_USER", "HOST": "POSTGRES_HOST", "PORT": "POSTGRES_PORT"}
    settings.DATABASES["default"].update({key: env[variable] for key, variable in names.items()})
    ContentType.objects.clear_cache()  # their IDs are the other database's
    config = apps.get_app_config("tracking")
    registry.dispose(config.settings)
    config.ready()


@pytest.fixture(scope="module", autouse=True)
def django_project(stack: Stack) -> Iterator[None]:
    """Django set up with the example's settings, its database the stack's."""
    import django
    from django.apps import apps
    from django.db import connections

    with pytest.MonkeyPatch.context() as path:
        path.syspath_prepend(str(EXAMPLE))  # as manage.py runs: the project's folder first
        with pytest.MonkeyPatch.context() as environment:
            env = project_env(stack)
            for key, value in env.items():  # read once, when Django is ready
                environment.setenv(key, value)
            if apps.ready:
                _point_at(env)
            else:
                django.setup()
        config = apps.get_app_config("tracking")
        assert config.settings.database_url == stack.database_url
        # The session's Redis key prefix: test isolation, not the example's concern.
        config.celery.conf.broker_transport_options = stack.transport_options()
        try:
            yield
        finally:
            connections.close_all()


# pytest-django evaluates its session-wide fixtures at the session's first test, before Django is
# set up here: these three replace them for each module, once it is.


@pytest.fixture(scope="module", autouse=True)
def django_test_environment(django_project: None) -> Iterator[None]:
    from django.test.utils import setup_test_environment, teardown_test_environment

    setup_test_environment(debug=False)
    yield
    teardown_test_environment()


@pytest.fixture(scope="module")
def django_db_blocker(request: pytest.FixtureRequest, django_project: None) -> Any:
    from pytest_django.plugin import blocking_manager_key

    return request.config.stash[blocking_manager_key]


@pytest.fixture(scope="module")
def django_db_setup(django_project: None) -> None:
    """The stack's database is a fresh one already: Django's tables go into it, no test copy."""
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


@pytest.fixture(autouse=True)
def project_is_current() -> None:
    from django.apps import apps

    apps.get_app_config("tracking").make_current()
