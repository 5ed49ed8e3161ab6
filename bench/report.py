"""The results: a plain-text table for the terminal and ``docs/benchmarks.md``."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from bench.measure import Series

CRASH_GOAL_P50_S = 1.0
SWEEP_GOAL_MS, SWEEP_GOAL_ROWS = 100.0, 1_000_000


def _ms(value: float) -> str:
    if value != value:  # NaN: nothing measured
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def _lat(series: Series) -> str:
    return f"p50 {_ms(series.p50_ms)}, p99 {_ms(series.p99_ms)}"


def _met(sweep_ms: float) -> str:
    return "met" if sweep_ms < SWEEP_GOAL_MS else "NOT met"


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def _celery(res: dict[str, Any] | None) -> str:
    """One plain-Celery redelivery figure."""
    if res is None:
        return "FAILED"
    if res["recovered_s"] is None:
        return f"not running again within {res['bound_s']:g} s"
    if "visibility_timeout" in res.get("options", {}):  # due a visibility timeout after delivery
        since_delivery = res["recovered_s"] + res["ran_before_kill_s"]
        return f"{_s(res['recovered_s'])} ({_s(since_delivery)} after its delivery)"
    return _s(res["recovered_s"])


def _visibility(res: dict[str, Any] | None, default: str = "3600 s, the default") -> str:
    if res is None or "visibility_timeout" not in res.get("options", {}):
        return default
    return f"{res['options']['visibility_timeout']:g} s"


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
    #: the sections run (None: all of them)
    only: list[str] | None = None
    #: the plots drawn: {what: path relative to the Markdown file}
    plots: dict[str, str] = dataclasses.field(default_factory=dict)
    #: why no plots were drawn, if none were
    plots_note: str | None = None

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
        out += self._lost_rows()
        out += self._sweep_rows()
        out += self._write_rows()
        out += self._capacity_rows()
        out += self._message_rows()
        out += self._ray_rows()
        out += self._parked_rows()
        if self.only is not None:
            out = [row for row in out if row[0].split(".", 1)[0] in self.only]
        return out

    def _lost_rows(self) -> list[tuple[str, str, str, str]]:
        r, p = self.results, self.profile
        redis, short, amqp = r.get("e_celery_redis"), r.get("e_celery_redis_short"), r.get("e_celery_amqp")
        baseline = (
            f"plain Celery, late ack: RabbitMQ {_celery(amqp)}; "
            f"Redis (visibility_timeout {_visibility(short, '?')}) {_celery(short)}; "
            f"Redis (visibility_timeout {_visibility(redis)}) {_celery(redis)}"
        )
        out = []
        for i, (heartbeat, lease, sweep) in enumerate(p["lost_timing"], 1):
            res = r.get(f"e_tracking_{i}")
            name = (
                f"e. lost worker (SIGKILL) -> running on the other worker, lease {lease:g} s / "
                f"sweep {sweep:g} s / heartbeat {heartbeat:g} s, "
                f"N={p['lost_trackers']} x {p['lost_kills']} kill(s)"
            )
            if res is None:
                out.append((name, "FAILED", baseline, ""))
                continue
            rec, det = res["recovered"], res["detected"]
            figure = (
                f"p50 {_s(rec.p50_ms / 1000)}, p99 {_s(rec.p99_ms / 1000)}, max {_s(rec.max_ms / 1000)} "
                f"(lost declared: p50 {_s(det.p50_ms / 1000)}; first to last restart of one sweep: "
                f"p50 {_ms(res['spread'].p50_ms)})"
            )
            ratio = ""
            if short is not None and short["recovered_s"]:
                ratio = f"{rec.p50_ms / 1000 / short['recovered_s']:.2f}x Redis {_visibility(short)} at p50"
            out.append((name, figure, baseline, ratio))
        return out

    def _sweep_rows(self) -> list[tuple[str, str, str, str]]:
        res = self.results.get("f")
        if res is None:
            return [("f. supervisor sweep against registry size", "FAILED", "", "")]
        out = []
        for entry in res["sizes"]:
            rows = entry["rows"]
            name = f"f. sweep, {rows:,} rows, rescuing {res['lost']} lost + {res['due']} due entries"
            figure = f"p50 {_ms(entry['sweep'].p50_ms)} (nothing to rescue: p50 {_ms(entry['idle'].p50_ms)})"
            if rows >= SWEEP_GOAL_ROWS:
                figure += (
                    f"; goal < {SWEEP_GOAL_MS:g} ms: {_met(entry['sweep'].p50_ms)} rescuing, "
                    f"{_met(entry['idle'].p50_ms)} idle"
                )
            queries = entry["due_index"].p50_ms + entry["orphans_index"].p50_ms
            seq = entry["due_seq"].p50_ms + entry["orphans_seq"].p50_ms
            baseline = (
                f"SELECT count(*) p50 {_ms(entry['count'].p50_ms)}; due + orphans queries p50 "
                f"{_ms(queries)} indexed, {_ms(seq)} with index scans off"
            )
            ratio = f"idle sweep {entry['idle'].p50_ms / entry['count'].p50_ms:.2f}x count(*)"
            out.append((name, figure, baseline, ratio))
        return out

    def _write_rows(self) -> list[tuple[str, str, str, str]]:
        res = self.results.get("g")
        if res is None:
            return [("g. registry writes per second", "FAILED", "", "")]
        out = []
        h = res["heartbeat"]
        for step in res["steps"]:
            n, rates = step["trackers"], step["rates"]
            lease = rates["tracking_workers"]["upd"]
            checkpoints = rates["tracking_trackers"]["upd"]
            total = sum(sum(ops.values()) for ops in rates.values())
            goal = "met" if abs(lease * h - 1) <= 0.25 else "NOT met"
            name = (
                f"g. registry writes/s, {n:,} trackers (interval {res['interval']:g} s) on 1 worker "
                f"process, heartbeat {h:g} s, {step['seconds']:.0f} s window"
            )
            figure = (
                f"lease renewals {lease:.2f}/s per worker process (goal about 1/heartbeat = "
                f"{1 / h:g}/s: {goal}); checkpoints {checkpoints:,.1f}/s; all writes {total:,.1f}/s"
            )
            baseline = (
                f"one heartbeat per tracker would be {n / h:,.0f}/s; bare psycopg checkpoint UPDATE "
                f"on 1 connection {res['raw_checkpoint_per_s']:,.0f}/s"
            )
            ratio = f"all writes = {total / res['raw_checkpoint_per_s']:.1%} of 1 connection's rate"
            out.append((name, figure, baseline, ratio))
        return out

    def _capacity_rows(self) -> list[tuple[str, str, str, str]]:
        out = []
        drv = self.results.get("h_driver")
        if drv is None:
            out.append(("h. psycopg under gevent", "FAILED", "", ""))
        else:
            ours, first = drv["celery"], drv["psycopg-first"]
            out.append(
                (
                    "h. psycopg under gevent: 100 greenlets sleeping 20 ms while one waits in"
                    " SELECT pg_sleep(1) on the registry's engine",
                    f"gevent patched first, as Celery does: psycopg waits with {ours['wait_function']};"
                    f" other greenlets late by max {_ms(ours['during_pg_sleep']['max_ms'])}"
                    f" (idle: max {_ms(ours['idle']['max_ms'])})",
                    f"psycopg imported before the patch: {first['wait_function']}; late by max"
                    f" {_ms(first['during_pg_sleep']['max_ms'])}",
                    "",
                )
            )
            c, f = ours["concurrent"], first["concurrent"]
            out.append(
                (
                    f"h. registry pool under gevent: {c['greenlets']} greenlets each SELECT"
                    f" pg_sleep({c['sleep_s']:g}) at once",
                    f"{c['wall_s']:.2f} s; peak {c['peak_connections']} connections (pool"
                    f" {ours['pool']['size']} + overflow {ours['pool']['overflow']}); checkout wait p50"
                    f" {_ms(c['checkout_wait_p50_ms'])}, max {_ms(c['checkout_wait_max_ms'])};"
                    f" {c['failures']} failed",
                    f"psycopg imported before the patch: {f['wall_s']:.2f} s, peak"
                    f" {f['peak_connections']} connection(s)",
                    f"{f['wall_s'] / c['wall_s']:.0f}x faster" if c["wall_s"] else "",
                )
            )
        res = self.results.get("h")
        if res is None:
            return [*out, ("h. capacity: live trackers in one gevent worker process", "FAILED", "", "")]
        for step in res["steps"]:
            n = step["trackers"]
            if "failed" in step:
                out.append(
                    (f"h. capacity: {n:,} live trackers in 1 worker process", "FAILED", step["failed"], "")
                )
                continue
            rates = step["writes"]["rates"]
            lease = rates["tracking_workers"]["upd"]
            checkpoints = rates["tracking_trackers"]["upd"]
            total = sum(sum(ops.values()) for ops in rates.values())
            per_kb = step["rss_per_tracker_kib"] * 1.024
            goals = ""
            done = step["to_running_s"]
            if n >= 10_000:
                in_time = "met" if done is not None and done <= 60 else "NOT met"
                small = "met" if per_kb < 50 else "NOT met"
                goals = f" (goals at 10,000: within 60 s {in_time}, under 50 KB {small})"
            if done is not None:
                running = f"all running {_s(done)} after the first start()"
            else:
                running = (
                    f"NOT all running within {step['timeout_s']:.0f} s of the first start()"
                    f" ({step['running_at_end']:,} running then)"
                )
            trouble = {k: v for k, v in step.get("worker_log_counts", {}).items() if v}
            trouble_text = (
                "; worker log: " + ", ".join(f"{k} {v}" for k, v in trouble.items()) if trouble else ""
            )
            events = step["other_events"]
            events_text = (
                "; events: " + ", ".join(f"{k} {v}" for k, v in sorted(events.items())) if events else ""
            )
            out.append(
                (
                    f"h. capacity: {n:,} live trackers (interval {res['interval']:g} s) in 1 worker process,"
                    f" -P gevent -c {step['concurrency']:,}, PostgreSQL + Redis",
                    f"{running}; RSS {per_kb:.1f} KB per tracker{goals}; registry connections peak"
                    f" {step['peak_connections']}{events_text}{trouble_text}",
                    f"the {n:,} start() calls alone (8 threads) {_s(step['starts_s'])}; idle worker RSS"
                    f" {step['rss_idle_kib'] / 1024:.0f} MiB, with {n:,} trackers"
                    f" {step['rss_live_kib'] / 1024:.0f} MiB",
                    f"{n / done:,.0f} trackers/s to running" if done else "",
                )
            )
            if step["writes"]["seconds"] >= 5 * res["heartbeat"]:
                goal = "met" if abs(lease * res["heartbeat"] - 1) <= 0.25 else "NOT met"
            else:
                goal = "window too short to judge"
            age = step["checkpoint_age"]
            out.append(
                (
                    f"h. ... registry writes/s with {n:,} trackers, {step['writes']['seconds']:.0f} s window",
                    f"lease renewals {lease:.2f}/s per worker process (goal about 1/heartbeat ="
                    f" {1 / res['heartbeat']:g}/s: {goal}); checkpoints {checkpoints:,.1f}/s; all writes"
                    f" {total:,.1f}/s; oldest checkpoint {age['max_s']:.1f} s old (p99 {age['p99_s']:.1f} s)",
                    f"one checkpoint per tracker per interval: {n / res['interval']:,.1f}/s; one heartbeat"
                    f" per tracker would add {n / res['heartbeat']:,.0f}/s",
                    f"checkpoints {checkpoints / (n / res['interval']):.0%} of one per interval",
                )
            )
        return out

    def _message_rows(self) -> list[tuple[str, str, str, str]]:
        out = []
        for key, label, raw in (
            ("i_pg_redis", "PostgreSQL + Redis (LISTEN/NOTIFY wake-up)", "psycopg"),
            ("i_embedded", "SQLite + embedded broker (control polling)", "sqlite3"),
        ):
            res = self.results.get(key)
            if res is None:
                out.append((f"i. call and cast, {label}", "FAILED", "", ""))
                continue
            out.append(
                (
                    f"i. call() round trip, {label}, {res['calls']} calls to one tracker",
                    _lat(res["call"]),
                    f"bare Celery send_task -> task ran {_lat(res['celery'])}; {raw} INSERT + SELECT"
                    f" {_lat(res['raw'])}",
                    f"{res['call'].p50_ms / res['celery'].p50_ms:.1f}x Celery at p50",
                )
            )
            cast = res["cast"]
            out.append(
                (
                    f"i. cast(), {label}, {cast['casts']} casts to one tracker from one thread",
                    f"accepted {_rate(cast['accepted_per_s'])}; handled by the tracker"
                    f" {_rate(cast['handled_per_s'])} (all {cast['casts']} within {_s(cast['handled_s'])}"
                    " of the first cast)",
                    f"{raw} INSERT, one transaction each, {_rate(cast['raw_insert_per_s'])}",
                    f"{cast['accepted_per_s'] / cast['raw_insert_per_s']:.2f}x the raw INSERT rate",
                )
            )
        return out

    def _ray_rows(self) -> list[tuple[str, str, str, str]]:
        res = self.results.get("j_ray")
        if res is None:
            return [("j. Ray peer", "FAILED", "", "")]
        if "skipped" in res:
            return [("j. Ray peer", f"NOT RUN: {res['skipped']}", "", "")]
        r = self.results
        n = res["actors"]
        gets, calls, rec = Series(res["get_actor"]), Series(res["call"]), Series(res["recovered"])
        cap = [st for st in (r.get("h") or {}).get("steps") or [] if "failed" not in st]
        ran = [st for st in cap if st["to_running_s"] is not None]
        first = ran[0] if ran else None
        last = cap[-1] if cap else None
        pg, msg, crash, lost = r.get("b_pg"), r.get("i_pg_redis"), r.get("c"), r.get("e_tracking_1")
        mem = res["memory"]
        return [
            (
                f"j. Ray {res['ray']}: create {n} named detached actors (max_restarts=-1)",
                f"all answering {_s(res['create_s'])} after the first ({n / res['create_s']:,.1f}/s);"
                f" ray.init {_s(res['init_s'])}",
                f"tracking, h.: {first['trackers']:,} trackers running {_s(first['to_running_s'])} after"
                f" the first start() ({first['trackers'] / first['to_running_s']:,.0f}/s)"
                if first
                else "tracking: h. not run",
                "",
            ),
            (
                "j. Ray: ray.get_actor(name)",
                _lat(gets),
                f"tracking lookup(), PostgreSQL: {_lat(pg['lookup'])}" if pg else "b. not run",
                f"lookup() {pg['lookup'].p50_ms / gets.p50_ms:.0f}x at p50" if pg else "",
            ),
            (
                "j. Ray: actor method call round trip",
                _lat(calls),
                f"tracking call(), PostgreSQL + Redis: {_lat(msg['call'])}" if msg else "i. not run",
                f"call() {msg['call'].p50_ms / calls.p50_ms:.1f}x at p50" if msg else "",
            ),
            (
                f"j. Ray: SIGKILL of an actor's process -> it answers again, {rec.n} kill(s)",
                f"p50 {_s(rec.p50_ms / 1000)}, max {_s(rec.max_ms / 1000)}",
                "tracking: crash -> running "
                + (f"p50 {_ms(crash['running'].p50_ms)}" if crash else "not run")
                + "; lost worker (SIGKILL, lease 3 s) "
                + (f"p50 {_s(lost['recovered'].p50_ms / 1000)}" if lost else "not run"),
                "",
            ),
            (
                "j. Ray: memory per actor",
                f"RSS {mem['actor_rss_kib'] / 1024:.1f} MiB, PSS {mem['actor_pss_kib'] / 1024:.1f} MiB per"
                f" actor (one process each); Ray's own {mem['ray_processes']} processes"
                f" {mem['ray_rss_kib'] / 1024:.0f} MiB RSS",
                f"tracking, h.: {last['rss_per_tracker_kib'] * 1.024:.1f} KB RSS per tracker at"
                f" {last['trackers']:,}"
                if last
                else "tracking: h. not run",
                f"{mem['actor_rss_kib'] / last['rss_per_tracker_kib']:,.0f}x"
                if last and last["rss_per_tracker_kib"] > 0
                else "",
            ),
        ]

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

    # -- docs/benchmarks.md: the supervisor's figures in detail ----------------------------------

    def _sweep_markdown(self) -> list[str]:
        res = self.results.get("f")
        if res is None:
            return []
        lines = [
            "",
            "### f. The sweep against the size of the registry (PostgreSQL)",
            "",
            f"Each sweep rescues {res['lost']} running entries of a lost worker and {res['due']} pending",
            f"entries past due; p50 of {res['runs']} sweeps per size. Per rescued entry: the p50 of a",
            "rescuing sweep minus the p50 of an idle one, divided by the entries rescued. Queries: the",
            "sweep's own statements (captured from it) run through psycopg, rows fetched; index scans",
            "off: `enable_indexscan`, `enable_indexonlyscan` and `enable_bitmapscan` set off for them.",
            "",
            "| rows | sweep, rescuing | per rescued entry | sweep, nothing to rescue | statements per"
            " rescuing sweep | due query: indexed / index scans off | orphans query: indexed / index"
            " scans off | SELECT count(*) | bulk insert + VACUUM ANALYZE |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for e in res["sizes"]:
            per = (e["sweep"].p50_ms - e["idle"].p50_ms) / (res["lost"] + res["due"])
            lines.append(
                f"| {e['rows']:,} | {_ms(e['sweep'].p50_ms)} | {_ms(per)} | {_ms(e['idle'].p50_ms)} | "
                f"{e['statements']} | {_ms(e['due_index'].p50_ms)} / {_ms(e['due_seq'].p50_ms)} | "
                f"{_ms(e['orphans_index'].p50_ms)} / {_ms(e['orphans_seq'].p50_ms)} | "
                f"{_ms(e['count'].p50_ms)} | {e['grow_s']:.1f} s |"
            )
        plans = res.get("explain")
        if plans:
            for name, title in (("due", "due query"), ("orphans", "orphans query")):
                lines += [
                    "",
                    f"EXPLAIN (ANALYZE, BUFFERS) of the {title} at {plans['rows']:,} rows, in the state a",
                    "rescuing sweep meets (parameters written in):",
                    "",
                    "```sql",
                    plans[name]["sql"],
                    "```",
                    "",
                    "```",
                    plans[name]["plan"],
                    "```",
                ]
        return lines

    def _writes_markdown(self) -> list[str]:
        res = self.results.get("g")
        if res is None:
            return []
        lines = [
            "",
            "### g. Registry writes per second, by table (`pg_stat_user_tables`)",
            "",
            "| live trackers | window | table | inserts/s | updates/s | deletes/s |",
            "| ---: | ---: | --- | ---: | ---: | ---: |",
        ]
        for step in res["steps"]:
            for table, ops in sorted(step["rates"].items()):
                lines.append(
                    f"| {step['trackers']:,} | {step['seconds']:.1f} s | {table} | {ops['ins']:.2f} | "
                    f"{ops['upd']:.2f} | {ops['del']:.2f} |"
                )
        return lines

    def _supervision_description(self) -> list[str]:
        p, r = self.profile, self.results
        short = r.get("e_celery_redis_short")
        vt = _visibility(short, f"{p['short_visibility']:g} s")
        load = r.get("g") or {}
        return [
            f"- **e. lost worker**: {p['lost_trackers']} trackers (interval 0.5 s) run on one worker",
            "  subprocess, `celery -A tracking worker -P threads -c 50` on PostgreSQL + Redis, started",
            "  in a session of its own; a second one is started and has registered its lease. Then",
            "  `os.killpg(pgid, SIGKILL)` on the first, and per tracker the time from the kill until",
            "  `lookup(id)` (all of them polled in turn, about every 20 ms) shows it running on the",
            "  second worker under a higher epoch. Supervision is the surviving worker's own periodic",
            "  sweep (every sweep interval; no beat process runs): it declares the killed process lost",
            "  once its lease has expired by the database clock and restarts its trackers at once.",
            '  Expected: between lease - heartbeat and lease + sweep, plus dispatch. "lost declared"',
            "  is the time from the kill (database clock) to the `worker_lost` event the sweep wrote;",
            "  the sweep restarts the lost worker's trackers one transaction each, in the surviving",
            "  worker's runtime thread, and the time from its first such event to its last is given too.",
            f"  {p['lost_kills']} kill(s) per setting: each time a fresh worker is started first, and the",
            "  trackers hop to it; every incarnation runs past its restart-intensity window",
            "  (`max_seconds` = 2 s) before the next kill, so every restart is a first, immediate one.",
            "  The baseline is plain Celery (`bench/plainapp.py`, no `tracking`): one long task with",
            "  `acks_late=True` and `reject_on_worker_lost=True` runs on worker X",
            "  (`-P prefork -c 1`, prefetch multiplier 1); worker Y has started and run a task; X's",
            "  process group is SIGKILLed, and the time until the task runs again (on Y) is measured,",
            f"  waiting at most {p['redelivery_bound']:g} s on Redis with its default visibility_timeout",
            "  (3600 s: the message stays in Redis' unacked set until then), on Redis with",
            f"  visibility_timeout {vt} and the restore sweep every second (`unacked_restore_interval=1`,",
            "  `unacked_restore_throttle=1`; with kombu's defaults it runs only about every 100 s), and on",
            "  RabbitMQ, which requeues the unacknowledged message as soon as the dead worker's",
            "  connection closes. One task per broker. `reject_on_worker_lost` itself plays no part",
            "  here: the pool's parent process dies too, so nobody is left to reject the message.",
            f"- **f. sweep against registry size**: sizes {', '.join(f'{n:,}' for n in p['sweep_sizes'])}",
            "  rows in `tracking_trackers` on PostgreSQL, loaded with `INSERT ... SELECT generate_series`",
            "  (97.5% running spread over 50 live worker leases, 1% pending and 0.5% failed not yet due,",
            "  1% dead; realistic 66-character IDs, JSON args, state and policy), then `VACUUM ANALYZE`.",
            "  `tracking.supervisor.sweep(settings, publish)` with a publish that only counts, run in",
            "  the benchmark's process; before each rescuing sweep the live leases are renewed and the",
            f"  lost worker's lease (an hour old), its {p['sweep_lost']} running entries and the",
            f"  {p['sweep_due']} pending entries a minute past due are put back; each rescuing sweep is",
            "  followed by one with nothing to rescue. Baseline: `SELECT count(*) FROM tracking_trackers`",
            "  through psycopg, and the sweep's two main queries with index scans off.",
            f"- **g. writes per second**: {', '.join(f'{n:,}' for n in p['load_trackers'])} live trackers",
            f"  (interval {load.get('interval', 5.0):g} s, added in steps) on one worker process",
            f"  (`-P threads -c {load.get('concurrency', max(p['load_trackers']) + 100)}`) on PostgreSQL",
            "  and Redis; after every tracker has ticked, rows inserted, updated and deleted per table",
            f"  are read from `pg_stat_user_tables` before and after a {p['load_window']:g} s window. Lease",
            "  renewals are the updates of `tracking_workers`, checkpoints those of `tracking_trackers`.",
            "  PostgreSQL flushes a busy backend's counters about once a second (an idle one's up to",
            "  10 s late: the window starts at least 11 s after the last start), so a window is exact",
            "  to about one second of writes. The baseline is the same single-row checkpoint `UPDATE` (new",
            "  state, by id and epoch) through psycopg on one connection, one per transaction,",
            "  back to back for 3 s: what one connection of this machine sustains, each commit waiting",
            "  for its WAL flush. A design with one heartbeat per tracker would write trackers /",
            "  heartbeat rows per second on top of the checkpoints.",
        ]

    def _capacity_markdown(self) -> list[str]:
        lines: list[str] = []
        drv = self.results.get("h_driver")
        if drv is not None:
            lines += [
                "",
                "### h. psycopg under gevent (`bench/geventprobe.py`)",
                "",
                "Each probe is a fresh interpreter patched with `celery.maybe_patch_concurrency` for",
                "`-P gevent`, as the `celery` command does before it imports the app; `psycopg first`",
                "imported psycopg before that. Lateness: how late 100 greenlets that sleep 20 ms in a",
                "loop wake up, over 1 s idle and over 1.5 s while another greenlet waits in",
                "`SELECT pg_sleep(1)` on an engine made by `tracking.registry.create_engine`. Pool: 100",
                "greenlets each check a connection out of that engine and run `SELECT pg_sleep(0.05)`.",
                "",
                "| import order | wait function | lateness idle: p99 / max | lateness during pg_sleep(1):"
                " p99 / max | 100 x pg_sleep(0.05): wall | peak connections | checkout wait p50 / max |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
            ]
            for order, label in (("celery", "patch first (Celery)"), ("psycopg-first", "psycopg first")):
                d = drv[order]
                c = d["concurrent"]
                lines.append(
                    f"| {label} | `{d['wait_function']}` | {_ms(d['idle']['p99_ms'])} /"
                    f" {_ms(d['idle']['max_ms'])} | {_ms(d['during_pg_sleep']['p99_ms'])} /"
                    f" {_ms(d['during_pg_sleep']['max_ms'])} | {c['wall_s']:.2f} s |"
                    f" {c['peak_connections']} |"
                    f" {_ms(c['checkout_wait_p50_ms'])} / {_ms(c['checkout_wait_max_ms'])} |"
                )
        res = self.results.get("h")
        if res is None:
            return lines
        lines += [
            "",
            "### h. Capacity: live trackers in one gevent worker process (PostgreSQL + Redis)",
            "",
            f"Heartbeat {res['heartbeat']:g} s, lease {res['lease']:g} s, sweep {res['sweep']:g} s, start"
            f" grace {res['grace']:g} s; tracker interval {res['interval']:g} s. psycopg's wait function in"
            " the worker (asked by a task): "
            + ", ".join(
                sorted({f"`{st['driver']['wait_function']}`" for st in res["steps"] if "driver" in st})
            )
            + ".",
            "",
            "| trackers | start() calls | all running | RSS idle | RSS live | RSS per tracker |"
            " connections peak / steady | lease renewals/s | checkpoints/s (one per interval) |"
            " all writes/s | checkpoint age p99 / max | other events | worker log |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        ]
        for st in res["steps"]:
            if "failed" in st:
                lines.append(f"| {st['trackers']:,} | FAILED: {st['failed']} |" + " |" * 11)
                continue
            n, rates = st["trackers"], st["writes"]["rates"]
            total = sum(sum(ops.values()) for ops in rates.values())
            events = ", ".join(f"{k} {v}" for k, v in sorted(st["other_events"].items())) or "none"
            trouble = (
                ", ".join(f"{k} {v}" for k, v in st.get("worker_log_counts", {}).items() if v) or "clean"
            )
            done = (
                _s(st["to_running_s"])
                if st["to_running_s"] is not None
                else f"not within {st['timeout_s']:.0f} s ({st['running_at_end']:,})"
            )
            lines.append(
                f"| {n:,} | {_s(st['starts_s'])} | {done} |"
                f" {st['rss_idle_kib'] / 1024:.0f} MiB | {st['rss_live_kib'] / 1024:.0f} MiB |"
                f" {st['rss_per_tracker_kib'] * 1.024:.1f} KB | {st['peak_connections']} /"
                f" {st['steady_connections']} | {rates['tracking_workers']['upd']:.2f} |"
                f" {rates['tracking_trackers']['upd']:,.1f} ({n / res['interval']:,.1f}) | {total:,.1f} |"
                f" {st['checkpoint_age']['p99_s']:.1f} s / {st['checkpoint_age']['max_s']:.1f} s | {events} |"
                f" {trouble} |"
            )
        return lines

    def _messages_markdown(self) -> list[str]:
        stacks = [
            (label, self.results.get(key))
            for key, label in (
                ("i_pg_redis", "PostgreSQL + Redis"),
                ("i_embedded", "SQLite + embedded broker"),
            )
        ]
        stacks = [(label, res) for label, res in stacks if res is not None]
        if not stacks:
            return []
        lines = [
            "",
            "### i. call and cast",
            "",
            "| stack | call() p50 / p99 / max | bare Celery round trip p50 / p99 |"
            " raw INSERT + SELECT p50 / p99 | casts accepted/s | casts handled/s | raw INSERTs/s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for label, res in stacks:
            c, cast = res["call"], res["cast"]
            lines.append(
                f"| {label} | {_ms(c.p50_ms)} / {_ms(c.p99_ms)} / {_ms(c.max_ms)} |"
                f" {_ms(res['celery'].p50_ms)} / {_ms(res['celery'].p99_ms)} |"
                f" {_ms(res['raw'].p50_ms)} / {_ms(res['raw'].p99_ms)} | {_rate(cast['accepted_per_s'])} |"
                f" {_rate(cast['handled_per_s'])} | {_rate(cast['raw_insert_per_s'])} |"
            )
        return lines

    def _parked_markdown(self) -> list[str]:
        from bench import parked

        lines: list[str] = []
        for key in sorted(k for k in self.results if k.startswith("k_parked_")):
            res = self.results[key]
            title = (
                f"k. {res['trackers']:,} parked trackers, {res['interval']:g} s interval (PostgreSQL + Redis)"
            )
            lines += ["", *parked.markdown(res, title)]
        return lines

    def _parked_rows(self) -> list[tuple[str, str, str, str]]:
        rows = []
        for key in sorted(k for k in self.results if k.startswith("k_parked_")):
            r = self.results[key]
            late = r["late_sched"]
            base = (r.get("baseline") or {}).get("noop") or {}
            rate = base.get("per_s")
            rows.append(
                (
                    f"k. {r['trackers']:,} parked trackers, interval {r['interval']:g} s, {r['slots']} slots",
                    f"{r['ticks_per_s']:.1f} ticks/s of {r['demand_per_s']:.1f} due;"
                    f" lateness p50 {late['p50']:.2f} s, p99 {late['p99']:.2f} s;"
                    f" slots in use p50 {r['running']['p50']:.0f}, max {r['running']['max']:.0f}",
                    f"bare Celery no-op tasks, same workers: {rate:,.0f}/s" if rate else "",
                    "",
                )
            )
        return rows

    def _ray_markdown(self) -> list[str]:
        res = self.results.get("j_ray")
        if res is None or "skipped" in res:
            return []
        mem = res["memory"]
        gets, calls, rec = Series(res["get_actor"]), Series(res["call"]), Series(res["recovered"])
        return [
            "",
            f"### j. Ray {res['ray']} named detached actors",
            "",
            "| actors | ray.init | create, all answering | get_actor p50 / p99 | method call p50 / p99 |"
            " SIGKILL -> answering again (each) | RSS / PSS per actor | Ray's own processes (RSS) |",
            "| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
            f"| {res['actors']} | {_s(res['init_s'])} | {_s(res['create_s'])} | {_ms(gets.p50_ms)} /"
            f" {_ms(gets.p99_ms)} | {_ms(calls.p50_ms)} / {_ms(calls.p99_ms)} |"
            f" {', '.join(_s(v) for v in rec.values)} | {mem['actor_rss_kib'] / 1024:.1f} MiB /"
            f" {mem['actor_pss_kib'] / 1024:.1f} MiB | {mem['ray_processes']} processes,"
            f" {mem['ray_rss_kib'] / 1024:.0f} MiB |",
        ]

    def _plots_markdown(self) -> list[str]:
        if not self.plots:
            return ["", "## Plots", "", self.plots_note or "No plots were drawn."] if self.plots_note else []
        titles = {
            "lookup": "b. lookup() latency against a raw SELECT",
            "sweep": "f. sweep time against registry size",
            "capacity": "h. capacity: time to running, RSS per tracker, running over time",
            "lost_worker": "e. lost-worker recovery against lease settings",
            "messages": "i. call round trip against its baselines",
            "ray": "j. Ray actors next to trackers",
        }
        lines = ["", "## Plots", ""]
        for what, path in self.plots.items():
            lines += [f"![{titles.get(what, what)}]({path})", ""]
        return lines[:-1]

    def _new_descriptions(self) -> list[str]:
        p = self.profile
        cap = self.results.get("h") or {}
        return [
            "- **h. psycopg under gevent**: `bench/geventprobe.py` in two fresh interpreters, one",
            "  patched as `celery -A tracking worker -P gevent` patches (before anything imports",
            "  psycopg), one that imported psycopg first. psycopg 3 picks its wait function when",
            "  `psycopg.waiting` is imported: its C `wait_c` (a `poll()` that blocks the whole process)",
            "  unless gevent has patched `select` by then, in which case `wait_poll` (Python, through",
            "  the patched `select.poll`, which yields to other greenlets).",
            f"- **h. capacity**: {', '.join(f'{n:,}' for n in p['capacity_sizes'])} trackers (interval"
            f" {cap.get('interval', 30.0):g} s), each size on a fresh",
            "  `celery -A tracking worker -P gevent -c <N+100>` process on a queue of its own. Idle RSS:",
            "  after it registered its lease and ran one task, and 1 s of rest. Then `start()` of N IDs",
            "  from 8 threads of the benchmark's process; every 0.5 s the registry is counted (`running`",
            "  with a checkpoint) and the worker's connections (`pg_stat_activity`, by the application",
            "  name tracking gives them). Once all run, 11 s for the table counters to settle, then",
            "  writes per second over the window (`pg_stat_user_tables`, as in g.) and RSS (the max of",
            "  a reading before and after it): VmRSS of every process in the worker's process group, from",
            "  `/proc/<pid>/status`. RSS per tracker = (RSS live - RSS idle) / N; KB = 1000 bytes. The",
            "  worker is SIGKILLed afterwards (a warm shutdown would hand every tracker off), and the",
            "  registry emptied. Checkpoint age: now minus each running tracker's last checkpoint at the",
            "  end of the window; a worker that keeps up has none much older than one interval. A size",
            "  whose trackers are not all running within max(120 s, N x 0.06 s) is reported as such,",
            "  with the registry's other events (crashes, lost workers, restarts) and the worker log's",
            "  count of pool checkout timeouts, lost leases and crashes. `republished` events are",
            "  pending entries not claimed within the start grace, published again by the worker's own",
            "  sweep (duplicates of messages still queued: the stale copy is dropped at its claim).",
            f"- **i. call and cast**: one tracker (interval 30 s) on a `-P threads -c 20` worker;"
            f" {p['calls']} calls",
            '  (`call(id, {"n": i})`, answered with the message) in blocks of 20, alternating with',
            "  blocks of the bare Celery round trip (`send_task` of a task that pushes to a Redis list",
            "  the benchmark waits on with BLPOP, through the same broker and worker) and of the raw",
            "  SQL round trip (an INSERT of a message row into a table shaped like `tracking_messages`,",
            "  then a SELECT of it by id, through psycopg or sqlite3 in autocommit). On PostgreSQL the",
            "  queuing transaction sends NOTIFY and the worker's listening connection wakes the tracker;",
            "  on SQLite the worker's control poll (every 0.1 s) finds the mail.",
            f"  Then {p['casts']} casts back to back from one thread (accepted/s), and the time from the",
            "  first until the tracker's checkpointed state counts all of them (handled/s); the",
            "  baseline is the same number of raw INSERTs of that row, one transaction each.",
            f"- **j. Ray**: `bench/raypeer.py` in a subprocess: {p['ray_actors']} named detached actors",
            '  (`lifetime="detached"`, `max_restarts=-1`, `num_cpus=0`), created one after another;',
            f"  {p['ray_lookups']} `ray.get_actor` of random names; {p['ray_calls']} method calls to one"
            " actor;",
            f"  {p['ray_kills']} SIGKILL(s) of an actor's worker process, each timed until the actor answers",
            "  from a new process. Memory: VmRSS and Pss (`/proc/<pid>/smaps_rollup`, shared pages split",
            "  among the processes sharing them) of the actors' processes, per actor. Ray runs with",
            '  `ray.init(address="local", include_dashboard=False)` on 127.0.0.1, usage statistics',
            "  off, an 80 MiB object store, its session folder in the run's temporary folder; it is",
            "  shut down and the folder removed afterwards. It is compared with the figures of b., c.,",
            "  e., h. and i. of the same run.",
            "- **k. parked trackers**: `bench/parked.py`. N rows are inserted straight into the registry as",
            "  `parked` (tracker `bench_parked`, `park = True`), their first ticks spread evenly over one",
            "  interval from 5 s after the insert; real `celery -A tracking worker -P threads -c 16`",
            "  processes (default timings) wake, tick and park them again. Each tick records in its state",
            "  when it was due and when it ran: lateness is the difference; a sampler counts running",
            "  (slots in use), pending (woken, not claimed) and overdue parked entries every second. The",
            "  baselines use the same kind of workers on the same Redis: a no-op task's rate, and N tasks",
            "  sent with an ETA over one interval (what Celery itself would do: the worker holds every one",
            "  unacknowledged until it is due). Standalone runs: [bench-parked.md](bench-parked.md).",
        ]

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
        lines += self._sweep_markdown()
        lines += self._writes_markdown()
        lines += self._capacity_markdown()
        lines += self._messages_markdown()
        lines += self._ray_markdown()
        lines += self._parked_markdown()
        lines += self._plots_markdown()
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
            f"| tracking | {m['tracking']}, git {m.get('revision', 'unknown')} |",
            f"| Celery / kombu | {m['celery']} / {m['kombu']} |",
            f"| SQLAlchemy | {m['sqlalchemy']} |",
            f"| psycopg / redis-py | {m['psycopg']} / {m['redis-py']} |",
            f"| PostgreSQL / Redis / RabbitMQ servers (loopback) | "
            f"{m.get('postgresql', '?')} / {m.get('redis', '?')} / {m.get('rabbitmq', '?')} |",
            "",
            "## What each figure is",
            "",
            f"Settings of a. to d., g. and i.: heartbeat {t['heartbeat']:g} s, lease {t['lease']:g} s, "
            f"sweep {t['sweep']:g} s, start grace {t['grace']:g} s; Celery configured with "
            "`tracking.celery.recommended_config`. e. and h. state their own.",
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
            *self._supervision_description(),
            *self._new_descriptions(),
            "",
            "Percentiles are interpolated between ranks; with a few dozen samples p99 is close to the",
            "maximum. A run is marked noisy when the 1-minute load average is above 3 at its start or",
            "end, or in more than 10% of the samples taken every 2 s while it ran.",
            "",
            "## Running it",
            "",
            "```",
            "bash scripts/bench         # set up .venv with the dev, bench and ray extras, then run it all",
            "python -m bench            # full run, writes docs/benchmarks.md and docs/bench/*.png",
            "python -m bench --smoke    # tiny counts, for CI: checks that it runs (about two minutes)",
            "python bench/run.py        # the same as python -m bench",
            "```",
            "",
            "Options: `--output PATH` writes the results elsewhere (also with `--smoke`; the plots go to",
            "`bench/` beside it); `--no-write` only prints them (the plots are drawn and discarded);",
            "`--only h,i` runs only those sections (and writes nothing unless `--output` is given);",
            "`--json PATH` also writes the raw results. The gevent pool needs `gevent` (the `dev` and",
            "`bench` extras), the plots `matplotlib` (the `bench` extra); the Ray peer needs the `ray`",
            "extra, and without it is reported as not run. PostgreSQL, Redis and RabbitMQ must listen on",
            "127.0.0.1 (the `docker-compose.yml` services). The run creates a database",
            "`tracking_bench_<id>`, a Redis key prefix `tracking-bench-<id>:` (every queue on Redis lives",
            "under it) and RabbitMQ queues `tracking-bench-<id>-idle` and `tracking-bench-<id>-celery-amqp`",
            "of its own and removes them at the end, whatever happens; workers still running are stopped",
            "with SIGTERM, then SIGKILL, on their process group; Ray's processes are shut down and its",
            "session folder (in the run's temporary folder) removed.",
            "",
        ]
        return "\n".join(lines)
