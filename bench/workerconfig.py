"""Celery configuration of the benchmark's workers (``CELERY_CONFIG_MODULE=bench.workerconfig``).

The only addition to `tracking`'s recommended configuration is isolation: on the shared Redis every
key of the run lives under the run's own prefix, so that the cleanup can delete exactly those.
"""

import os

_prefix = os.environ.get("BENCH_REDIS_PREFIX")
if _prefix:
    broker_transport_options = {"global_keyprefix": _prefix}
