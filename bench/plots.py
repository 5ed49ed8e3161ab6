"""PNG plots (matplotlib, Agg backend, the `bench` extra): each section draws its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench.context import Context
from bench.core import Section

#: (x, y, label, matplotlib format such as "o-" or "C1--")
Line = tuple[Sequence[float], Sequence[float], str, str]


def available() -> str | None:
    """None if matplotlib can be imported, else why not."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); install the `bench` extra"
    return None


def draw(
    ctx: Context, out: Section, name: str, title: str, paint: Callable[..., None], *args: Any, cols: int = 1
) -> None:
    """``paint(*axes, *args)`` on a figure of ``cols`` axes, saved as ``<plot folder>/<name>`` and
    listed in the section (docs/bench/<name> next to docs/benchmarks.md)."""
    if ctx.plot_dir is None:
        return
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    def save(folder: Any) -> None:
        fig, axes = plt.subplots(1, cols, figsize=(4.5 + 4 * cols, 4.5), squeeze=False)
        try:
            paint(*axes[0], *args)
            if cols > 1:
                fig.suptitle(title)
            fig.tight_layout()
            fig.savefig(folder / name, dpi=100)
        finally:
            plt.close(fig)
        out.plots.append((title, f"bench/{name}"))

    out.attempt(f"plot {name}", save, ctx.plot_dir)


def cdf(values: Sequence[float], label: str, fmt: str = "-", scale: float = 1000.0) -> Line:
    """The cumulative distribution of durations in seconds, drawn in ms."""
    xs = sorted(v * scale for v in values)
    return xs, [(i + 1) / len(xs) for i in range(len(xs))], label, fmt


def chart(
    ax: Any, lines: Sequence[Line], title: str, xlabel: str, ylabel: str, log: str = "", goal: float = 0
) -> None:
    """Lines on one axes (as steps if the y axis is a fraction: CDFs); ``goal`` a horizontal line;
    ``log`` the log-scaled axes."""
    for x, y, label, fmt in lines:
        ax.plot(
            x, y, fmt, label=label, drawstyle="steps-post" if ylabel.startswith("fraction") else "default"
        )
    if goal:
        ax.axhline(goal, color="grey", linewidth=0.8, linestyle="-.", label=f"goal: {goal:g}")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    for axis in log:  # after set_xticks, a linear scale set again would drop the ticks
        getattr(ax, f"set_{axis}scale")("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
