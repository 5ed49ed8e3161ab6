"""The database's clock, as SQL expressions: every time the registry writes or compares is the
database's, never a process's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement


class db_now(FunctionElement[datetime]):
    """The database's current time, plus ``offset`` seconds (a bound parameter)."""

    type = sa.DateTime(timezone=True)
    inherit_cache = True

    def __init__(self, offset: float = 0.0) -> None:
        super().__init__(sa.literal(round(float(offset), 3), sa.Float()))


@compiles(db_now, "postgresql")
def _now_pg(element: db_now, compiler: Any, **kw: Any) -> str:
    return f"(now() + make_interval(secs => {compiler.process(element.clauses, **kw)}))"


@compiles(db_now, "sqlite")
def _now_sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    offset = compiler.process(element.clauses, **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now', ({offset}) || ' seconds')"


class later(FunctionElement[datetime]):
    """A timestamp expression plus ``seconds`` (a bound parameter), on the database."""

    type = sa.DateTime(timezone=True)
    inherit_cache = True

    def __init__(self, when: Any, seconds: float) -> None:
        super().__init__(when, sa.literal(round(float(seconds), 3), sa.Float()))


@compiles(later, "postgresql")
def _later_pg(element: later, compiler: Any, **kw: Any) -> str:
    when, seconds = (compiler.process(c, **kw) for c in element.clauses)
    return f"({when} + make_interval(secs => {seconds}))"


@compiles(later, "sqlite")
def _later_sqlite(element: later, compiler: Any, **kw: Any) -> str:
    when, seconds = (compiler.process(c, **kw) for c in element.clauses)
    return f"strftime('%Y-%m-%d %H:%M:%f', {when}, ({seconds}) || ' seconds')"


class greatest(FunctionElement[int]):
    """The largest of its arguments: GREATEST on PostgreSQL, the many-argument MAX on SQLite."""

    type = sa.BigInteger()
    inherit_cache = True


@compiles(greatest, "postgresql")
def _greatest_pg(element: greatest, compiler: Any, **kw: Any) -> str:
    return f"greatest({compiler.process(element.clauses, **kw)})"


@compiles(greatest, "sqlite")
def _greatest_sqlite(element: greatest, compiler: Any, **kw: Any) -> str:
    return f"max({compiler.process(element.clauses, **kw)})"


class seconds_since(FunctionElement[float]):
    """Seconds from ``earlier`` to ``later`` (negative if ``later`` is earlier)."""

    type = sa.Double()
    inherit_cache = True


@compiles(seconds_since, "postgresql")
def _seconds_pg(element: seconds_since, compiler: Any, **kw: Any) -> str:
    later, earlier = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(EXTRACT(EPOCH FROM ({later} - {earlier})) AS DOUBLE PRECISION)"


@compiles(seconds_since, "sqlite")
def _seconds_sqlite(element: seconds_since, compiler: Any, **kw: Any) -> str:
    # julianday's difference is off by some microseconds: rounded to SQLite's milliseconds
    later, earlier = (compiler.process(c, **kw) for c in element.clauses)
    return f"(round((julianday({later}) - julianday({earlier})) * 86400000.0) / 1000.0)"
