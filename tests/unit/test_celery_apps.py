"""Which client a Celery app has, however it was handed to ``install``."""

from __future__ import annotations

from pathlib import Path

from celery import Celery
from celery.local import Proxy

from tracking.celery import client_for, install, state
from tracking.settings import Settings


def test_tracking_installed_onto_a_proxy_of_a_celery_app_serves_the_app_s_tasks(tmp_path: Path) -> None:
    """``celery.current_app`` is a proxy; a task's ``self.app`` is the app behind it."""
    app = Celery("proxied", set_as_current=False)
    proxy = Proxy(lambda: app)
    settings = Settings(database_url=f"sqlite:///{tmp_path}/registry.sqlite3")
    with state.lock:
        before = list(state.installed)
    try:
        install(proxy, settings)
        assert client_for(app).settings is settings
        assert app in state.apps()
    finally:
        with state.lock:
            state.installed[:] = before
