"""The Celery adapter: one task per tracker kind, the supervisor task and its beat entry, the
worker signals that drive the worker side, the default app behind ``celery -A tracking``, and
:func:`install` onto an application's own Celery app.

Nothing in the core imports this package: the client and the worker are given a way to publish
(``publish_with(app)``), and the tasks subscribe to the tracker kinds.

``config``   the recommended Celery configuration and the settings read from an app
``tasks``    the tracker tasks, the supervisor task and its beat entry
``process``  this process's worker side, driven by Celery's worker signals
``state``    the apps `tracking` is installed onto, each with its client
"""

from __future__ import annotations

import functools
import os
from typing import Any

from celery import Celery

from tracking import client as clients
from tracking import embedded, tracker
from tracking.celery import process, state, tasks
from tracking.celery.config import (
    default_conf,
    embedded_broker_options,
    is_embedded,
    recommended_config,
    settings_for,
)
from tracking.celery.process import task_name
from tracking.celery.publishing import publish_many_with, send
from tracking.client import Client, Publishable
from tracking.settings import Settings

embedded.register()

__all__ = [
    "client_for",
    "current_app",
    "current_settings",
    "default_app",
    "embedded_broker_options",
    "install",
    "is_embedded",
    "publish",
    "publish_with",
    "recommended_config",
    "settings_for",
    "sweep",
    "task_name",
    "tracker_class",
]

_default_app: Celery | None = None


def install(app: Celery, settings: Settings | None = None) -> Celery:
    """Install `tracking` onto an existing Celery app: tracker tasks, the supervisor task and its
    beat entry, and the worker signals. The app keeps its own configuration and beat schedule.
    The app's client (its settings, publishing with it) becomes the process's current one.
    """
    settings = settings or settings_for(app)
    client = Client(settings, publish_with(app, settings), publish_many_with(app, settings))
    with state.lock:
        new = state.remember(app, client)
        clients.use(client)
        if new:
            tracker.subscribe(functools.partial(tasks.make_task, app))
            tasks.make_supervise_task(app)
            tasks.configure(app, client)
    return app


def publish_with(app: Celery, settings: Settings) -> clients.Publish:
    """A publisher: sends the message that starts incarnation ``row.epoch`` with ``app``."""
    queue = {"queue": settings.queue} if settings.queue else {}

    def publish(row: Publishable) -> None:
        send(app, row, queue)

    return publish


def default_app() -> Celery:
    """The app behind ``celery -A tracking`` (see ``config.default_conf``)."""
    global _default_app
    with state.lock:
        if _default_app is None:
            settings, conf = default_conf(os.environ.get("CELERY_CONFIG_MODULE", "celeryconfig"))
            app = Celery("tracking", set_as_current=False)
            app.conf.update(conf)
            install(app, settings)
            _default_app = app
        return _default_app


def _default_client() -> Client:
    return state.client_for(default_app())


clients.set_fallback(_default_client)


def client_for(app: Celery) -> Client:
    """The client of an app `tracking` is installed onto (its settings, publishing with it)."""
    return state.client_for(app)


def current_app() -> Celery:
    """The app trackers are published with: the current client's, else the one installed last."""
    found = state.app_of(clients.current())
    if found is not None:
        return found
    apps = state.apps()
    return apps[0] if apps else default_app()


def current_settings() -> Settings:
    return clients.current().settings


def publish(row: Publishable) -> None:
    """Publish the message that starts incarnation ``row.epoch`` with the current client."""
    clients.current().publish(row)


def sweep(settings: Settings | None = None) -> dict[str, int]:
    """One supervisor sweep with the current client's publisher (on ``settings``' registry);
    the parked trackers it wakes are published in batches with the current app."""
    client = clients.current()
    if settings is not None and settings != client.settings:
        client = Client(settings, client.publish)
    return process.sweep(client, current_app())


def tracker_class(kind: str) -> type[tracker.Tracker] | None:
    return tracker.of_kind(kind)


def __getattr__(name: str) -> Any:
    # ``celery -A tracking`` looks up ``tracking.celery.app``; build it only when asked for.
    if name == "app":
        return default_app()
    raise AttributeError(name)
