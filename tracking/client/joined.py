"""Starting a tracker inside the application's own database transaction.

A ``start`` made while the application has a transaction open takes effect only if that
transaction commits: a rolled-back order leaves no entry and no message. Two ways, chosen by where
the registry lives:

* **The registry is in the application's database** (the same URL): ``start`` writes the entry on
  the application's connection, inside its transaction, so the entry commits or rolls back with
  the order; the message is published once the transaction has committed. Nothing can be lost
  between the two: an entry whose message never went out is published again by the supervisor.
* **The registry is elsewhere**: ``start`` checks the input at once, and records the entry and
  publishes its message once the application's transaction has committed (as Celery's
  ``delay_on_commit``). Until then there is no entry: the returned reference says so
  (``ref.on_commit``). A process that dies between the application's commit and that record
  leaves the order without its tracker; a reconciliation that starts trackers for orders without
  one (``start`` is idempotent) covers that window.

A framework integration finds the open transaction (Django: an ``atomic`` block); for a
SQLAlchemy session, say which one with :func:`in_transaction`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from sqlalchemy import orm

from tracking.settings import Settings

#: runs a callback once the application's transaction has committed (never if it rolls back)
OnCommit = Callable[[Callable[[], None]], None]


@dataclasses.dataclass(frozen=True)
class AppTransaction:
    """The application's open database transaction, as ``start`` joins it."""

    on_commit: OnCommit
    #: the transaction's own connection when the registry lives in the same database (``start``
    #: writes its entry there); None when it lives elsewhere (``start`` waits for the commit)
    connection: sa.Connection | None = None


_joined: contextvars.ContextVar[Callable[[Settings], AppTransaction] | None] = contextvars.ContextVar(
    "tracking_joined", default=None
)
_finders: list[Callable[[Settings], AppTransaction | None]] = []


def add_finder(find: Callable[[Settings], AppTransaction | None]) -> None:
    """Consult ``find`` for the application's open transaction (a framework integration's hook:
    Django's finds an ``atomic`` block)."""
    if find not in _finders:
        _finders.append(find)


def open_transaction(settings: Settings) -> AppTransaction | None:
    """The application transaction a ``start`` on the registry at ``settings`` joins, if any."""
    bound = _joined.get()
    if bound is not None:
        return bound(settings)
    for find in list(_finders):
        found = find(settings)
        if found is not None:
            return found
    return None


@contextlib.contextmanager
def in_transaction(session: orm.Session) -> Iterator[None]:
    """Inside this block, ``start`` joins ``session``'s transaction: the tracker exists only if
    the session commits. ::

        with Session(engine) as session, session.begin():
            session.add(Order(id="order-1"))
            with tracking.in_transaction(session):
                PaymentTracker.start("order-1")

    When the session's database is the registry's, the entry is written on the session's
    connection; otherwise it is recorded and published after the commit. Flask-SQLAlchemy: pass
    ``db.session``.
    """
    token = _joined.set(lambda settings: session_transaction(session, settings))
    try:
        yield
    finally:
        _joined.reset(token)


def same_database(url: str | sa.URL, other: str | sa.URL) -> bool:
    """Whether two SQLAlchemy URLs name the same database (the driver and password aside)."""
    a, b = sa.make_url(url), sa.make_url(other)
    if a.get_backend_name() != b.get_backend_name():
        return False
    if a.get_backend_name() == "sqlite":
        return _sqlite_file(a) == _sqlite_file(b)
    return (a.host or "localhost", a.port, a.database, a.username) == (
        b.host or "localhost",
        b.port,
        b.database,
        b.username,
    )


def _sqlite_file(url: sa.URL) -> str | None:
    return os.path.realpath(url.database) if url.database and url.database != ":memory:" else None


def session_transaction(session: orm.Session, settings: Settings) -> AppTransaction:
    """``session``'s transaction, begun if it was not yet, as ``start`` joins it."""
    shared = same_database(session.get_bind().engine.url, settings.database_url)
    return AppTransaction(
        on_commit=lambda callback: _after_commit(session, callback),
        connection=session.connection() if shared else None,
    )


_PENDING = "tracking_on_commit"
_LISTENING = "tracking_listening"


def _after_commit(session: orm.Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` after ``session``'s transaction commits; forget it if it rolls back. The
    session's listeners stay for its life (removing one while its event runs is not allowed)."""
    if not session.info.get(_LISTENING):
        session.info[_LISTENING] = True
        sa.event.listen(session, "after_commit", _run_waiting)
        sa.event.listen(session, "after_rollback", _forget_waiting)
    session.info.setdefault(_PENDING, []).append(callback)


def _run_waiting(session: orm.Session) -> None:
    waiting: list[Callable[[], None]] = session.info.pop(_PENDING, [])
    for callback in waiting:
        callback()


def _forget_waiting(session: orm.Session) -> None:
    session.info.pop(_PENDING, None)
