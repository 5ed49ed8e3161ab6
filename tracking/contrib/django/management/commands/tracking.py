"""``manage.py tracking COMMAND ...``: the ``tracking`` command line with the project's settings.

Every command of ``tracking`` (start, lookup, stop, ls, explain, migrate, supervise, check, ...)
with its own options, help, output and exit code: ``manage.py tracking lookup txn_1 --json``. The
click command group of ``tracking`` parses the arguments (``manage.py tracking lookup --help``);
Django's own options (``--settings``, ``--pythonpath``, ...) go before the command's name.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand
from django.db import connections

from tracking import cli

#: Django's options that take no value, and those that take one (``--settings X``, ``--settings=X``)
_DJANGO_FLAGS = frozenset({"--traceback", "--no-color", "--force-color", "--skip-checks"})
_DJANGO_VALUED = frozenset({"--settings", "--pythonpath", "--verbosity", "-v"})


class Command(BaseCommand):
    help = "The tracking command line with this project's settings: manage.py tracking COMMAND --help"
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "args",
            nargs=argparse.REMAINDER,
            metavar="COMMAND ...",
            help="a tracking command and its arguments",
        )

    def print_help(self, prog_name: str, subcommand: str) -> None:
        """``manage.py help tracking``: the tracking command group's help."""
        cli.main(["--help"], prog_name=f"{Path(prog_name).name} {subcommand}")

    def run_from_argv(self, argv: list[str]) -> None:
        """``manage.py tracking ARGS...``: the tracking commands parse ARGS, ``--help`` included
        (Django's parser would answer it with its own help). ManagementUtility has already applied
        Django's options; those before the command's name are dropped here."""
        self._called_from_command_line = True
        try:
            code = run_cli(self, click_args(argv[2:]), f"{Path(argv[0]).name} {argv[1]}", redirect=False)
        finally:
            with contextlib.suppress(ImproperlyConfigured):
                connections.close_all()
        if code:
            sys.exit(code)

    def handle(self, *args: str, **options: Any) -> None:
        """``call_command("tracking", "lookup", "txn_1")``: exits (``SystemExit``) with the
        command's code when it is not 0."""
        code = run_cli(self, list(args))
        if code:
            raise SystemExit(code)


def click_args(args: list[str]) -> list[str]:
    """``args`` without the Django options in front of the tracking command's name."""
    rest = list(args)
    while rest:
        name, has_value, _value = rest[0].partition("=")
        if rest[0] in _DJANGO_FLAGS or (rest[0].startswith("-v") and rest[0][2:].isdigit()):
            del rest[0]
        elif name in _DJANGO_VALUED:
            del rest[: 1 if has_value else 2]
        else:
            break
    return rest


def run_cli(
    command: BaseCommand, argv: list[str], prog_name: str = "manage.py tracking", redirect: bool = True
) -> int:
    """Run ``tracking ARGV...`` with the project's settings; returns its exit code. With
    ``redirect``, its output goes to the command's streams (so that ``call_command(...,
    stdout=...)`` catches it)."""
    apps.get_app_config("tracking").make_current()
    if not redirect:
        return cli.main(argv, prog_name=prog_name)
    # click writes its own line endings; Django's OutputWrapper would add a second one.
    command.stdout.ending = command.stderr.ending = ""
    with contextlib.redirect_stdout(command.stdout), contextlib.redirect_stderr(command.stderr):
        return cli.main(argv, prog_name=prog_name)
