"""The results: a plain-text table for the terminal and ``docs/benchmarks.md``."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from bench.measure import Series

CRASH_GOAL_P50_S = 1.0


def _ms(value: float) -> str:
    if value != value:  # NaN: nothing measured
        return "-"
    return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def _lat(series: Series) -> str:
    return f"p50 {_ms(series.p50_ms)}, p99 {_ms(series.p99_ms)}"


@dataclasses.dataclass
class Report:
    command: str
    profile: dict[str, Any]
    timing: dict[str, float]
    machine: dict[str, Any]
    load: dict[str, Any]
    results: dict[str, Any]
    errors: dict[str, str]
    started: float
    duration: float

    # -- the rows both renderings share -----------------------------------------------------------

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(benchmark, tracking, baseline, ratio)."""
        r = self.results
        out: list[tuple[str, str, str, str]] = []
        for key, label in (
            ("a_pg_redis", "PostgreSQL + Redis"),
            ("a_pg_amqp", "PostgreSQL + RabbitMQ"),
            ("a_embedded", "SQLite + filesystem (embedded)"),
        ):
            res = r.get(key)
            name = f"a. start() x{res['count'] if res else '?'}, {label}"
            if res is None:
                out.append((name, "FAILED", "", ""))
                continue
            out.append(
                (
                    name,
                    f"{_rate(res['start_per_s'])} ({_lat(res['start'])})",
                    f"send_task {_rate(res['send_per_s'])} ({_lat(res['send'])})",
                    f"{res['start_per_s'] / res['send_per_s']:.2f}x the rate",
                )
            )
        for key, label, raw in (
            ("b_pg", "PostgreSQL", "psycopg SELECT"),
            ("b_sqlite", "SQLite", "sqlite3 SELECT"),
        ):
            res = r.get(key)
            name = f"b. lookup() on {label}" + (f", {res['lookups']} over {res['ids']} IDs" if res else "")
            if res is None:
                out.append((name, "FAILED", "", ""))
                continue
            out.append(
                (
                    name,
                    _lat(res["lookup"]),
                    f"{raw} {_lat(res['raw'])}",
                    f"{res['lookup'].p50_ms / res['raw'].p50_ms:.1f}x at p50",
                )
            )
        res = r.get("c")
        if res is None:
            out.append(("c. crash -> new incarnation running", "FAILED", "", ""))
        else:
            goal = "met" if res["running"].p50_ms / 1000 < CRASH_GOAL_P50_S else "NOT met"
            out.append(
                (
                    f"c. crash -> new incarnation running, N={res['trackers']}, PostgreSQL + Redis",
                    f"{_lat(res['running'])}, max {_ms(res['running'].max_ms)} (goal p50 < 1 s: {goal})",
                    f"send_task -> task running {_lat(res['echo'])}",
                    f"{res['running'].p50_ms / res['echo'].p50_ms:.1f}x at p50",
                )
            )
            problems = len(res.get("worker_log_problems", []))
            out.append(
                (
                    "c. ... of which stop(reason='crash') returned",
                    f"{_lat(res['stopped'])}, max {_ms(res['stopped'].max_ms)}",
                    f"worker log: {problems} error line(s)",
                    "",
                )
            )
        fs, sqla = r.get("d_filesystem"), r.get("d_sqla")
        out.append(
            (
                f"d. embedded broker round trip, {fs.n if fs else '?'} messages",
                f"embedded {_lat(fs)}" if fs else "FAILED",
                f"sqla+sqlite {_lat(sqla)}" if sqla else "FAILED",
                f"{fs.p50_ms / sqla.p50_ms:.2f}x at p50" if fs and sqla else "",
            )
        )
        return out

    # -- terminal ---------------------------------------------------------------------------------

    def text(self) -> str:
        rows = [("benchmark", "tracking", "baseline (same run)", "ratio"), *self.rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["", "  ".join(h.ljust(w) for h, w in zip(rows[0], widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        for row in rows[1:]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        lines.append("")
        lines.append(self._load_line())
        if self.errors:
            lines.append(f"FAILED: {', '.join(self.errors)}")
        return "\n".join(lines)

    def _load_line(self) -> str:
        load = self.load
        verdict = "NOISY: " + "; ".join(load["noisy_reasons"]) if load["noisy"] else "not noisy"
        line = f"load average {load['load_start'][0]:.2f} at start, {load['load_end'][0]:.2f} at end"
        line += f", max {load['load_max']:.2f}"
        if load["cpu_busy_mean"] is not None:
            line += f"; host CPU busy {load['cpu_busy_mean']:.0f}% on average"
        return f"{line}; {verdict}"

    # -- docs/benchmarks.md -----------------------------------------------------------------------

    def markdown(self) -> str:
        m, t, p = self.machine, self.timing, self.profile
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.started))
        status = "**noisy**: " + "; ".join(self.load["noisy_reasons"]) if self.load["noisy"] else "not noisy"
        lines = [
            "# Benchmarks",
            "",
            "Written by `bench/`; do not edit by hand, run it again. Each figure stands next to its",
            "baseline measured in the same run, on the same machine and services.",
            "",
            f"- Command (from the repository root): `{self.command}`",
            f"- Run: {when}, {self.duration:.0f} s, {p['name']} profile; {status}",
            f"- {self._load_line()}",
        ]
        if self.errors:
            lines.append(
                f"- **Failed sections**: {', '.join(sorted(self.errors))} (their figures are missing)"
            )
        lines += [
            "",
            "## Results",
            "",
            "| benchmark | tracking | baseline (same run) | ratio |",
            "| --- | --- | --- | --- |",
        ]
        for row in self.rows():
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        lines += [
            "",
            "## Machine",
            "",
            "| | |",
            "| --- | --- |",
            f"| CPU cores (`os.cpu_count()`) | {m['cores']} |",
            f"| CPU | {m['cpu']} |",
            f"| memory (`/proc/meminfo` MemTotal) | {m['memory']} |",
            f"| OS | {m['os']} |",
            f"| Python | {m['python']} |",
            f"| tracking | {m['tracking']} |",
            f"| Celery / kombu | {m['celery']} / {m['kombu']} |",
            f"| SQLAlchemy | {m['sqlalchemy']} |",
            f"| psycopg / redis-py | {m['psycopg']} / {m['redis-py']} |",
            f"| PostgreSQL / Redis / RabbitMQ servers (loopback) | "
            f"{m.get('postgresql', '?')} / {m.get('redis', '?')} / {m.get('rabbitmq', '?')} |",
            "",
            "## What each figure is",
            "",
            f"Settings of every configuration: heartbeat {t['heartbeat']:g} s, lease {t['lease']:g} s, "
            f"sweep {t['sweep']:g} s, start grace {t['grace']:g} s; Celery configured with "
            "`tracking.celery.recommended_config`.",
            "",
            f"- **a. `start()`**: {p['starts']} distinct transaction IDs started one after another from one",
            "  process (after 10 warm-up calls), against `app.send_task` of a no-op task with the same",
            "  arguments to the same queue through the same app; alternating blocks, so that drift in",
            "  the machine's load hits both alike. No worker consumes the queue: this is the cost of",
            "  recording and publishing. The embedded default is SQLite (WAL) plus the embedded broker",
            "  (`embedded://`, kombu's filesystem transport with atomic writes) in a temporary folder.",
            f"- **b. `lookup()`**: {p['lookups']} lookups of random IDs among {p['lookup_ids']} registered",
            "  ones, against the bare driver reading the same row by its unique key",
            "  (`SELECT * FROM tracking_trackers WHERE kind = ... AND transaction_id = ...`; psycopg",
            "  prepares it after five runs). `lookup()` also joins the worker lease and opens a",
            "  read transaction through SQLAlchemy's pool.",
            f"- **c. crash to new incarnation**: {p['crashes']} trackers (interval 0.2 s) run on",
            f"  {p['workers']} worker subprocess(es), `celery -A tracking worker -P threads -c 50`.",
            "  For each in turn, after a random pause of up to one control poll, the time from calling",
            '  `stop(id, reason="crash")` (in a thread) until `lookup(id)`, polled every 5 ms, shows',
            "  status running with a new task ID. The worker notices the stop request on its next",
            "  control poll (every 0.25 s), the tracker exits abnormally and is republished at once",
            "  (the first restart has no backoff), and a worker claims it. `stop` itself returns once",
            "  it has seen the old incarnation exit (it polls every 20 ms). The baseline is bare Celery:",
            "  `send_task` of a task until a worker runs it (the task pushes to a Redis list the",
            "  benchmark waits on). With one crash per tracker no restart intensity is reached.",
            f"- **d. embedded broker**: {p['messages']} messages, one at a time, from a producer to a",
            "  consumer thread blocked in `SimpleQueue.get`, through the embedded broker (`embedded://`,",
            "  kombu's filesystem transport with atomic writes, configured by",
            "  `tracking.celery.embedded_broker_options`) and through kombu's",
            "  SQLAlchemy transport on SQLite (`sqla+sqlite:///<temp folder>/kombu.sqlite3`), both",
            f"  polling every {t['polling_interval']:g} s; a random pause up to one polling interval between",
            "  messages keeps them out of phase with the polling.",
            "",
            "Percentiles are interpolated between ranks; with a few dozen samples p99 is close to the",
            "maximum. A run is marked noisy when the 1-minute load average is above 3 at its start or",
            "end, or in more than 10% of the samples taken every 2 s while it ran.",
            "",
            "## Running it",
            "",
            "```",
            "python -m bench            # full run, writes docs/benchmarks.md (one to two minutes)",
            "python -m bench --smoke    # tiny counts, for CI: checks that it runs, writes nothing",
            "python bench/run.py        # the same as python -m bench",
            "```",
            "",
            "Options: `--output PATH` writes the results elsewhere (also with `--smoke`); `--no-write`",
            "only prints them. PostgreSQL, Redis and RabbitMQ must listen on 127.0.0.1 (the",
            "`docker-compose.yml` services). The run creates a database `tracking_bench_<id>`, a Redis",
            "key prefix `tracking-bench-<id>:` and RabbitMQ queue `tracking-bench-<id>-idle` of its own",
            "and removes them at the end, whatever happens; workers are stopped with SIGTERM, then",
            "SIGKILL, on their process group.",
            "",
        ]
        return "\n".join(lines)
