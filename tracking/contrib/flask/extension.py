"""The Flask extension: settings from ``app.config``, a Celery app to publish trackers with, and the
``flask tracking ...`` commands.

::

    from tracking.contrib.flask import Tracking

    tracking_ext = Tracking()                  # or Tracking(app), or Tracking(app, celery=celery_app)

    def create_app():
        app = Flask(__name__)
        app.config["TRACKING_DATABASE_URL"] = "postgresql+psycopg://app@db/app"
        tracking_ext.init_app(app)
        return app

``init_app`` reads the configuration once: ``TRACKING_*`` keys and ``CELERY_BROKER_URL`` (or the
``broker_url`` of ``app.config["CELERY"]``); the ``TRACKING_*`` environment variables win over
them, as they win over ``celeryconfig.py``. It installs `tracking` onto the application's own
Celery app when one is given, or else onto a Celery app built with the recommended settings and the
Celery settings of ``app.config["CELERY"]``, the mapping Flask's Celery pattern uses. Views then
call ``MyTracker.start(...)`` and ``MyTracker.lookup(...)`` as anywhere else.

Each app has its own client (its settings and Celery app): inside an app context ``start`` and
``lookup`` use that app's; outside any, the app initialised last. Apps that share one Celery app
must share their tracking settings (its workers serve one registry).
"""

from __future__ import annotations

import dataclasses
import weakref

from celery import Celery
from flask import Flask, current_app, has_app_context
from flask.cli import with_appcontext

from tracking import celery as glue
from tracking import cli
from tracking import client as clients
from tracking.client import Client
from tracking.contrib.framework import build_celery, celery_values, settings_from_config
from tracking.settings import Settings

EXTENSION_KEY = "tracking"


@dataclasses.dataclass(frozen=True)
class _AppState:
    settings: Settings
    celery: Celery

    @property
    def client(self) -> Client:
        return glue.client_for(self.celery)


class Tracking:
    """`tracking` for one or more Flask apps.

    ``celery``: the application's own Celery app, which keeps its configuration and beat schedule
    and gets the tracker tasks; without it the extension builds one (``Tracking.celery``), which
    workers can run when the settings live in ``app.config`` rather than the environment (a module
    with ``celery_app = create_app().extensions["tracking"].celery``, then
    ``celery -A thatmodule worker -P threads``).
    """

    def __init__(self, app: Flask | None = None, *, celery: Celery | None = None) -> None:
        self._celery = celery
        self._apps: weakref.WeakKeyDictionary[Flask, _AppState] = weakref.WeakKeyDictionary()
        self._last: _AppState | None = None
        # Inside an app context, Tracker.start, lookup and the rest use that app's client.
        clients.add_resolver(self._client_in_context)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read ``app``'s configuration, install `tracking` onto its Celery app, register the
        ``flask tracking`` commands, and store the extension in ``app.extensions["tracking"]``."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A 'Tracking' instance has already been registered on this Flask app. "
                "Import and use that instance instead."
            )
        celery_conf = app.config.get("CELERY") or {}
        base = celery_values(self._celery) if self._celery is not None else {}
        if celery_conf.get("broker_url"):
            base.setdefault("broker_url", celery_conf["broker_url"])
        settings = settings_from_config(app.config, base)
        celery = self._celery or build_celery(app.import_name, settings, celery_conf)
        for other in self._apps.values():
            if other.celery is celery and other.settings != settings:
                raise RuntimeError(
                    "Flask apps that share one Celery app must share their tracking settings: its "
                    "workers and its supervisor serve one registry. Give each app its own Celery app."
                )
        glue.install(celery, settings)
        self._apps[app] = self._last = _AppState(settings, celery)
        app.extensions[EXTENSION_KEY] = self
        app.cli.add_command(tracking_command)

    @property
    def settings(self) -> Settings:
        """The settings read from the current app's configuration (outside an app context: from the
        app initialised last)."""
        return self._state().settings

    @property
    def celery(self) -> Celery:
        """The Celery app trackers of the current app are published with (outside an app context:
        the app initialised last)."""
        return self._state().celery

    @property
    def client(self) -> Client:
        """The current app's client: what ``Tracker.start``, ``lookup`` and the rest use inside its
        app context (outside one: the app initialised last)."""
        return self._state().client

    def make_current(self) -> None:
        """Make the current app's client the one ``start`` and ``lookup`` use outside an app
        context too (inside one, each app's own is used anyway)."""
        clients.use(self._state().client)

    def _client_in_context(self) -> Client | None:
        if not has_app_context():
            return None
        state = self._apps.get(current_app._get_current_object())  # type: ignore[attr-defined]
        return state.client if state is not None else None

    def _state(self) -> _AppState:
        if has_app_context():
            app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
            try:
                return self._apps[app]
            except KeyError:
                raise RuntimeError(
                    "The current Flask app is not registered with this 'Tracking' instance. "
                    "Did you forget to call 'init_app'?"
                ) from None
        if self._last is None:
            raise RuntimeError("This 'Tracking' instance has not been initialised on any Flask app.")
        # Outside an app context (a worker module, a script): the app initialised last, the one
        # `start` and `lookup` use. Not found through the app, which may be gone already.
        return self._last


# -- flask tracking ... -----------------------------------------------------------------------------


@with_appcontext
def _use_the_app_s_settings() -> None:
    """Before any ``flask tracking`` command: the current app's settings and Celery app are the
    ones the command uses."""
    extension = current_app.extensions[EXTENSION_KEY]
    assert isinstance(extension, Tracking)
    extension.make_current()


#: ``flask tracking ...``: the commands of ``tracking`` (but ``demo``, which runs on settings of its
#: own), with their options, help, output and exit codes, on the current app's settings
tracking_command = cli.make_group(
    "tracking",
    help_text="The tracking command line, with this app's settings (`flask tracking COMMAND --help`).\n\n"
    + cli.HELP,
    prepare=_use_the_app_s_settings,
    leave_out={"demo"},
)
