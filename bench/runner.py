"""Run the benchmark's sections: ``python -m bench`` from the repository root (``--help``).

Each section is a module of this package with ``run(ctx) -> Section``; they run in the order of
SECTIONS, on one isolated set of services, each after the registry is emptied. The raw results go to
JSON; a full run writes docs/benchmarks.md and its plots (docs/bench/*.png).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import document, machine, plots
from bench.context import Context
from bench.core import Section
from bench.services import REPO_ROOT

#: the sections, in the order they run (later ones compare with earlier ones of the same run)
SECTIONS = tuple(
    "start lookup crash broker lost sweep writes gevent capacity messages ray parked bulk".split()
)
DOCS = REPO_ROOT / "docs" / "benchmarks.md"
RESULTS = REPO_ROOT / "bench" / "results"


def title(name: str) -> str:
    """A section's title, the first line of its module's docstring, without running it."""
    return (
        inspect.cleandoc(importlib.import_module(f"bench.{name}").__doc__ or name)
        .partition("\n")[0]
        .rstrip(".")
    )


def run_section(ctx: Context, name: str, command: str) -> Section:
    print(f"  {name} ...", flush=True)
    began = time.monotonic()
    try:
        ctx.pg.truncate()
        out: Section = importlib.import_module(f"bench.{name}").run(ctx)
    except Exception:
        out = Section(title(name), errors=[f"{name}: {traceback.format_exc()}"])
        print(out.errors[-1], file=sys.stderr, flush=True)
    out.name, out.command, out.seconds = name, command, time.monotonic() - began
    print(f"  {name} done in {out.seconds:.1f} s{' (FAILED)' if out.errors else ''}", flush=True)
    ctx.done[name] = out
    return out


@contextlib.contextmanager
def plot_folder(output: Path | None) -> Iterator[tuple[Path | None, str | None]]:
    """Where sections draw their plots: beside the Markdown written, or a temporary folder removed
    at the end (they are still drawn); None without matplotlib, and why."""
    missing = plots.available()
    if missing is not None:
        print(f"plots NOT drawn: {missing}", flush=True)
        yield None, f"Plots were not drawn: {missing}."
    elif output is not None:
        (output.parent / "bench").mkdir(parents=True, exist_ok=True)
        yield output.parent / "bench", None
    else:
        with tempfile.TemporaryDirectory(prefix="tracking-bench-plots-") as tmp:
            yield Path(tmp), None


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="The benchmark of tracking, section by section."
    )
    parser.add_argument("--smoke", action="store_true", help="tiny counts: check that it runs")
    parser.add_argument("--no-write", action="store_true", help="print the Markdown only: no docs, no JSON")
    parser.add_argument(
        "--section", action="append", choices=SECTIONS, metavar="NAME", help="run this section (repeatable)"
    )
    parser.add_argument("--only", help="run the sections of these letters, e.g. 'h,i'")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    parser.add_argument(
        "--output", type=Path, help="write the Markdown here (default: docs/benchmarks.md, full runs only)"
    )
    parser.add_argument("--json", type=Path, help="write the raw results here (default: bench/results/)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.list:
        print("\n".join(f"{name:10} {title(name)}" for name in SECTIONS))
        return 0
    letters = set((args.only or "").replace(" ", "").split(",")) - {""}
    chosen = set(args.section or ()) | {n for n in SECTIONS if title(n)[0] in letters}
    if letters and not chosen:
        raise SystemExit(f"no section has the letter(s) {args.only!r} (see --list)")
    names = [n for n in SECTIONS if n in chosen] or list(SECTIONS)
    profile = "smoke" if args.smoke else "full"
    full = names == list(SECTIONS) and not args.smoke
    output = None if args.no_write else args.output or (DOCS if full else None)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    results = args.json or (None if args.no_write else RESULTS / f"{stamp}-{profile}.json")
    smoke = " --smoke" if args.smoke else ""
    run: dict[str, Any] = {
        "command": " ".join(["python -m bench", shlex.join(sys.argv[1:] if argv is None else argv)]).strip(),
        "profile": profile,
        "started": time.time(),
    }
    print(f"tracking benchmark ({profile} profile): {', '.join(names)}", flush=True)
    sections: list[Section] = []
    with machine.LoadMonitor() as load, tempfile.TemporaryDirectory(prefix="tracking-bench-") as tmp:
        with plot_folder(output) as (plot_dir, run["plots_note"]):
            try:
                with Context(args.smoke, Path(tmp), plot_dir) as ctx:
                    sections = [run_section(ctx, n, f"python -m bench{smoke} --section {n}") for n in names]
                    run["machine"] = machine.describe(ctx.servers)
            except Exception:  # the services: nothing ran
                sections.append(Section("setup", errors=[f"setup: {traceback.format_exc()}"], name="setup"))
                print(sections[-1].errors[0], file=sys.stderr)
                run["machine"] = machine.describe({})
    run.update(duration=time.time() - run["started"], load=load.summary())
    text = document.markdown(sections, run)
    print(text)
    if results is not None:
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(
            json.dumps({**run, "sections": [s.to_json() for s in sections]}, indent=1, default=str)
        )
        print(f"raw results: {results}")
    if output is not None:
        output.write_text(text)
        print(f"wrote {output}")
    return 1 if any(s.errors for s in sections) else 0
