"""What the Flask and Django integrations share: :class:`~tracking.Settings` from a framework's
configuration, and the Celery app they build when the application does not bring its own.

A framework's configuration is read like ``celeryconfig.py``: ``TRACKING_*`` keys (upper case, as
both frameworks spell settings) and ``CELERY_BROKER_URL``; the ``TRACKING_*`` environment variables
(and ``CELERY_BROKER_URL``) win over it, so one deploy setting reaches the web processes and the
workers alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from celery import Celery

from tracking.celery import recommended_config
from tracking.settings import Settings, env_values, unprefixed

PREFIX = "TRACKING_"


def settings_from_config(
    config: Mapping[str, Any],
    base: Mapping[str, Any] | None = None,
    ignore: frozenset[str] = frozenset(),
    database_url: Callable[[], str] | None = None,
) -> Settings:
    """Settings from a framework's ``TRACKING_*`` keys and ``CELERY_BROKER_URL``, over ``base``
    (keyed without the prefix, in lower case), under the environment.

    Keys in ``ignore`` belong to the integration, not to :class:`Settings`; any other unknown
    ``TRACKING_*`` key is refused (a typo must not silently keep a default). ``database_url`` is
    called for the registry's URL when neither the configuration nor the environment sets one.
    """
    values: dict[str, Any] = dict(base or {})
    if config.get("CELERY_BROKER_URL"):
        values["broker_url"] = config["CELERY_BROKER_URL"]
    values.update(unprefixed({k: v for k, v in config.items() if k.startswith(PREFIX)}, ignore))
    env = env_values()
    if database_url is not None and "database_url" not in values and "database_url" not in env:
        values["database_url"] = database_url()
    return Settings.from_mapping({**values, **env})


def celery_values(app: Celery) -> dict[str, Any]:
    """The ``tracking_*`` settings and the broker URL of an application's own Celery app, keyed as
    :func:`settings_from_config`'s ``base``."""
    values = unprefixed(dict(app.conf.items()))
    if app.conf.broker_url:
        values.setdefault("broker_url", app.conf.broker_url)
    return values


def build_celery(main: str, settings: Settings, overrides: Mapping[str, Any] | None = None) -> Celery:
    """A Celery app with the recommended settings for ``settings``, ``overrides`` (Celery settings
    in lower case) on top. Not made Celery's current app: it is the framework's, not the process's.
    """
    conf = recommended_config(settings)
    conf.update(overrides or {})
    conf["broker_url"] = settings.broker_url
    app = Celery(main, set_as_current=False)
    app.conf.update(conf)
    return app
