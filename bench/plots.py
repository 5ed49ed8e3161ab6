"""PNG plots of a run's results (matplotlib, Agg backend), written next to docs/benchmarks.md.

Each function draws one figure from the results it needs and returns its file name, or None when
those results are missing (a failed or skipped section). ``draw`` draws all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

DPI = 100


def available() -> str | None:
    """None if matplotlib can be imported, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); install the `bench` extra"
    return None


def _figure(width: float = 8.0, height: float = 4.5, cols: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, cols, figsize=(width, height))
    return fig, axes


def _save(fig: Any, folder: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(folder / name, dpi=DPI)
    plt.close(fig)
    return name


def _cdf(ax: Any, values: list[float], label: str, scale: float = 1000.0, **style: Any) -> None:
    ordered = sorted(v * scale for v in values)
    if not ordered:
        return
    n = len(ordered)
    ax.step(ordered, [(i + 1) / n for i in range(n)], where="post", label=label, **style)


def lookup(results: dict[str, Any], folder: Path) -> str | None:
    pg, lite = results.get("b_pg"), results.get("b_sqlite")
    if pg is None and lite is None:
        return None
    fig, ax = _figure()
    for res, name, raw, color in ((pg, "PostgreSQL", "psycopg", "C0"), (lite, "SQLite", "sqlite3", "C1")):
        if res is None:
            continue
        _cdf(ax, res["lookup"].values, f"lookup(), {name}", color=color)
        _cdf(ax, res["raw"].values, f"{raw} SELECT, {name}", color=color, linestyle="--")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of lookups")
    ax.set_title("b. lookup() against a raw SELECT of the same row (CDF)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(fig, folder, "lookup.png")


def sweep(results: dict[str, Any], folder: Path) -> str | None:
    res = results.get("f")
    if res is None:
        return None
    sizes = [e["rows"] for e in res["sizes"]]
    fig, ax = _figure()
    ax.plot(sizes, [e["sweep"].p50_ms for e in res["sizes"]], "o-", label="sweep, rescuing (p50)")
    ax.plot(sizes, [e["idle"].p50_ms for e in res["sizes"]], "s-", label="sweep, nothing to rescue (p50)")
    ax.plot(sizes, [e["count"].p50_ms for e in res["sizes"]], "^--", label="SELECT count(*) (p50)")
    seq = [e["due_seq"].p50_ms + e["orphans_seq"].p50_ms for e in res["sizes"]]
    ax.plot(sizes, seq, "v:", label="due + orphans queries, index scans off (p50)")
    ax.axhline(100, color="grey", linewidth=0.8, linestyle="-.", label="goal: 100 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows in tracking_trackers (log scale)")
    ax.set_ylabel("ms (log scale)")
    ax.set_title("f. supervisor sweep against registry size (PostgreSQL)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, folder, "sweep.png")


def capacity(results: dict[str, Any], folder: Path) -> str | None:
    res = results.get("h")
    if res is None or not res["steps"]:
        return None
    steps = [s for s in res["steps"] if "failed" not in s]
    if not steps:
        return None
    sizes = [s["trackers"] for s in steps]
    fig, (left, middle, right) = _figure(width=13.0, height=4.2, cols=3)
    done = [s for s in steps if s["to_running_s"] is not None]
    left.plot([s["trackers"] for s in done], [s["to_running_s"] for s in done], "o-", label="all running")
    for s in steps:
        if s["to_running_s"] is None:
            left.plot([s["trackers"]], [s["timeout_s"]], "x", color="red", markersize=10)
            left.annotate(
                f"not all running\nwithin {s['timeout_s']:.0f} s", (s["trackers"], s["timeout_s"]), fontsize=8
            )
    left.plot(sizes, [s["starts_s"] for s in steps], "s--", label="start() calls alone")
    left.axhline(60, color="grey", linestyle="-.", linewidth=0.8, label="goal: 60 s")
    left.set_xlabel("live trackers in one worker process")
    left.set_ylabel("seconds from the first start()")
    left.set_title("time to running")
    left.legend(fontsize=8)
    middle.plot(sizes, [s["rss_per_tracker_kib"] * 1.024 for s in steps], "o-", label="RSS per tracker")
    middle.axhline(50, color="grey", linestyle="-.", linewidth=0.8, label="goal: 50 KB")
    middle.set_xlabel("live trackers in one worker process")
    middle.set_ylabel("KB (1000 bytes)")
    middle.set_ylim(bottom=0)
    middle.set_title("worker RSS per live tracker")
    middle.legend(fontsize=8)
    for s in steps:
        timeline = s["timeline"]
        right.plot([t[0] for t in timeline], [t[1] for t in timeline], label=f"N = {s['trackers']:,}")
    right.set_xlabel("seconds from the first start()")
    right.set_ylabel("trackers running")
    right.set_title("running, over time")
    right.legend(fontsize=8)
    for ax in (left, middle, right):
        ax.grid(True, alpha=0.3)
    fig.suptitle("h. capacity: one celery -A tracking worker -P gevent process, PostgreSQL + Redis")
    return _save(fig, folder, "capacity.png")


def lost_worker(results: dict[str, Any], profile: dict[str, Any], folder: Path) -> str | None:
    settings = [
        (i, timing, results.get(f"e_tracking_{i}")) for i, timing in enumerate(profile["lost_timing"], 1)
    ]
    settings = [(i, timing, res) for i, timing, res in settings if res is not None]
    if not settings:
        return None
    fig, ax = _figure()
    data = [res["recovered"].values for _i, _t, res in settings]
    labels = [f"lease {t[1]:g} s\nsweep {t[2]:g} s\nheartbeat {t[0]:g} s" for _i, t, _r in settings]
    ax.boxplot(data, whis=(0, 100))
    ax.set_xticks(range(1, len(labels) + 1), labels)
    for k, (_i, timing, _res) in enumerate(settings, 1):
        heartbeat, lease, sweep_s = timing
        ax.plot([k - 0.3, k + 0.3], [lease - heartbeat] * 2, color="grey", linewidth=0.8)
        ax.plot([k - 0.3, k + 0.3], [lease + sweep_s] * 2, color="grey", linewidth=0.8)
    for key, label, style in (
        ("e_celery_amqp", "plain Celery, RabbitMQ", "C2"),
        ("e_celery_redis_short", "plain Celery, Redis (short visibility_timeout)", "C3"),
    ):
        res = results.get(key)
        if res is not None and res.get("recovered_s"):
            ax.axhline(res["recovered_s"], color=style, linestyle="--", linewidth=1, label=label)
    ax.set_ylabel("seconds from SIGKILL to running again")
    ax.set_title("e. lost worker recovery against lease settings\n(grey: lease - heartbeat, lease + sweep)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, folder, "lost_worker.png")


def messages(results: dict[str, Any], folder: Path) -> str | None:
    stacks = [
        (k, label, results.get(k))
        for k, label in (("i_pg_redis", "PostgreSQL + Redis"), ("i_embedded", "SQLite + embedded broker"))
    ]
    stacks = [s for s in stacks if s[2] is not None]
    if not stacks:
        return None
    fig, axes = _figure(width=12.0, height=4.2, cols=len(stacks))
    axes = list(axes) if len(stacks) > 1 else [axes]
    for ax, (_key, label, res) in zip(axes, stacks, strict=True):
        _cdf(ax, res["call"].values, "call()")
        _cdf(ax, res["celery"].values, "bare Celery round trip", linestyle="--")
        _cdf(ax, res["raw"].values, "raw SQL INSERT + SELECT", linestyle=":")
        ax.set_xscale("log")
        ax.set_xlabel("round trip (ms, log scale)")
        ax.set_ylabel("fraction of calls")
        ax.set_title(f"i. call, {label}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, folder, "messages.png")


def ray(results: dict[str, Any], folder: Path) -> str | None:
    res = results.get("j_ray")
    if res is None or "skipped" in res:
        return None
    fig, (left, right) = _figure(width=11.0, height=4.2, cols=2)
    _cdf(left, res["get_actor"], "ray.get_actor(name)", color="C1")
    _cdf(left, res["call"], "Ray actor method call", color="C1", linestyle="--")
    pg = results.get("b_pg")
    if pg is not None:
        _cdf(left, pg["lookup"].values, "tracking lookup() (PostgreSQL)", color="C0")
    msg = results.get("i_pg_redis")
    if msg is not None:
        _cdf(left, msg["call"].values, "tracking call() (PostgreSQL + Redis)", color="C0", linestyle="--")
    left.set_xscale("log")
    left.set_xlabel("latency (ms, log scale)")
    left.set_ylabel("fraction")
    left.set_title("lookup and call (CDF)")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    labels, values = (
        ["Ray actor\n(RSS)", "Ray actor\n(PSS)"],
        [res["memory"]["actor_rss_kib"], res["memory"]["actor_pss_kib"]],
    )
    cap = results.get("h")
    if cap is not None and cap["steps"]:
        biggest = cap["steps"][-1]
        labels.append(f"tracker, gevent\n(RSS, N={biggest['trackers']:,})")
        values.append(biggest["rss_per_tracker_kib"])
    right.bar(labels, [v / 1024 for v in values], color=["C1", "C1", "C0"][: len(values)])
    right.set_yscale("log")
    right.set_ylabel("MiB per actor / tracker (log scale)")
    right.set_title("memory per actor / tracker")
    right.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"j. Ray {res['ray']} named detached actors next to tracking")
    return _save(fig, folder, "ray.png")


def draw(results: dict[str, Any], profile: dict[str, Any], folder: Path) -> dict[str, str]:
    """Every plot whose results are there: {what: file name in ``folder``}."""
    folder.mkdir(parents=True, exist_ok=True)
    makers: dict[str, Callable[[], str | None]] = {
        "lookup": lambda: lookup(results, folder),
        "sweep": lambda: sweep(results, folder),
        "capacity": lambda: capacity(results, folder),
        "lost_worker": lambda: lost_worker(results, profile, folder),
        "messages": lambda: messages(results, folder),
        "ray": lambda: ray(results, folder),
    }
    drawn = {}
    for what, make in makers.items():
        name = make()
        if name is not None:
            drawn[what] = name
    return drawn
