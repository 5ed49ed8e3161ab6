"""The Celery apps `tracking` is installed onto in this process, each with its client."""

from __future__ import annotations

import threading

from celery import Celery

from tracking.client import Client

lock = threading.RLock()


def real(app: Celery) -> Celery:
    """The app itself, not a proxy to it (``celery.current_app`` is a proxy; a task's ``self.app``
    is the app)."""
    unwrap = getattr(app, "_get_current_object", None)
    return unwrap() if callable(unwrap) else app


#: (app, its client), the one installed last first
installed: list[tuple[Celery, Client]] = []


def remember(app: Celery, client: Client) -> bool:
    """Record ``app`` with ``client`` as the one installed last; False if it was installed before."""
    app = real(app)
    with lock:
        for i, (known, _old) in enumerate(installed):
            if known is app:
                installed[i : i + 1] = []
                installed.insert(0, (app, client))
                return False
        installed.insert(0, (app, client))
        return True


def client_for(app: Celery) -> Client:
    app = real(app)
    with lock:
        for known, client in installed:
            if known is app:
                return client
    raise LookupError(f"tracking is not installed onto the Celery app {app.main!r}")


def app_of(client: Client) -> Celery | None:
    with lock:
        for app, known in installed:
            if known is client:
                return app
    return None


def apps() -> list[Celery]:
    with lock:
        return [app for app, _client in installed]
