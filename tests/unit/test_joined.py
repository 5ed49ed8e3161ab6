"""How a start joins the application's SQLAlchemy session (tracking.client.joined), on a real
SQLite session: which commit runs the waiting starts (savepoints released or rolled back, the
outermost commit), a start with no transaction open, a session bound to a connection, a failing
start that does not stop the others, and when two URLs are the same database."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import orm

from tracking.client.joined import AppTransaction, session_transaction
from tracking.client.joined import same_database as same
from tracking.exceptions import TrackingError
from tracking.settings import Settings


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.sqlite3'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders (id VARCHAR(20) PRIMARY KEY)"))
    yield engine
    engine.dispose()


ELSEWHERE = Settings(database_url="sqlite:///elsewhere.sqlite3")  # not the session's database


def joined(session: orm.Session) -> AppTransaction:
    found = session_transaction(session, ELSEWHERE)
    assert found is not None and found.connection is None
    return found


def test_the_outermost_commit_runs_the_waiting_starts(engine: sa.Engine) -> None:
    ran: list[str] = []
    with orm.Session(engine) as session, session.begin():
        joined(session).on_commit(lambda: ran.append("a"))
        assert ran == []
    assert ran == ["a"]


def test_a_rollback_drops_them(engine: sa.Engine) -> None:
    ran: list[str] = []
    with orm.Session(engine) as session:
        session.begin()
        joined(session).on_commit(lambda: ran.append("a"))
        session.rollback()
        session.begin()
        session.commit()  # a later commit of the same session runs nothing dropped before
    assert ran == []


def test_a_released_savepoint_waits_for_the_outermost_commit(engine: sa.Engine) -> None:
    ran: list[str] = []
    with orm.Session(engine) as session:
        session.begin()
        with session.begin_nested():
            joined(session).on_commit(lambda: ran.append("in savepoint"))
        assert ran == []  # released: not committed yet
        session.rollback()
    assert ran == []


def test_a_savepoint_rolled_back_drops_only_its_own_starts(engine: sa.Engine) -> None:
    ran: list[str] = []
    with orm.Session(engine) as session, session.begin():
        joined(session).on_commit(lambda: ran.append("outer"))
        try:
            with session.begin_nested():
                joined(session).on_commit(lambda: ran.append("inner"))
                with session.begin_nested():
                    joined(session).on_commit(lambda: ran.append("innermost"))
                session.execute(sa.text("INSERT INTO orders VALUES ('o-1')"))
                session.execute(sa.text("INSERT INTO orders VALUES ('o-1')"))  # a duplicate
        except sa.exc.IntegrityError:
            pass  # get-or-create
        with session.begin_nested():
            joined(session).on_commit(lambda: ran.append("after"))
    assert ran == ["outer", "after"]


def test_with_no_transaction_open_the_start_is_made_at_once(engine: sa.Engine) -> None:
    with orm.Session(engine) as session:
        session.begin()
        session.commit()
        assert session_transaction(session, ELSEWHERE) is None
        assert not session.in_transaction()  # and none was begun that nobody would commit


def test_a_session_bound_to_a_connection_is_refused(engine: sa.Engine) -> None:
    with engine.connect() as conn, conn.begin(), orm.Session(bind=conn) as session:
        session.execute(sa.text("SELECT 1"))
        with pytest.raises(TrackingError, match="bound to an engine"):
            session_transaction(session, ELSEWHERE)


def test_a_start_that_fails_after_the_commit_is_logged_and_the_others_still_run(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    def fails() -> None:
        raise RuntimeError("the registry is down")

    with caplog.at_level(logging.ERROR, logger="tracking"):
        with orm.Session(engine) as session, session.begin():
            joined(session).on_commit(fails)
            joined(session).on_commit(lambda: ran.append("b"))
    assert ran == ["b"]
    assert "committed without their tracker" in caplog.text and "the registry is down" in caplog.text


def test_the_registry_s_own_database_is_joined_on_the_session_s_connection(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    engine = sa.create_engine(url)
    try:
        with orm.Session(engine) as session, session.begin():
            found = session_transaction(session, Settings(database_url=url))
            assert found is not None and found.connection is session.connection()
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u:secret@h:5432/db", True),
        ("postgresql://u@h/db", "postgresql://u@h/other", False),
        ("postgresql://u@h/db", "postgresql://v@h/db", False),
        ("postgresql://u@h/db", "postgresql://u@h:5433/db", False),
        ("postgresql://u@/db?host=/run/a", "postgresql://u@/db?host=/run/b", False),
        ("postgresql://u@/db?host=a&port=5433", "postgresql://u@/db?host=a&port=5432", False),
        ("postgresql://u@h/db?options=-csearch_path%3Da", "postgresql://u@h/db?options=-c", False),
        ("postgresql://u@localhost/db", "postgresql://u@127.0.0.1/db", False),  # unsure: says no
        ("postgresql://u@h/db", "sqlite:///db", False),
        ("sqlite://", "sqlite://", False),
        ("sqlite:///:memory:", "sqlite:///:memory:", False),
        ("sqlite:///a.sqlite3", "sqlite+pysqlite:///a.sqlite3", True),
        ("sqlite:///a.sqlite3", "sqlite:///b.sqlite3", False),
    ],
)
def test_same_database_says_yes_only_when_sure(a: str, b: str, expected: bool) -> None:
    assert same(a, b) is expected
