"""``start`` inside a Django ``atomic`` block takes effect only if the block commits.

Inside ``transaction.atomic()`` (or a view under ``ATOMIC_REQUESTS``), ``Tracker.start`` checks its
input at once and records the entry and publishes its message from ``transaction.on_commit``: a
rolled-back order leaves no entry and no message, and nothing waits for SQLite's write lock held
by the block (the start runs after the block has released it). Until the commit the returned
reference says so (``ref.on_commit``: no task ID yet); ``lookup`` after the commit finds the
entry (the one registered already, if there was one: ``start`` is idempotent). With blocks open
on several databases, the start waits for all of them.

This holds whether or not the registry is in the project's database: the start is made on the
registry's own connection after the commit, as Celery's ``delay_on_commit`` publishes after it.
The window it leaves: a process that dies between the project's commit and the start, or a
registry that cannot be reached then (the failure is logged by Django, the request is not
failed). A reconciliation that starts trackers for orders without one covers it. Django's
``TestCase`` never commits: use ``TestCase.captureOnCommitCallbacks(execute=True)`` (or
``TransactionTestCase``) in tests that start trackers inside atomic blocks.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import connections, transaction

from tracking.client import AppTransaction, add_finder
from tracking.settings import Settings


def atomic_block(settings: Settings) -> AppTransaction | None:
    """The ``atomic`` blocks open in this thread, on any database, as one transaction: a start
    waits for every one of them to commit (an order may live in any of them), and is dropped
    with any that rolls back (Django then discards its ``on_commit`` callbacks)."""
    opened = [c.alias for c in connections.all(initialized_only=True) if c.in_atomic_block]
    if not opened:
        return None
    return AppTransaction(on_commit=_on_commit_of_all(opened))


def _on_commit_of_all(aliases: list[str]) -> Callable[[Callable[[], None]], None]:
    def on_commit(callback: Callable[[], None]) -> None:
        left = set(aliases)

        def committed(alias: str) -> Callable[[], None]:
            def start_when_all_committed() -> None:
                left.discard(alias)
                if not left:
                    callback()

            return start_when_all_committed

        for alias in aliases:
            # robust: a start that fails after the commit (the registry is down) is logged by
            # Django, and neither turns the committed request into an error nor skips the
            # project's own on_commit hooks.
            transaction.on_commit(committed(alias), using=alias, robust=True)

    return on_commit


def register() -> None:
    """Make ``start`` join the project's atomic blocks (called when the app is ready)."""
    add_finder(atomic_block)
