"""Celery configuration of the test workers (CELERY_CONFIG_MODULE): the recommended settings, plus
the test session's Redis key prefix so that the shared Redis is left clean."""

from __future__ import annotations

import os

from tracking.celery import recommended_config
from tracking.settings import Settings

globals().update(recommended_config(Settings.from_env()))

if os.environ.get("TEST_REDIS_PREFIX"):
    broker_transport_options = {"global_keyprefix": os.environ["TEST_REDIS_PREFIX"]}
