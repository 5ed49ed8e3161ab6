"""``tracking start --from-file``: one tracker per line of a file, several starts in flight at once,
with a rich progress bar on stderr when it is a terminal and a summary line always."""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from tracking.cli.errors import EXIT_BAD_INPUT, Failed, err
from tracking.cli.output import out_json, ref_json
from tracking.exceptions import InvalidTransactionId
from tracking.redact import redact_url
from tracking.tracker import Tracker, TrackerRef
from tracking.validation import transaction_id as valid_transaction_id


def rate(count: float, seconds: float) -> float:
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


class _Rate(ProgressColumn):
    """Starts a second, over the whole run."""

    def render(self, task: Task) -> Text:
        return Text(f"{rate(task.completed, task.elapsed or 0.0):.0f}/s", style="progress.data.speed")


class Bar:
    """The progress of a bulk start on stderr: a rich bar on a terminal (erased at the end), nothing
    otherwise. Messages printed meanwhile go above the bar."""

    def __init__(self, total: int) -> None:
        console = Console(stderr=True, highlight=False, markup=False, emoji=False)
        self.enabled = console.is_terminal
        columns = (BarColumn(bar_width=30), MofNCompleteColumn(), TaskProgressColumn(), TimeElapsedColumn())
        self.progress = Progress(
            *columns,
            _Rate(),
            console=console,
            transient=True,
            redirect_stdout=False,  # --json lines go to stdout, not above the bar on stderr
            disable=not self.enabled,
        )
        self.task = self.progress.add_task("start", total=total)

    def start(self) -> None:
        self.progress.start()

    def update(self, done: int) -> None:
        self.progress.update(self.task, completed=done)

    def message(self, text: str) -> None:
        if self.enabled:
            self.progress.console.print(Text(f"tracking: {redact_url(text)}"), soft_wrap=True)
        else:
            err(text)

    def stop(self) -> None:
        self.progress.stop()


class BulkStart:
    """Starts the trackers of many IDs, ``jobs`` at a time (each start is a registry transaction
    and a publish: a round trip or two each). JSON lines come out in file order."""

    def __init__(
        self, cls: type[Tracker], args: dict[str, Any], as_json: bool, name: str, total: int
    ) -> None:
        self.cls, self.args, self.as_json, self.name, self.total = cls, args, as_json, name, total
        self.counts = {"started": 0, "existing": 0, "invalid": 0, "done": 0}
        self.in_flight: collections.deque[tuple[int, Future[TrackerRef]]] = collections.deque()
        self.bar = Bar(total)
        self.began = time.monotonic()

    def run(self, lines: list[tuple[int, str]], jobs: int) -> None:
        interrupted = ""
        self.bar.start()
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="tracking-start") as pool:
            try:
                for number, txid in lines:
                    self._submit(pool, number, txid)
                    while len(self.in_flight) >= 4 * jobs:
                        self._settle_oldest()
                while self.in_flight:
                    self._settle_oldest()
            except BaseException:
                if self.in_flight:
                    interrupted = (
                        f"; stopped at line {self.in_flight[0][0]} "
                        "(running it again is safe: start is idempotent)"
                    )
                for _number, future in self.in_flight:
                    future.cancel()
                raise
            finally:
                self.bar.stop()
                err(self.summary() + interrupted)

    def _submit(self, pool: ThreadPoolExecutor, number: int, txid: str) -> None:
        try:
            valid_transaction_id(txid)
        except InvalidTransactionId as exc:
            self.counts["invalid"] += 1
            self.counts["done"] += 1
            self.bar.message(f"{self.name}:{number}: skipped: {exc}")
            self.bar.update(self.counts["done"])
            return
        self.in_flight.append((number, pool.submit(self.cls.start, txid, **self.args)))

    def _settle_oldest(self) -> None:
        ref = self.in_flight[0][1].result()
        self.in_flight.popleft()
        self.counts["existing" if ref.already_started else "started"] += 1
        self.counts["done"] += 1
        if self.as_json:
            out_json(ref_json(ref))
        self.bar.update(self.counts["done"])

    def summary(self) -> str:
        elapsed = time.monotonic() - self.began
        counts = self.counts
        return (
            f"{self.cls.kind}: started {counts['started']}, already started {counts['existing']}, "
            f"invalid {counts['invalid']} of {self.total} IDs from {self.name} in {elapsed:.1f} s "
            f"({rate(counts['done'], elapsed):.0f}/s)"
        )


def start_from_file(cls: type[Tracker], path: str, args: dict[str, Any], as_json: bool, jobs: int = 8) -> int:
    """Start the tracker of every transaction ID in the file; returns the exit code (2 when some
    lines were invalid: they are reported with their number and skipped)."""
    lines = list(read_ids(path))
    bulk = BulkStart(cls, args, as_json, "stdin" if path == "-" else path, len(lines))
    bulk.run(lines, jobs)
    return EXIT_BAD_INPUT if bulk.counts["invalid"] else 0
