"""The Celery configuration `tracking` runs best with, the embedded broker's folders, and the
settings read from an app's configuration."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from celery import Celery
from celery.utils.imports import import_from_cwd

from tracking import embedded
from tracking.settings import Settings, unprefixed

#: retries of one publish: a broker blip is ridden out, an outage fails fast (the entry is recorded
#: already, and the supervisor publishes it again)
RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}


def recommended_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings `tracking` runs best with (see docs/celery-settings.md for why)."""
    conf: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "worker_prefetch_multiplier": 1,
        "worker_pool": "threads",
        "worker_concurrency": 100,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "broker_connection_retry_on_startup": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # After a reconnect Celery restores the prefetch count with a basic.qos sent from the thread
        # that acknowledges a task: a pool thread in the threads pool, racing the consumer for the
        # AMQP socket. It hangs and every later task with it (docs/celery-settings.md).
        "worker_enable_prefetch_count_reduction": False,
    }
    if is_embedded(settings.broker_url):
        conf["broker_transport_options"] = embedded_broker_options(settings.broker_folder)
    return conf


def is_embedded(broker_url: str) -> bool:
    return broker_url.startswith(f"{embedded.SCHEME}:")


def embedded_broker_options(folder: str) -> dict[str, Any]:
    """The embedded broker in one folder, shared by every process on the machine.

    A message is written to ``tmp/`` and renamed into ``queue/`` when complete; a consumer takes it
    by moving it to ``processed/`` (renames within one folder tree: atomic, so two consumers cannot
    both take one message), which the supervisor prunes.
    """
    base = Path(folder).resolve()
    queue = base / "queue"
    for sub in (queue, base / "tmp", base / "control", base / "processed"):
        sub.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(queue),
        "data_folder_out": str(queue),
        "tmp_folder": str(base / "tmp"),
        "control_folder": str(base / "control"),
        "processed_folder": str(base / "processed"),
        "store_processed": True,
        "polling_interval": 0.1,
    }


def settings_for(app: Celery) -> Settings:
    """Settings from the app's configuration (``tracking_*`` keys and its ``broker_url``),
    overridden by ``TRACKING_*`` variables and ``CELERY_BROKER_URL``."""
    return settings_from(dict(app.conf.items()))


def settings_from(conf: dict[str, Any]) -> Settings:
    from_file = unprefixed(conf)
    if conf.get("broker_url"):
        from_file.setdefault("broker_url", conf["broker_url"])
    return Settings.from_env(**from_file)


def default_conf(module_name: str) -> tuple[Settings, dict[str, Any]]:
    """The settings and the Celery configuration of ``celery -A tracking``: the recommended
    settings, with the settings of the configuration module (``celeryconfig``) from the working
    folder on top, and the environment (``TRACKING_*``, ``CELERY_BROKER_URL``) over both."""
    module = config_module(module_name)
    settings = settings_from(module)
    conf = recommended_config(settings)
    if not is_embedded(settings.broker_url):
        conf.pop("broker_transport_options", None)  # the embedded broker's, not this one's
    conf.update(module)
    conf["broker_url"] = settings.broker_url
    return settings, conf


def config_module(name: str) -> dict[str, Any]:
    """The settings a Celery configuration module defines (not the names it imports)."""
    try:
        module = import_from_cwd(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return {}
    return {
        k: v
        for k, v in vars(module).items()
        if k.islower() and not k.startswith("_") and not isinstance(v, types.ModuleType) and not callable(v)
    }
