"""The example project's settings (examples/django_project/project/settings.py), plus the test
session's Redis key prefix, so that what the admin publishes reaches the test workers (which read
theirs from ``TEST_REDIS_PREFIX`` too: tests/integration/worker_config.py)."""

from __future__ import annotations

import importlib
import os

_project = importlib.import_module("project.settings")
globals().update({name: value for name, value in vars(_project).items() if name.isupper()})

if os.environ.get("TEST_REDIS_PREFIX"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": os.environ["TEST_REDIS_PREFIX"]}
