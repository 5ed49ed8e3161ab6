"""The ``tracking`` command: start, lookup, stop, ls, explain, migrate, supervise, check, demo.

Exit codes: 0 success; 1 not found (or ``check`` found problems); 2 bad input; 3 the registry
database is unavailable; 4 timed out. Passwords in URLs are never printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import datetime
from typing import Any

from celery.utils.imports import import_from_cwd

from tracking import celery as glue
from tracking import registry
from tracking.exceptions import NotFound, RegistryUnavailable, Timeout, TrackingError
from tracking.redact import redact_url
from tracking.tracker import Status, Tracker, TrackerRef

EXIT_NOT_FOUND, EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_TIMEOUT = 1, 2, 3, 4


def _tracker(kind: str | None) -> type[Tracker]:
    for module in glue.current_settings().imports:
        import_from_cwd(module)
    known = glue._trackers
    if kind is None:
        if len(known) == 1:
            return next(iter(known.values()))
        raise SystemExit(
            _fail(
                f"--kind is required (known kinds: {sorted(known) or 'none'}; "
                "set TRACKING_IMPORTS to the modules that define trackers)",
                EXIT_BAD_INPUT,
            )
        )
    cls = glue.tracker_class(kind)
    if cls is None:
        raise SystemExit(
            _fail(
                f"unknown kind {kind!r}: known {sorted(known)}; "
                "set TRACKING_IMPORTS to the module that defines it",
                EXIT_BAD_INPUT,
            )
        )
    return cls


def _fail(message: str, code: int) -> int:
    print(f"tracking: {redact_url(message)}", file=sys.stderr)
    return code


def _ref_json(ref: TrackerRef) -> dict[str, Any]:
    data = dataclasses.asdict(ref)
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = value.isoformat()
    data["status"] = ref.status.value
    return data


def _print_ref(ref: TrackerRef, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_ref_json(ref)))
        return
    for key, value in _ref_json(ref).items():
        if key != "last_error":
            print(f"{key:16} {value}")
    if ref.last_error:
        print(f"{'last_error':16} {ref.last_error.strip().splitlines()[-1]}")


def _parse_args(pairs: list[str]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(_fail(f"--arg takes key=value, not {pair!r}", EXIT_BAD_INPUT))
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
    return args


# -- commands -------------------------------------------------------------------------------------


def cmd_start(ns: argparse.Namespace) -> int:
    cls = _tracker(ns.kind)
    ref = cls.start(ns.transaction_id, **_parse_args(ns.arg))
    _print_ref(ref, ns.json)
    return 0


def cmd_lookup(ns: argparse.Namespace) -> int:
    cls = _tracker(ns.kind)
    ref = cls.lookup(ns.transaction_id)
    if ref is None:
        if ns.json:
            print("null")
        return _fail(f"no live {cls.kind} tracker for {ns.transaction_id!r}", EXIT_NOT_FOUND)
    _print_ref(ref, ns.json)
    return 0


def cmd_stop(ns: argparse.Namespace) -> int:
    cls = _tracker(ns.kind)
    cls.stop(ns.transaction_id, reason=ns.reason, timeout=ns.timeout)
    print(f"stopped {cls.kind} {ns.transaction_id} ({ns.reason})")
    return 0


def cmd_ls(ns: argparse.Namespace) -> int:
    status = Status(ns.status).value if ns.status else None
    rows = registry.select(glue.current_settings(), ns.kind, status, ns.worker, limit=ns.limit)
    refs = [TrackerRef.from_row(r) for r in rows]
    if ns.json:
        print(json.dumps([_ref_json(r) for r in refs]))
        return 0
    print(f"{'KIND':16} {'TRANSACTION ID':40} {'STATUS':8} {'RESTARTS':>8}  WORKER")
    for ref in refs:
        print(
            f"{ref.kind:16} {ref.transaction_id:40} {ref.status.value:8} "
            f"{ref.restarts:>8}  {ref.worker or '-'}"
        )
    return 0


def cmd_explain(ns: argparse.Namespace) -> int:
    from tracking.explain import explain

    print(explain(glue.current_settings(), ns.kind, ns.transaction_id))
    return 0


def cmd_migrate(ns: argparse.Namespace) -> int:
    settings = glue.current_settings()
    registry.migrate(settings, ns.revision)
    print(f"registry at {redact_url(settings.database_url)} migrated to {ns.revision}")
    return 0


def cmd_supervise(ns: argparse.Namespace) -> int:
    settings = glue.current_settings()
    while True:
        counts = glue.sweep(settings)
        print(json.dumps(counts), flush=True)
        if ns.once:
            return 0
        time.sleep(settings.sweep_seconds)


def cmd_check(ns: argparse.Namespace) -> int:
    from tracking.check import problems

    found = problems(glue.current_app())
    for problem in found:
        print(f"problem: {problem}")
    if not found:
        print("ok: no dangerous Celery settings for long-running trackers")
    return 1 if found else 0


def cmd_demo(ns: argparse.Namespace) -> int:
    from tracking import demo

    summary = demo.run(count=ns.count, seconds=ns.seconds, keep=ns.keep)
    return 0 if summary["lost"] == 0 and summary["duplicates"] == 0 else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tracking", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)

    def with_id(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("transaction_id")
        sp.add_argument("--kind", help="the tracker kind (default: the only one imported)")
        return sp

    sp = with_id("start", "start (or find) the tracker of a transaction")
    sp.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", help="a start argument")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_start)
    sp = with_id("lookup", "the live tracker of a transaction (exit 1 if none)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_lookup)
    sp = with_id("stop", "stop a tracker and wait until it has exited")
    sp.add_argument("--reason", default="normal")
    sp.add_argument("--timeout", type=float, default=30.0)
    sp.set_defaults(func=cmd_stop)
    sp = with_id("explain", "why is this tracker (not) running, and what happens next")
    sp.set_defaults(func=cmd_explain)

    sp = sub.add_parser("ls", help="list registry entries")
    sp.add_argument("--kind")
    sp.add_argument("--status", choices=[s.value for s in Status])
    sp.add_argument("--worker")
    sp.add_argument("--limit", type=int, default=1000)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_ls)
    sp = sub.add_parser("migrate", help="create or upgrade the registry tables (Alembic)")
    sp.add_argument("--revision", default="head")
    sp.set_defaults(func=cmd_migrate)
    sp = sub.add_parser("supervise", help="run supervisor sweeps (beat does this on a schedule)")
    sp.add_argument("--once", action="store_true", help="one sweep, then exit")
    sp.set_defaults(func=cmd_supervise)
    sp = sub.add_parser("check", help="refuse Celery settings that are dangerous for long-running trackers")
    sp.set_defaults(func=cmd_check)
    sp = sub.add_parser("demo", help="fifty trackers on a simulated ledger, on the embedded default")
    sp.add_argument("--count", type=int, default=50)
    sp.add_argument("--seconds", type=float, default=50.0)
    sp.add_argument("--keep", action="store_true", help="keep the demo's folder (database, logs)")
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    try:
        code: int = ns.func(ns)
    except NotFound as exc:
        return _fail(str(exc), EXIT_NOT_FOUND)
    except RegistryUnavailable as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    except Timeout as exc:
        return _fail(str(exc), EXIT_TIMEOUT)
    except (TrackingError, ValueError, TypeError) as exc:
        return _fail(str(exc), EXIT_BAD_INPUT)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
