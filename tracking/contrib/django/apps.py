"""The app's configuration: the Django settings read once (``conf.py``: into the same
:class:`~tracking.Settings` as every other way of configuring `tracking`), and the Celery app
trackers are published with."""

from __future__ import annotations

from celery import Celery
from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured

from tracking import celery as glue
from tracking import client as clients
from tracking.client import Client
from tracking.contrib.django.conf import CELERY_APP_SETTING, celery_settings, flower_url, settings_from_django
from tracking.contrib.framework import build_celery
from tracking.settings import Settings


class TrackingConfig(AppConfig):
    """Reads the settings once, when Django is ready, and installs `tracking` onto a Celery app."""

    name = "tracking.contrib.django"
    label = "tracking"
    verbose_name = "Tracking"

    settings: Settings
    celery: Celery
    #: Flower's address (``TRACKING_FLOWER_URL``, no trailing slash): the admin links task IDs to it
    flower_url: str | None = None

    @property
    def client(self) -> Client:
        """What Tracker.start, lookup and the rest use in this project (its settings and Celery app)."""
        return glue.client_for(self.celery)

    def ready(self) -> None:
        from django.conf import settings as django_settings
        from django.utils.module_loading import autodiscover_modules, import_string

        self.settings = settings_from_django(django_settings)
        path = getattr(django_settings, CELERY_APP_SETTING, None)
        if path:
            self.celery = import_string(path)
        else:
            self.celery = build_celery("tracking", self.settings, celery_settings(django_settings))
        glue.install(self.celery, self.settings)
        try:
            self.flower_url = flower_url(django_settings)
        except ImproperlyConfigured:
            self.flower_url = None  # no links; the system check tracking.E001 says why
        autodiscover_modules("trackers")
        from tracking.contrib.django import checks, transactions

        checks.register()
        transactions.register()

    def make_current(self) -> None:
        """Make this project's client the one ``start`` and ``lookup`` use (it is once Django is
        set up, unless something else installs `tracking` later)."""
        clients.use(self.client)
