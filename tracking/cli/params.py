"""Options several commands share, and the tracker class a ``--kind`` names."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
from celery.utils.imports import import_from_cwd

from tracking import celery as glue
from tracking import tracker
from tracking.cli.errors import EXIT_BAD_INPUT, Failed
from tracking.tracker import Tracker

F = TypeVar("F", bound=Callable[..., Any])


def json_option(help_text: str) -> Callable[[F], F]:
    """``--json``: machine-readable output on stdout, described by ``help_text``."""
    return click.option("as_json", "--json", is_flag=True, help=help_text)


def kind_option(help_text: str = "The tracker kind (default: the only kind imported).") -> Callable[[F], F]:
    return click.option("--kind", metavar="KIND", help=help_text)


def transaction_id_argument(required: bool = True) -> Callable[[F], F]:
    return click.argument("transaction_id", metavar="TRANSACTION_ID", required=required)


def import_trackers() -> list[str]:
    """Import the modules of ``TRACKING_IMPORTS``; returns the tracker kinds known then."""
    for module in glue.current_settings().imports:
        try:
            import_from_cwd(module)
        except ImportError as exc:
            raise Failed(f"cannot import {module!r} (from TRACKING_IMPORTS): {exc}", EXIT_BAD_INPUT) from exc
    return tracker.kinds()


def tracker_class(kind: str | None) -> type[Tracker]:
    """The tracker class of ``kind``; without one, the only kind imported (else exit 2)."""
    known = import_trackers()
    if kind is None:
        if len(known) == 1:
            kind = known[0]
        else:
            raise Failed(
                f"--kind is required (known kinds: {known or 'none'}; "
                "set TRACKING_IMPORTS to the modules that define trackers)",
                EXIT_BAD_INPUT,
            )
    found = tracker.of_kind(kind)
    if found is None:
        raise Failed(
            f"unknown kind {kind!r}: known {known}; set TRACKING_IMPORTS to the module that defines it",
            EXIT_BAD_INPUT,
        )
    return found


def start_args(_ctx: click.Context, _param: click.Parameter, pairs: tuple[str, ...]) -> dict[str, Any]:
    """``--arg KEY=VALUE`` options as keyword arguments: a VALUE that parses as JSON is that JSON
    value (``until=3`` is the number 3), any other is the string."""
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"takes KEY=VALUE, not {pair!r}")
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
    return args
