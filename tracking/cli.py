"""The ``tracking`` command: start, lookup, stop, ls, explain, migrate, supervise, check, demo.

Exit codes: 0 success; 1 not found (or ``check`` found problems); 2 bad input (for ``start
--from-file``: some lines were not valid transaction IDs; the valid ones were started); 3 the
registry database is unavailable; 4 timed out. Passwords in URLs are never printed.

``--json`` (start, lookup, ls, explain) prints JSON on stdout: one object per tracker, one line
each (``start --from-file`` prints one line per ID: JSON Lines), a list for ``ls``, ``null`` for a
lookup that finds nothing. Diagnostics, progress and summaries go to stderr.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from celery.utils.imports import import_from_cwd

from tracking import celery as glue
from tracking import registry
from tracking.exceptions import InvalidTransactionId, NotFound, RegistryUnavailable, Timeout, TrackingError
from tracking.redact import redact_url
from tracking.registry import Status
from tracking.tracker import Tracker, TrackerRef
from tracking.validation import transaction_id as valid_transaction_id

EXIT_NOT_FOUND, EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_TIMEOUT = 1, 2, 3, 4


class Failed(Exception):
    """A command gives up: the message for stderr and the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _out(text: str) -> None:
    """Print to stdout; every URL password masked, whatever the text came from."""
    print(redact_url(text))


def _err(text: str, stream: TextIO | None = None) -> None:
    print(f"tracking: {redact_url(text)}", file=stream or sys.stderr, flush=True)


def _fail(message: str, code: int) -> int:
    _err(message)
    return code


def _import_trackers() -> list[str]:
    """Import the modules of ``TRACKING_IMPORTS``; returns the tracker kinds known then."""
    for module in glue.current_settings().imports:
        try:
            import_from_cwd(module)
        except ImportError as exc:
            raise Failed(f"cannot import {module!r} (from TRACKING_IMPORTS): {exc}", EXIT_BAD_INPUT) from exc
    return sorted(glue._trackers)


def _tracker(kind: str | None) -> type[Tracker]:
    known = _import_trackers()
    if kind is None:
        if len(known) == 1:
            cls = glue.tracker_class(known[0])
            assert cls is not None
            return cls
        raise Failed(
            f"--kind is required (known kinds: {known or 'none'}; "
            "set TRACKING_IMPORTS to the modules that define trackers)",
            EXIT_BAD_INPUT,
        )
    found = glue.tracker_class(kind)
    if found is None:
        raise Failed(
            f"unknown kind {kind!r}: known {known}; set TRACKING_IMPORTS to the module that defines it",
            EXIT_BAD_INPUT,
        )
    return found


def _ref_json(ref: TrackerRef) -> dict[str, Any]:
    data = dataclasses.asdict(ref)
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = value.isoformat()
    data["status"] = ref.status.value
    return data


def _print_ref(ref: TrackerRef, as_json: bool) -> None:
    if as_json:
        _out(json.dumps(_ref_json(ref)))
        return
    for key, value in _ref_json(ref).items():
        if key != "last_error":
            _out(f"{key:16} {value}")
    if ref.last_error:
        _out(f"{'last_error':16} {ref.last_error.strip().splitlines()[-1]}")


def _parse_args(pairs: list[str]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Failed(f"--arg takes key=value, not {pair!r}", EXIT_BAD_INPUT)
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
    return args


# -- progress of a bulk start ---------------------------------------------------------------------


class Progress:
    """A one-line progress bar on a terminal (``\\r`` updates, at most ten a second); nothing when
    the stream is not a terminal. Messages printed meanwhile go above the bar."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.enabled = stream.isatty()
        self.began = time.monotonic()
        self._drawn_at = 0.0
        self._line = ""

    def update(self, done: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._drawn_at < 0.1:
            return
        self._drawn_at = now
        filled = self.WIDTH * done // self.total if self.total else self.WIDTH
        percent = 100 * done // self.total if self.total else 100
        line = (
            f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{self.total} {percent:3d}% "
            f"{rate(done, now - self.began):.0f}/s"
        )
        self.stream.write("\r" + line.ljust(len(self._line)))
        self.stream.flush()
        self._line = line

    def message(self, text: str) -> None:
        self.clear()
        _err(text, self.stream)
        self._drawn_at = 0.0

    def clear(self) -> None:
        if self.enabled and self._line:
            self.stream.write("\r" + " " * len(self._line) + "\r")
            self.stream.flush()
            self._line = ""


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def read_ids(path: str) -> Iterator[tuple[int, str]]:
    """``(line number, transaction ID)`` of each line of the file (``-``: stdin), stripped of
    surrounding whitespace; blank lines and lines starting with ``#`` are skipped."""
    try:
        stream = sys.stdin if path == "-" else Path(path).open(encoding="utf-8", newline=None)
    except OSError as exc:
        raise Failed(f"cannot read {path}: {exc.strerror}", EXIT_BAD_INPUT) from exc
    try:
        for number, line in enumerate(stream, start=1):
            value = line.strip()
            if value and not value.startswith("#"):
                yield number, value
    except UnicodeDecodeError as exc:
        raise Failed(f"{path} is not UTF-8 text: {exc}", EXIT_BAD_INPUT) from exc
    finally:
        if stream is not sys.stdin:
            stream.close()


def start_from_file(cls: type[Tracker], path: str, args: dict[str, Any], as_json: bool, jobs: int = 8) -> int:
    """Start the tracker of every transaction ID in the file, ``jobs`` at a time (each start is
    a registry transaction and a publish: a round trip or two each); returns the exit code.

    Invalid lines are reported with their number and skipped. JSON lines come out in file order.
    """
    lines = list(read_ids(path))
    name = "stdin" if path == "-" else path
    progress = Progress(len(lines), sys.stderr)
    counts = {"started": 0, "existing": 0, "invalid": 0, "done": 0}
    in_flight: collections.deque[tuple[int, Future[TrackerRef]]] = collections.deque()
    interrupted = ""

    def settle_oldest() -> None:
        ref = in_flight[0][1].result()
        in_flight.popleft()
        counts["existing" if ref.already_started else "started"] += 1
        counts["done"] += 1
        if as_json:
            _out(json.dumps(_ref_json(ref)))
        progress.update(counts["done"])

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="tracking-start") as pool:
        try:
            for number, txid in lines:
                try:
                    valid_transaction_id(txid)
                except InvalidTransactionId as exc:
                    counts["invalid"] += 1
                    counts["done"] += 1
                    progress.message(f"{name}:{number}: skipped: {exc}")
                    continue
                in_flight.append((number, pool.submit(cls.start, txid, **args)))
                while len(in_flight) >= 4 * jobs:
                    settle_oldest()
            while in_flight:
                settle_oldest()
            progress.update(counts["done"], force=True)
        except BaseException:
            if in_flight:
                interrupted = (
                    f"; stopped at line {in_flight[0][0]} (running it again is safe: start is idempotent)"
                )
            for _number, future in in_flight:
                future.cancel()
            raise
        finally:
            progress.clear()
            elapsed = time.monotonic() - progress.began
            _err(
                f"{cls.kind}: started {counts['started']}, already started {counts['existing']}, "
                f"invalid {counts['invalid']} of {len(lines)} IDs from {name} in {elapsed:.1f} s "
                f"({rate(counts['done'], elapsed):.0f}/s){interrupted}"
            )
    return EXIT_BAD_INPUT if counts["invalid"] else 0


# -- commands -------------------------------------------------------------------------------------


def cmd_start(ns: argparse.Namespace) -> int:
    if (ns.transaction_id is None) == (ns.from_file is None):
        raise Failed("give a transaction ID or --from-file FILE (one of them)", EXIT_BAD_INPUT)
    cls = _tracker(ns.kind)
    args = _parse_args(ns.arg)
    if ns.from_file is not None:
        if ns.jobs < 1:
            raise Failed("--jobs must be at least 1", EXIT_BAD_INPUT)
        return start_from_file(cls, ns.from_file, args, ns.json, ns.jobs)
    ref = cls.start(ns.transaction_id, **args)
    _print_ref(ref, ns.json)
    return 0


def cmd_lookup(ns: argparse.Namespace) -> int:
    cls = _tracker(ns.kind)
    ref = cls.lookup(ns.transaction_id)
    if ref is None:
        if ns.json:
            _out("null")
        return _fail(f"no live {cls.kind} tracker for {ns.transaction_id!r}", EXIT_NOT_FOUND)
    _print_ref(ref, ns.json)
    return 0


def cmd_stop(ns: argparse.Namespace) -> int:
    cls = _tracker(ns.kind)
    cls.stop(ns.transaction_id, reason=ns.reason, timeout=ns.timeout)
    _out(f"stopped {cls.kind} {ns.transaction_id} ({ns.reason})")
    return 0


def cmd_ls(ns: argparse.Namespace) -> int:
    if ns.limit < 1:
        raise Failed("--limit must be at least 1", EXIT_BAD_INPUT)
    status = Status(ns.status).value if ns.status else None
    rows = registry.select(glue.current_settings(), ns.kind, status, ns.worker, limit=ns.limit)
    refs = [TrackerRef.from_row(r) for r in rows]
    if ns.json:
        _out(json.dumps([_ref_json(r) for r in refs]))
    else:
        table = [("KIND", "TRANSACTION ID", "STATUS", "RESTARTS", "WORKER")]
        table += [(r.kind, r.transaction_id, r.status.value, str(r.restarts), r.worker or "-") for r in refs]
        widths = [min(max(len(row[i]) for row in table), 64) for i in range(4)]
        for kind, txid, state, restarts, worker in table:
            _out(
                f"{kind:{widths[0]}}  {txid:{widths[1]}}  {state:{widths[2]}}  "
                f"{restarts:>{widths[3]}}  {worker}"
            )
    if len(refs) == ns.limit:
        _err(f"showing the first {ns.limit} entries (--limit)")
    return 0


def cmd_explain(ns: argparse.Namespace) -> int:
    from tracking.explain import explanation, render

    known = _import_trackers() if ns.kind is None else []
    facts = explanation(glue.current_settings(), ns.kind, ns.transaction_id, known)
    _out(json.dumps(facts) if ns.json else render(facts))
    return 0 if facts["entries"] or facts["history"] else EXIT_NOT_FOUND


def cmd_migrate(ns: argparse.Namespace) -> int:
    settings = glue.current_settings()
    registry.migrate(settings, ns.revision)
    _out(f"registry at {settings.database_url} migrated to {ns.revision}")
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
        _out(f"problem: {problem}")
    if not found:
        _out("ok: no dangerous Celery settings for long-running trackers")
    return 1 if found else 0


def cmd_demo(ns: argparse.Namespace) -> int:
    from tracking import demo

    summary = demo.run(count=ns.count, seconds=ns.seconds, keep=ns.keep)
    return 0 if summary["lost"] == 0 and summary["duplicates"] == 0 else 1


def parser() -> argparse.ArgumentParser:
    from tracking import __version__

    p = argparse.ArgumentParser(prog="tracking", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", action="version", version=f"tracking {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_id(name: str, help_: str, optional: bool = False) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("transaction_id", nargs="?" if optional else None)
        sp.add_argument("--kind", help="the tracker kind (default: the only one imported)")
        return sp

    sp = with_id("start", "start (or find) the tracker of a transaction", optional=True)
    sp.add_argument(
        "--from-file",
        metavar="FILE",
        help="start one tracker per line of FILE ('-': stdin); blank lines and # comments are skipped",
    )
    sp.add_argument(
        "--jobs", type=int, default=8, metavar="N", help="with --from-file: starts in flight at once"
    )
    sp.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", help="a start argument")
    sp.add_argument("--json", action="store_true", help="print JSON (one line per tracker)")
    sp.set_defaults(func=cmd_start)
    sp = with_id("lookup", "the live tracker of a transaction (exit 1 if none)")
    sp.add_argument("--json", action="store_true", help="print JSON (null if none)")
    sp.set_defaults(func=cmd_lookup)
    sp = with_id("stop", "stop a tracker and wait until it has exited")
    sp.add_argument("--reason", default="normal", help="normal or shutdown deregister; others are crashes")
    sp.add_argument("--timeout", type=float, default=30.0)
    sp.set_defaults(func=cmd_stop)
    sp = with_id("explain", "why is this tracker (not) running, and what happens next")
    sp.add_argument("--json", action="store_true", help="print the facts as one JSON object")
    sp.set_defaults(func=cmd_explain)

    sp = sub.add_parser("ls", help="list registry entries")
    sp.add_argument("--kind")
    sp.add_argument("--status", choices=[s.value for s in Status])
    sp.add_argument("--worker", help="the worker hostname (name@host)")
    sp.add_argument("--limit", type=int, default=1000)
    sp.add_argument("--json", action="store_true", help="print a JSON list")
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
    except Failed as exc:
        return _fail(str(exc), exc.code)
    except NotFound as exc:
        return _fail(str(exc), EXIT_NOT_FOUND)
    except RegistryUnavailable as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    except Timeout as exc:
        return _fail(str(exc), EXIT_TIMEOUT)
    except (TrackingError, ValueError, TypeError) as exc:
        return _fail(str(exc), EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `tracking ls | head`: the reader left; say nothing more
        # Python would complain again when it flushes stdout at exit: point it at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
