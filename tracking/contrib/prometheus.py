"""Prometheus metrics (``pip install "tracking[prometheus]"``): see :mod:`tracking.metrics`."""

from tracking.metrics import RECOVERY_BUCKETS, STATUSES, RegistryCollector, TickDurationCollector, serve

__all__ = ["RECOVERY_BUCKETS", "STATUSES", "RegistryCollector", "TickDurationCollector", "serve"]
