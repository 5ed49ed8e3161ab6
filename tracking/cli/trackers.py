"""The commands about trackers: start, lookup, stop, ls (list) and explain."""

from __future__ import annotations

from typing import Any

import click

from tracking import celery as glue
from tracking import registry
from tracking.cli.bulk import start_from_file
from tracking.cli.errors import EXIT_NOT_FOUND, Failed, err
from tracking.cli.output import out, out_json, print_ref, print_rows, ref_json
from tracking.cli.params import (
    import_trackers,
    json_option,
    kind_option,
    start_args,
    tracker_class,
    transaction_id_argument,
)
from tracking.registry import Status
from tracking.tracker import TrackerRef


@click.command("start", short_help="Start (or find) a tracker, or one per line of a file.")
@transaction_id_argument(required=False)
@kind_option()
@click.option(
    "--from-file",
    metavar="FILE",
    help="Start one tracker per line of FILE ('-': stdin) instead; blank lines and # comments are "
    "skipped, invalid IDs reported and skipped.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    metavar="N",
    help="With --from-file: how many starts are in flight at once.",
)
@click.option(
    "--arg",
    "args",
    multiple=True,
    metavar="KEY=VALUE",
    callback=start_args,
    help="A start argument for the tracker's init (repeatable); VALUE is read as JSON if it parses.",
)
@json_option("Print JSON: the tracker as one object (with --from-file: one line per ID).")
def start(
    transaction_id: str | None,
    kind: str | None,
    from_file: str | None,
    jobs: int,
    args: dict[str, Any],
    as_json: bool,
) -> None:
    """Start (or find) the tracker of TRANSACTION_ID.

    Idempotent: a tracker already registered is printed with already_started true, unchanged.
    """
    if (transaction_id is None) == (from_file is None):
        raise click.UsageError("give a transaction ID or --from-file FILE (one of them)")
    cls = tracker_class(kind)
    if from_file is not None:
        code = start_from_file(cls, from_file, args, as_json, jobs)
        if code:
            click.get_current_context().exit(code)
        return
    assert transaction_id is not None
    print_ref(cls.start(transaction_id, **args), as_json)


@click.command("lookup", short_help="The live tracker of a transaction (exit 1 if none).")
@transaction_id_argument()
@kind_option()
@json_option("Print the tracker as a JSON object (null if there is none).")
def lookup(transaction_id: str, kind: str | None, as_json: bool) -> None:
    """The live tracker of TRANSACTION_ID; exit 1 if there is none (never started, finished,
    stopped, or dead: see explain)."""
    cls = tracker_class(kind)
    ref = cls.lookup(transaction_id)
    if ref is None:
        if as_json:
            out("null")
        raise Failed(f"no live {cls.kind} tracker for {transaction_id!r}", EXIT_NOT_FOUND)
    print_ref(ref, as_json)


@click.command("stop", short_help="Stop a tracker and wait until it has exited.")
@transaction_id_argument()
@kind_option()
@click.option(
    "--reason",
    default="normal",
    show_default=True,
    help="'normal' or 'shutdown' deregister the tracker; any other reason is a crash, and its restart "
    "policy applies.",
)
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the tracker to exit (exit 4 if it has not).",
)
@json_option("Print what was stopped as a JSON object.")
def stop(transaction_id: str, kind: str | None, reason: str, timeout: float, as_json: bool) -> None:
    """Stop the tracker of TRANSACTION_ID and wait until it has exited; exit 1 if there is none."""
    cls = tracker_class(kind)
    cls.stop(transaction_id, reason=reason, timeout=timeout)
    if as_json:
        out_json({"kind": cls.kind, "transaction_id": transaction_id, "reason": reason, "stopped": True})
    else:
        out(f"stopped {cls.kind} {transaction_id} ({reason})")


@click.command("ls", short_help="List registry entries (alias: list).")
@click.option("--kind", metavar="KIND", help="Only entries of this tracker kind (default: every kind).")
@click.option("--status", type=click.Choice([s.value for s in Status]), help="Only entries with this status.")
@click.option("--worker", metavar="NAME@HOST", help="Only entries run by this worker (its hostname).")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    metavar="N",
    help="Show at most N entries, oldest first (a note on stderr says when there were more).",
)
@json_option("Print a JSON list of the entries.")
def ls(kind: str | None, status: str | None, worker: str | None, limit: int, as_json: bool) -> None:
    """List registry entries (alias: list), dead ones included."""
    rows = registry.select(glue.current_settings(), kind, status, worker, limit=limit)
    refs = [TrackerRef.from_row(row) for row in rows]
    if as_json:
        out_json([ref_json(ref) for ref in refs])
    else:
        print_rows(
            ("KIND", "TRANSACTION ID", "STATUS", "RESTARTS", "WORKER"),
            [(r.kind, r.transaction_id, r.status.value, str(r.restarts), r.worker or "-") for r in refs],
            right=("RESTARTS",),
        )
    if len(refs) == limit:
        err(f"showing the first {limit} entries (--limit)")


@click.command("explain", short_help="Why a tracker is (not) running, and what happens next.")
@transaction_id_argument()
@click.option(
    "--kind", metavar="KIND", help="The tracker kind (default: every kind with an entry or history)."
)
@json_option("Print the facts as one JSON object.")
def explain(transaction_id: str, kind: str | None, as_json: bool) -> None:
    """Why is the tracker of TRANSACTION_ID (not) running, what happens next, and its recent
    history; exit 1 if the registry knows nothing of it."""
    from tracking.explain import explanation, render

    known = import_trackers() if kind is None else []
    facts = explanation(glue.current_settings(), kind, transaction_id, known)
    if as_json:
        out_json(facts)
    else:
        out(render(facts))
    if not facts["entries"] and not facts["history"]:
        click.get_current_context().exit(EXIT_NOT_FOUND)
