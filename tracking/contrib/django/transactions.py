"""``start`` inside a Django ``atomic`` block takes effect only if the block commits.

Inside ``transaction.atomic()`` (or a view under ``ATOMIC_REQUESTS``), ``Tracker.start`` checks its
input at once, returns the tracker already registered if there is one, and otherwise records the
entry and publishes its message from ``transaction.on_commit``: a rolled-back order leaves no
entry and no message, and nothing waits for SQLite's write lock held by the block (the start
runs after the block has released it). Until the commit the returned reference says so
(``ref.on_commit``: no task ID yet); ``lookup`` after the commit finds the entry.

This holds whether or not the registry is in the project's database: the start is made on the
registry's own connection after the commit, as Celery's ``delay_on_commit`` publishes after it.
The one window it leaves: a process that dies between the project's commit and the start. A
reconciliation that starts trackers for orders without one covers it (``start`` is idempotent).
Django's ``TestCase`` never commits: use ``TestCase.captureOnCommitCallbacks(execute=True)`` (or
``TransactionTestCase``) in tests that start trackers inside atomic blocks.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import DEFAULT_DB_ALIAS, connections, transaction

from tracking.client import AppTransaction, add_finder
from tracking.settings import Settings


def atomic_block(settings: Settings) -> AppTransaction | None:
    """The ``atomic`` block open on the default database (or else on any other), if any."""
    aliases = [DEFAULT_DB_ALIAS, *(a for a in connections if a != DEFAULT_DB_ALIAS)]
    for alias in aliases:
        if alias in connections and _opened(alias) and connections[alias].in_atomic_block:
            return AppTransaction(on_commit=_on_commit_of(alias))
    return None


def _opened(alias: str) -> bool:
    """Whether this thread has used the database (asking an unused one would connect to it)."""
    return alias in {c.alias for c in connections.all(initialized_only=True)}


def _on_commit_of(alias: str) -> Callable[[Callable[[], None]], None]:
    def on_commit(callback: Callable[[], None]) -> None:
        transaction.on_commit(callback, using=alias)

    return on_commit


def register() -> None:
    """Make ``start`` join the project's atomic blocks (called when the app is ready)."""
    add_finder(atomic_block)
