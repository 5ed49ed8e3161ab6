"""The commands that run the system: migrate, supervise, check and demo."""

from __future__ import annotations

import sys
import time

import click

from tracking import celery as glue
from tracking import registry
from tracking.cli.errors import EXIT_NOT_FOUND
from tracking.cli.output import out, out_json
from tracking.cli.params import json_option
from tracking.redact import redact_url


@click.command("migrate", short_help="Create or upgrade the registry tables (Alembic).")
@click.option(
    "--revision", default="head", show_default=True, help="The Alembic revision to upgrade (or downgrade) to."
)
@json_option("Print the database (password masked) and the revision as a JSON object.")
def migrate(revision: str, as_json: bool) -> None:
    """Create or upgrade the registry tables (Alembic). Safe to run on every deploy."""
    settings = glue.current_settings()
    registry.migrate(settings, revision)
    if as_json:
        out_json({"database_url": redact_url(settings.database_url), "revision": revision})
    else:
        out(f"registry at {settings.database_url} migrated to {revision}")


@click.command("supervise", short_help="Run supervisor sweeps (beat does this on a schedule).")
@click.option("--once", is_flag=True, help="Run one sweep, then exit (for cron or a manual reconciliation).")
@json_option("Print JSON: the default already, one object of counts per sweep.")
def supervise(once: bool, as_json: bool) -> None:
    """Run supervisor sweeps every TRACKING_SWEEP_SECONDS (beat does this on a schedule): restart
    failed and lost trackers, publish again the ones nobody claimed. Prints each sweep's counts."""
    settings = glue.current_settings()
    while True:
        out_json(glue.sweep(settings))
        if once:
            return
        time.sleep(settings.sweep_seconds)


@click.command("check", short_help="Refuse Celery settings dangerous for long-running trackers.")
@json_option('Print {"ok": ..., "problems": [...]} as one JSON object.')
def check(as_json: bool) -> None:
    """Refuse Celery settings that are dangerous for long-running trackers (pickle, prefetch above
    1, the prefork or solo pool); exit 1 if there are any."""
    from tracking.check import problems

    found = problems(glue.current_app())
    if as_json:
        out_json({"ok": not found, "problems": found})
    else:
        for problem in found:
            out(f"problem: {problem}")
        if not found:
            out("ok: no dangerous Celery settings for long-running trackers")
    if found:
        click.get_current_context().exit(EXIT_NOT_FOUND)


@click.command("demo", short_help="Trackers on a simulated ledger, on the embedded default.")
@click.option(
    "--count", type=click.IntRange(min=1), default=50, show_default=True, help="How many trackers to run."
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=50.0,
    show_default=True,
    help="How long to wait for every transaction to be confirmed.",
)
@click.option("--keep", is_flag=True, help="Keep the demo's folder (database, worker logs) afterwards.")
@json_option("Print the summary counts as one JSON object (the narration goes to stderr).")
def demo(count: int, seconds: float, keep: bool, as_json: bool) -> None:
    """Run trackers on a simulated ledger, with workers and crashes, on the embedded default (no
    servers); exit 1 if a tracker was lost or duplicated."""
    from tracking import demo as demo_module

    summary = demo_module.run(
        count=count, seconds=seconds, keep=keep, out=sys.stderr if as_json else sys.stdout
    )
    if as_json:
        out_json(summary)
    if summary["lost"] or summary["duplicates"]:
        click.get_current_context().exit(EXIT_NOT_FOUND)
