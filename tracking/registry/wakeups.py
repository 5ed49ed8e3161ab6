"""Wake-up notifications: a connection that LISTENs on the wake-up channel (PostgreSQL with
psycopg 3), so that a cast, call or stop reaches the worker that runs the tracker at once. Where
there is none, the worker's control poll alone finds them. The loop that keeps a listener
connected is the worker's (``tracking.worker.listener``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from tracking.exceptions import RegistryUnavailable
from tracking.redact import redact_url
from tracking.registry.rows import WAKE_CHANNEL
from tracking.settings import Settings


class WakeupListener:
    """One connection listening for wake-up notifications; close it (or use ``with``) when done."""

    def __init__(self, engine: sa.Engine, driver: Any, raw: Any) -> None:
        self._engine, self._driver, self._raw = engine, driver, raw

    def notifications(self, timeout: float) -> Iterator[tuple[int, str]]:
        """The ``(row id, why)`` notifications, each as it arrives, for ``timeout`` seconds; raises
        RegistryUnavailable if the connection broke."""
        try:
            for note in self._driver.notifies(timeout=timeout):
                row_id, _, why = note.payload.partition(":")
                if row_id.isdigit():
                    yield int(row_id), why
        except Exception as exc:
            detail = redact_url(str(exc))
            raise RegistryUnavailable(f"wake-up listener lost its connection: {detail}") from exc

    def close(self) -> None:
        try:
            if getattr(self._driver, "broken", False):  # lost: nothing to roll back on return
                self._raw.invalidate()
            else:
                self._raw.close()
        finally:
            self._engine.dispose()

    def __enter__(self) -> WakeupListener:
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def listen(settings: Settings, channel: str = WAKE_CHANNEL, name: str = "listen") -> WakeupListener | None:
    """A connection listening for wake-up notifications (or those of ``channel``: the replies to
    calls), or None where the registry has none (not PostgreSQL, or a driver other than psycopg 3).
    Its application name is ``tracking-<pid>-<name>``. Raises RegistryUnavailable if it cannot
    connect."""
    url = sa.make_url(settings.database_url)
    if url.get_backend_name() != "postgresql":
        return None
    engine = sa.create_engine(
        url,
        poolclass=sa.NullPool,
        connect_args={"application_name": f"tracking-{os.getpid()}-{name}", "connect_timeout": 5},
    )
    try:
        raw = engine.raw_connection()
    except (sa_exc.DBAPIError, engine.dialect.loaded_dbapi.Error) as exc:
        # raw_connection() raises the driver's own error, not wrapped in DBAPIError.
        engine.dispose()
        detail = redact_url(str(getattr(exc, "orig", exc)))
        raise RegistryUnavailable(f"wake-up listener cannot connect: {detail}") from exc
    driver: Any = raw.driver_connection
    if not (callable(getattr(driver, "notifies", None)) and hasattr(driver, "execute")):  # not psycopg 3
        raw.close()
        engine.dispose()
        return None
    try:
        driver.autocommit = True
        driver.execute(f"LISTEN {channel}")
    except Exception as exc:
        raw.close()
        engine.dispose()
        raise RegistryUnavailable(f"wake-up listener cannot listen: {redact_url(str(exc))}") from exc
    return WakeupListener(engine, driver, raw)
