"""What the commands print: data on stdout, as text, a rich table or JSON; passwords masked.

Tables are drawn by rich with colour on a terminal, and as plain aligned columns (no colour codes,
no borders, never cut or wrapped) when stdout is a pipe or a file, so that ``grep`` and ``awk`` read
them. ``--json`` output is always plain JSON.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import click
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table

from tracking.redact import redact_url
from tracking.tracker import TrackerRef

#: the width plain tables are laid out in: wide enough never to cut or wrap a cell
_PLAIN_WIDTH = 100_000


def out(text: str) -> None:
    """A line on stdout; every URL password masked, whatever the text came from."""
    click.echo(redact_url(text))


def out_json(data: Any) -> None:
    """``data`` as one line of JSON on stdout."""
    out(json.dumps(data))


def ref_json(ref: TrackerRef) -> dict[str, Any]:
    """A :class:`TrackerRef` as a JSON object: times in ISO 8601, the status as its value."""
    data = dataclasses.asdict(ref)
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = value.isoformat()
    data["status"] = ref.status.value
    return data


def print_ref(ref: TrackerRef, as_json: bool) -> None:
    """A tracker as JSON, or as ``key value`` lines (of its last error, the last line only)."""
    if as_json:
        out_json(ref_json(ref))
        return
    fields = [(key, str(value)) for key, value in ref_json(ref).items() if key != "last_error"]
    if ref.last_error:
        fields.append(("last_error", ref.last_error.strip().splitlines()[-1]))
    print_fields(fields)


def print_fields(fields: Iterable[tuple[str, str]]) -> None:
    """``key value`` lines, the values aligned in one column."""
    table = Table.grid(padding=(0, 1, 0, 0))
    table.add_column(min_width=16, style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in fields:
        table.add_row(redact_url(key), redact_url(value))
    _print(table)


def print_rows(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[str] = ()) -> None:
    """A table with a header line; the columns named in ``right`` are aligned right."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header, justify="right" if header in right else "left", overflow="fold")
    for row in rows:
        table.add_row(*(redact_url(cell) for cell in row))
    _print(table)


def _print(renderable: RenderableType) -> None:
    stream = sys.stdout
    if stream.isatty():
        Console(file=stream, highlight=False, emoji=False, markup=False).print(renderable)
        return
    plain = io.StringIO()
    console = Console(
        file=plain, width=_PLAIN_WIDTH, color_system=None, highlight=False, emoji=False, markup=False
    )
    if isinstance(renderable, Table) and renderable.box is not None:
        renderable.box = None  # no rule under the header in a pipe: one header line, then rows
    console.print(renderable)
    for line in plain.getvalue().splitlines():
        click.echo(line.rstrip())
