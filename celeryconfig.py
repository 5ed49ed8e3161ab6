"""The default Celery configuration of ``celery -A tracking``, read from the environment.

``celery -A tracking`` starts from ``tracking.celery.recommended_config()`` (JSON only, prefetch
multiplier 1, the threads pool, task events for Flower, the embedded broker by default) and applies
this module on top. It is imported from the working folder; ``CELERY_CONFIG_MODULE`` names another
module. Settings of tracking itself can be given here as ``tracking_*`` (for example
``tracking_lease_seconds = 30``); ``TRACKING_*`` environment variables win over them. See
docs/configuration.md and docs/celery-settings.md.
"""

from __future__ import annotations

import os

from tracking.celery import recommended_config
from tracking.settings import Settings

globals().update(recommended_config(Settings.from_env()))

# Threads per worker process: each running tracker holds one. Keep spare ones (docs/operations.md).
worker_concurrency = int(os.environ.get("CELERY_WORKER_CONCURRENCY", "100"))
