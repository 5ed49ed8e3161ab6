"""tracking: long-running, supervised, registered trackers on Celery + SQL.

GenServer + Registry + DynamicSupervisor for money transactions: ``Tracker.start(txn_id)`` runs a
tracker that polls a slow source until the transaction is final; ``lookup`` finds it from any
process; a supervisor restarts it, with its state, when it crashes or its worker is lost.
"""

from importlib.metadata import PackageNotFoundError, version

from tracking.celery import install
from tracking.client import Client, TrackerRef, in_transaction
from tracking.exceptions import (
    Done,
    Fenced,
    InvalidTracker,
    InvalidTransactionId,
    NotFound,
    RegistryNotMigrated,
    RegistryRefused,
    RegistryUnavailable,
    StateNotSerializable,
    Timeout,
    TrackerCrashed,
    TrackingError,
)
from tracking.registry import Status
from tracking.settings import Settings
from tracking.tracker import Tracker

try:
    __version__ = version("tracking")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0.0.0"

__all__ = [
    "Client",
    "Done",
    "Fenced",
    "InvalidTracker",
    "InvalidTransactionId",
    "NotFound",
    "RegistryNotMigrated",
    "RegistryRefused",
    "RegistryUnavailable",
    "Settings",
    "StateNotSerializable",
    "Status",
    "Timeout",
    "Tracker",
    "TrackerCrashed",
    "TrackerRef",
    "TrackingError",
    "__version__",
    "in_transaction",
    "install",
]
