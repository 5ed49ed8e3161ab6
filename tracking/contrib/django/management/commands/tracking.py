"""``manage.py tracking COMMAND ...``: the ``tracking`` command line with the project's settings.

Every command of ``tracking`` (start, lookup, stop, ls, explain, migrate, supervise, check, ...)
with its own arguments, output and exit code: ``manage.py tracking lookup txn_1 --json``.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand

from tracking import cli


class Command(BaseCommand):
    help = "The tracking command line with this project's settings: manage.py tracking COMMAND --help"

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "args",
            nargs=argparse.REMAINDER,
            metavar="COMMAND ...",
            help="a tracking command and its arguments",
        )

    def handle(self, *args: str, **options: Any) -> None:
        run_cli(self, list(args))


def run_cli(command: BaseCommand, argv: list[str]) -> None:
    """Run ``tracking ARGV...`` with the project's settings, its output to the command's streams
    (so that ``call_command(..., stdout=...)`` catches it); exit with its code when not 0."""
    apps.get_app_config("tracking").make_current()
    # print() writes its own line endings; Django's OutputWrapper would add a second one.
    command.stdout.ending = command.stderr.ending = ""
    with contextlib.redirect_stdout(command.stdout), contextlib.redirect_stderr(command.stderr):
        code = cli.main(argv)
    if code:
        raise SystemExit(code)
