"""What every section shares: latency series, number formats, Markdown tables, and the Section.

Stdlib only: the probes (``bench.geventprobe``, ``bench.raypeer``) import it in fresh interpreters.
"""

from __future__ import annotations

import dataclasses
import inspect
import statistics
import sys
import textwrap
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def percentile(values: Sequence[float], q: int) -> float:
    """The q-th percentile (1 to 99), interpolated between the closest ranks."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def spread(values: Sequence[float]) -> dict[str, float]:
    """n, p50, p99 and max of ``values``."""
    top = max(values) if values else float("nan")
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99), "max": top}


class Series(list[float]):
    """Durations of one operation, in seconds (saved as a plain list)."""

    def ms(self, q: int) -> float:
        return percentile(self, q) * 1000.0

    @property
    def p50_ms(self) -> float:
        return self.ms(50)

    @property
    def p99_ms(self) -> float:
        return self.ms(99)

    @property
    def max_ms(self) -> float:
        return max(self) * 1000.0 if self else float("nan")

    def time(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, its duration appended."""
        t0 = time.perf_counter()
        out = fn(*args)
        self.append(time.perf_counter() - t0)
        return out


def alternate(count: int, block: int, *ops: Callable[[int], Any]) -> list[Series]:
    """Each op timed ``count`` times, in alternating blocks, so that drift in the machine's load hits
    them alike; one Series per op. An op raising AssertionError stops the run."""
    out = [Series() for _ in ops]
    for start in range(0, count, block):
        for op, series in zip(ops, out, strict=True):
            for i in range(start, min(start + block, count)):
                series.time(op, i)
    return out


# -- formats ----------------------------------------------------------------------------------------


def ms(value: float) -> str:
    """Milliseconds, as ms below a second and s above."""
    if value != value:  # NaN: nothing measured
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def secs(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def rate(per_s: float) -> str:
    return f"{per_s:,.0f}/s"


def lat(series: Series) -> str:
    return f"p50 {ms(series.p50_ms)}, p99 {ms(series.p99_ms)}"


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def counts(found: dict[str, int], empty: str = "none") -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(found.items()) if v) or empty


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- the section ------------------------------------------------------------------------------------

#: the columns of a section that sets none: each figure next to its baseline
FIGURE_COLUMNS = ("benchmark", "tracking", "baseline (same run)", "ratio")


@dataclasses.dataclass
class Section:
    """What one section measured (``data``, saved as JSON) and how it reads in docs/benchmarks.md."""

    title: str
    notes: str = ""
    columns: Sequence[str] = FIGURE_COLUMNS
    rows: list[list[str]] = dataclasses.field(default_factory=list)
    #: more Markdown after the table: other tables, query plans, a sentence
    blocks: list[str] = dataclasses.field(default_factory=list)
    #: (title, path relative to docs/)
    plots: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    errors: list[str] = dataclasses.field(default_factory=list)
    #: (goal, what was measured, verdict): the goals this section judges, gathered at the top of
    #: docs/benchmarks.md
    goals: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    #: set by the runner
    name: str = ""
    command: str = ""
    seconds: float = 0.0

    def attempt(self, what: str, fn: Callable[..., T], *args: Any) -> T | None:
        """``fn(*args)``, or None once its traceback is recorded: the section's other figures still
        count."""
        try:
            return fn(*args)
        except Exception:
            self.errors.append(f"{what}: {traceback.format_exc()}")
            print(self.errors[-1], file=sys.stderr, flush=True)
            return None

    def goal(self, goal: str, measured: str, ok: bool) -> str:
        """Record whether ``goal`` is met by what was ``measured``; returns the verdict."""
        verdict = met(ok)
        self.goals.append((goal, measured, verdict))
        return verdict

    def render(self) -> str:
        parts = [f"## {self.title}", f"Alone: `{self.command}` ({self.seconds:.0f} s in this run)."]
        if self.errors:
            failed = ", ".join(e.split(":", 1)[0] for e in self.errors)
            parts.append(f"**Failed**: {failed}; the traceback is in the JSON results.")
        if self.rows:
            parts.append(table(self.columns, self.rows))
        parts += self.blocks
        parts += [f"![{title}]({path})" for title, path in self.plots]
        if self.notes:
            parts.append(self.notes)
        return "\n\n".join(parts) + "\n"

    def to_json(self) -> dict[str, Any]:
        fields = ("name", "title", "command", "seconds", "columns", "rows", "data", "errors", "goals")
        return {f: getattr(self, f) for f in fields}


def section(doc: str | None, **params: Any) -> Section:
    """A Section titled by the first line of a section module's docstring; the rest, its parameters
    filled in, says what each figure is."""
    title, _, rest = inspect.cleandoc(doc or "").partition("\n")
    paragraphs = textwrap.dedent(rest).strip().format(**params).split("\n\n")
    return Section(title.rstrip("."), notes="\n\n".join(textwrap.fill(p, width=100) for p in paragraphs))
