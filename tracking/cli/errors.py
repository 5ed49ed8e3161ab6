"""The exit codes of the ``tracking`` command, and how errors become them.

Every command exits with one of :data:`EXIT_CODES`; the errors of `tracking` are translated in one
place (:func:`translate`), so ``tracking``, ``flask tracking`` and ``manage.py tracking`` agree.
"""

from __future__ import annotations

from typing import IO, Any

import click

from tracking.exceptions import NotFound, RegistryNotMigrated, RegistryUnavailable, Timeout, TrackingError
from tracking.redact import redact_url

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_TIMEOUT = 4
EXIT_NOT_MIGRATED = 5
EXIT_INTERRUPTED = 130

#: (code, meaning): the table of docs/cli.md and of ``tracking --help``
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success"),
    (EXIT_NOT_FOUND, "not found (check: problems found; demo: a tracker was lost or duplicated)"),
    (EXIT_BAD_INPUT, "bad input or usage (start --from-file: some lines were invalid, the rest started)"),
    (EXIT_UNAVAILABLE, "the registry database is unavailable (retry later)"),
    (EXIT_TIMEOUT, "timed out (stop)"),
    (EXIT_NOT_MIGRATED, "the registry is not migrated: run `tracking migrate`"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)

#: the epilog of the command group's help (``\b``: click keeps the lines as they are)
EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES)


def err(text: str, file: IO[Any] | None = None) -> None:
    """A diagnostic on stderr, ``tracking: TEXT``, every URL password masked."""
    click.echo(f"tracking: {redact_url(text)}", file=file, err=file is None)


class Failed(click.ClickException):
    """A command gives up: ``tracking: MESSAGE`` on stderr, and the exit code ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code  # type: ignore[misc]  # a class variable to click; ours is per error

    def show(self, file: IO[Any] | None = None) -> None:
        err(self.format_message(), file)


def translate(exc: Exception) -> Failed | None:
    """The :class:`Failed` an error of `tracking` (or bad input: ``ValueError``, ``TypeError``)
    exits with; ``None`` for any other error, which is a bug to show with its traceback."""
    if isinstance(exc, NotFound):
        return Failed(str(exc), EXIT_NOT_FOUND)
    if isinstance(exc, RegistryUnavailable):
        return Failed(str(exc), EXIT_UNAVAILABLE)
    if isinstance(exc, RegistryNotMigrated):
        return Failed(str(exc), EXIT_NOT_MIGRATED)
    if isinstance(exc, Timeout):
        return Failed(str(exc), EXIT_TIMEOUT)
    if isinstance(exc, TrackingError | ValueError | TypeError):
        return Failed(str(exc), EXIT_BAD_INPUT)
    return None
