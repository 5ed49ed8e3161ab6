"""The command group that ``tracking``, ``flask tracking`` and ``manage.py tracking`` share, and the
console script's entry point."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

from tracking.cli import operations, trackers
from tracking.cli.errors import EPILOG, EXIT_INTERRUPTED, translate

#: every command, in the order ``--help`` lists them
COMMANDS: tuple[click.Command, ...] = (
    trackers.start,
    trackers.lookup,
    trackers.stop,
    trackers.ls,
    trackers.explain,
    operations.migrate,
    operations.supervise,
    operations.check,
    operations.demo,
)

#: other names a command answers to
ALIASES = {"list": "ls"}

HELP = """Start, find, stop, list and explain trackers; migrate the registry; supervise.

Settings are the workers' (TRACKING_* variables, celeryconfig.py). The modules in TRACKING_IMPORTS
are imported to know the tracker kinds: --kind may be left out when only one kind is imported.
--json prints machine-readable JSON on stdout; diagnostics, progress and summaries go to stderr.
Passwords in URLs are never printed.
"""


class TrackingGroup(click.Group):
    """A click group that lists its commands in order, knows their aliases, and turns the errors of
    `tracking` into exit codes (:func:`~tracking.cli.errors.translate`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, ALIASES.get(cmd_name, cmd_name))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # `tracking ls | head`: the reader left; say nothing more
            _silence_stdout()
            ctx.exit(0)
        except Exception as exc:
            failed = translate(exc)
            if failed is None:
                raise
            raise failed from exc


def _silence_stdout() -> None:
    """Point stdout at /dev/null: Python would complain again when it flushes stdout at exit."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a test's buffer)
        return
    os.dup2(os.open(os.devnull, os.O_WRONLY), fd)


def make_group(
    name: str = "tracking",
    *,
    help_text: str = HELP,
    prepare: Callable[[], None] | None = None,
    leave_out: Iterable[str] = (),
) -> TrackingGroup:
    """The ``tracking`` commands as a click group named ``name``, for a command line of its own or
    to add to another (``flask``). ``prepare`` runs before any command (it may be a click callback,
    such as one wrapped in Flask's ``with_appcontext``); ``leave_out`` names commands to drop."""
    from tracking import __version__

    dropped = set(leave_out)
    group = TrackingGroup(
        name,
        commands=[command for command in COMMANDS if command.name not in dropped],
        callback=prepare,
        help=help_text,
        epilog=EPILOG,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )
    click.version_option(__version__, "--version", prog_name="tracking", message="%(prog)s %(version)s")(
        group
    )
    return group


#: the ``tracking`` command
cli = make_group()


def main(argv: Sequence[str] | None = None, *, prog_name: str = "tracking", group: click.Group = cli) -> int:
    """Run ``tracking ARGV...`` (default: the process's arguments) and return its exit code; the
    console script's entry point. Errors are printed, never raised (Ctrl-C: 130)."""
    try:
        result = group.main(
            args=list(argv) if argv is not None else None, prog_name=prog_name, standalone_mode=False
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        return EXIT_INTERRUPTED
    return result if isinstance(result, int) else 0
