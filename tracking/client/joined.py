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
import logging
import os
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from sqlalchemy import orm

from tracking.exceptions import TrackingError
from tracking.settings import Settings

log = logging.getLogger("tracking")

#: runs a callback once the application's transaction has committed (never if it rolls back)
OnCommit = Callable[[Callable[[], None]], None]


@dataclasses.dataclass(frozen=True)
class AppTransaction:
    """The application's open database transaction, as ``start`` joins it."""

    on_commit: OnCommit
    #: the transaction's own connection when the registry lives in the same database (``start``
    #: writes its entry there); None when it lives elsewhere (``start`` waits for the commit)
    connection: sa.Connection | None = None


_joined: contextvars.ContextVar[Callable[[Settings], AppTransaction | None] | None] = contextvars.ContextVar(
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
    if bound is not None:  # inside in_transaction(session): that session, whatever else is open
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


_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}


def same_database(url: str | sa.URL, other: str | sa.URL) -> bool:
    """Whether two SQLAlchemy URLs surely name the same database: the same backend, user, host,
    port (the default one filled in; a host or port in the query string counts), database and
    connection options; the driver and password do not count. SQLite: the same file (an
    in-memory database is never shared). When unsure it says no: the start is then made after
    the commit, which is safe, only without the entry written with the application's rows."""
    a, b = sa.make_url(url), sa.make_url(other)
    if a.get_backend_name() != b.get_backend_name():
        return False
    if a.get_backend_name() == "sqlite":
        return _sqlite_file(a) is not None and _sqlite_file(a) == _sqlite_file(b)
    return _server_key(a) == _server_key(b)


def _server_key(url: sa.URL) -> tuple[object, ...]:
    query = {k: v for k, v in url.query.items() if k not in ("host", "port")}
    host = url.query.get("host", url.host) or "localhost"
    port = url.query.get("port", url.port) or _DEFAULT_PORTS.get(url.get_backend_name())
    return (url.username, str(host), str(port), url.database, sorted(query.items()))


def _sqlite_file(url: sa.URL) -> str | None:
    name = url.database
    if not name or name == ":memory:" or name.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return os.path.realpath(name)


def session_transaction(session: orm.Session, settings: Settings) -> AppTransaction | None:
    """``session``'s open transaction as ``start`` joins it; None when it has none (begun and
    committed already, or never begun): the start is then made at once, since a transaction that
    ``start`` would begin nobody would commit."""
    if not session.in_transaction():
        return None
    bind = session.get_bind()
    if isinstance(bind, sa.Connection):
        raise TrackingError(
            "tracking.in_transaction needs a session bound to an engine: the commit of a session "
            "bound to a connection may not be the database's (the connection's own transaction "
            "decides), and no event tells when that one commits. Start the tracker after it."
        )
    shared = same_database(bind.url, settings.database_url)
    return AppTransaction(
        on_commit=lambda callback: _after_commit(session, callback),
        connection=session.connection() if shared else None,
    )


# -- after the session's outermost commit ----------------------------------------------------------
#
# Each waiting start belongs to the transaction it was made in: the session's root transaction or
# a savepoint (``begin_nested``). A savepoint released hands its starts to the transaction around
# it; one rolled back drops them (and those its inner savepoints handed it); the root's commit runs
# them all, each on its own, so that one failing does not stop the others.

_PENDING = "tracking_on_commit"


def _after_commit(session: orm.Session, callback: Callable[[], None]) -> None:
    waiting: dict[orm.SessionTransaction, list[Callable[[], None]]] | None = session.info.get(_PENDING)
    if waiting is None:
        waiting = session.info[_PENDING] = {}
        # The session's listeners stay for its life (one may not be removed while its event runs).
        sa.event.listen(session, "after_commit", _committed)
        sa.event.listen(session, "after_transaction_end", _ended)
    owner = session.get_nested_transaction() or session.get_transaction()
    assert owner is not None  # session_transaction checked that one is open
    waiting.setdefault(owner, []).append(callback)


def _committed(session: orm.Session) -> None:
    """A savepoint was released, or the root transaction committed (SQLAlchemy sends this event
    for both; the transaction that commits is still the session's current one)."""
    waiting: dict[orm.SessionTransaction, list[Callable[[], None]]] = session.info.get(_PENDING) or {}
    done = session.get_nested_transaction() or session.get_transaction()
    if done is None or not waiting:
        return
    callbacks = waiting.pop(done, [])
    if done.nested and done.parent is not None:
        waiting.setdefault(done.parent, []).extend(callbacks)
        return
    # The outermost commit: its own starts, and any a released savepoint left behind.
    for rest in list(waiting.values()):
        callbacks.extend(rest)
    waiting.clear()
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception(
                "a tracker start waiting for the application's commit failed after that commit: "
                "the application's rows are committed without their tracker (start it again; "
                "start is idempotent)"
            )


def _ended(session: orm.Session, transaction: orm.SessionTransaction) -> None:
    """A transaction ended: one that committed handed its starts on already; one rolled back
    drops what is still waiting under it."""
    waiting: dict[orm.SessionTransaction, list[Callable[[], None]]] | None = session.info.get(_PENDING)
    if waiting:
        waiting.pop(transaction, None)
