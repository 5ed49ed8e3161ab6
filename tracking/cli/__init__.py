"""The ``tracking`` command line, written with click (and rich for tables and progress).

One command tree, :data:`cli`, that ``tracking`` (the console script, :func:`main`),
``flask tracking`` (:func:`make_group`, added to the app's CLI) and ``manage.py tracking`` (which
runs :func:`main` with ``standalone_mode`` off) all reuse::

    tracking start TRANSACTION_ID | --from-file FILE   start (or find) trackers
    tracking lookup TRANSACTION_ID                     the live tracker of a transaction
    tracking stop TRANSACTION_ID                       stop one and wait until it has exited
    tracking ls (list)                                 registry entries
    tracking explain TRANSACTION_ID                    why it is (not) running, what happens next
    tracking migrate                                   create or upgrade the registry tables
    tracking supervise [--once]                        supervisor sweeps
    tracking check                                     refuse dangerous Celery settings
    tracking demo                                      trackers on a simulated ledger

The exit codes are :data:`~tracking.cli.errors.EXIT_CODES` (docs/cli.md). Nothing else in
`tracking` imports this package: it is the edge.
"""

from tracking.cli.errors import (
    EXIT_BAD_INPUT,
    EXIT_CODES,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_NOT_MIGRATED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    Failed,
)
from tracking.cli.group import HELP, cli, main, make_group

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CODES",
    "EXIT_NOT_MIGRATED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_UNAVAILABLE",
    "Failed",
    "HELP",
    "cli",
    "main",
    "make_group",
]
