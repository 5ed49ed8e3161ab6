"""The supervisor's figures, each with the baseline it is compared with in the same run:

e. lost-worker recovery: a worker process SIGKILLed (its whole process group) while another one
   runs; the time until each of its trackers runs on the other worker under a new epoch. Baseline:
   plain Celery's own recovery of a long task acknowledged late and rejected on worker loss, on
   Redis (visibility timeout) and on RabbitMQ (redelivery when the connection closes).
f. the supervisor's sweep against the size of the registry, on PostgreSQL, with EXPLAIN ANALYZE of
   its two main queries. Baseline: ``SELECT count(*)`` of the table, and the same queries with the
   planner's index scans turned off.
g. registry writes per second with many live trackers on one worker process, from
   ``pg_stat_user_tables``, split into lease renewals and checkpoints. Baseline: the rate of the
   same single-row checkpoint UPDATE through the bare driver on one connection.

Every wait is bounded in time; every loop in count.
"""

from __future__ import annotations

import contextlib
import json
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.types.json import Jsonb

from bench.measure import Series
from bench.services import Fleet, Worker, wait_until
from tracking import registry, supervisor
from tracking.policy import RestartPolicy
from tracking.settings import Settings

# -- helpers -------------------------------------------------------------------------------------


def node_name(hostname: str | None) -> str:
    """``lost1@host`` -> ``lost1``."""
    return (hostname or "").split("@", 1)[0]


def wait_worker_registered(conninfo: str, worker: Worker, timeout: float = 60.0) -> float:
    """Until the worker process has registered its lease: its tracking runtime has started, which
    it does once Celery says the worker is ready (its consumer runs)."""

    def ready() -> bool:
        if not worker.alive():
            raise RuntimeError(f"worker {worker.name} exited:\n{worker.log_tail()}")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM tracking_workers WHERE status = 'alive' AND hostname LIKE %s",
                (f"{worker.name}@%",),
            ).fetchone()
        return row is not None and row[0] >= 1

    return wait_until(ready, timeout, interval=0.1, what=f"worker {worker.name} registered")


# -- e. lost worker: tracking --------------------------------------------------------------------


def kill_and_recover(
    tracker: Any,
    ids: Sequence[str],
    victim: Worker,
    survivor: Worker,
    conninfo: str,
    timeout: float,
) -> dict[str, Any]:
    """SIGKILL ``victim``'s process group, on which every tracker of ``ids`` runs, and poll
    ``lookup`` of each (one pass over all of them at a time) until it shows the tracker running on
    ``survivor`` under a higher epoch. Returns the seconds from the kill for each tracker, and when
    the supervisor recorded each one's exit as ``worker_lost`` (by the database clock, from the
    database's clock at the kill): the detection part of the recovery.
    """
    before = {}
    for txid in ids:
        ref = tracker.lookup(txid)
        if ref is None or ref.status != "running" or node_name(ref.worker) != victim.name:
            raise AssertionError(f"{txid} is not running on {victim.name} before the kill: {ref}")
        before[txid] = ref.epoch
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        killed_at: datetime = row[0]
        t0 = time.monotonic()
        victim.kill()
        waiting = set(ids)
        recovered: dict[str, float] = {}
        deadline = t0 + timeout
        for _pass in range(int(timeout / 0.002) + 1):  # bounded: each pass takes at least 2 ms
            for txid in sorted(waiting):
                ref = tracker.lookup(txid)
                if (
                    ref is not None
                    and ref.status == "running"
                    and ref.epoch > before[txid]
                    and node_name(ref.worker) == survivor.name
                ):
                    recovered[txid] = time.monotonic() - t0
                    waiting.discard(txid)
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(0.002)
        if waiting:
            raise TimeoutError(
                f"{len(waiting)} of {len(ids)} trackers not running on {survivor.name} "
                f"{timeout:.0f} s after the kill"
            )
        detected = conn.execute(
            "SELECT transaction_id, min(at) FROM tracking_events"
            " WHERE kind = %s AND event = 'worker_lost' AND at >= %s GROUP BY transaction_id",
            (tracker.kind, killed_at),
        ).fetchall()
    declared = [(at - killed_at).total_seconds() for _txid, at in detected]
    return {
        "recovered": [recovered[txid] for txid in ids],
        "detected": declared,
        # how long the sweep took from the first tracker it restarted to the last
        "spread": max(declared) - min(declared) if declared else float("nan"),
    }


def lost_worker_series(
    tracker: Any,
    ids: Sequence[str],
    fleet: Fleet,
    spawn: Callable[[str], Worker],
    names: Sequence[str],
    conninfo: str,
    kills: int,
    timeout: float,
) -> dict[str, Any]:
    """Start the trackers on a first worker alone, then ``kills`` times: start the next worker,
    wait until it runs, let every incarnation run past its restart-intensity window, SIGKILL the
    worker running the trackers, and time their recovery on the new one."""
    recovered, detected, spread = Series(), Series(), Series()
    victim = spawn(names[0])
    wait_worker_registered(conninfo, victim)
    for txid in ids:
        tracker.start(txid)
    since = time.monotonic()

    def all_running() -> bool:
        refs = [tracker.lookup(txid) for txid in ids]
        return all(r is not None and r.status == "running" for r in refs)

    wait_until(all_running, 60, interval=0.1, what=f"{len(ids)} trackers running")
    for k in range(kills):
        survivor = spawn(names[k + 1])
        wait_worker_registered(conninfo, survivor)
        # Past max_seconds, an incarnation's restart is immediate (no backoff): the first-restart
        # path, not a crash loop. Only after a previous kill does this wait at all.
        rest = tracker.max_seconds + 0.5 - (time.monotonic() - since)
        if k > 0 and rest > 0:
            time.sleep(rest)
        result = kill_and_recover(tracker, ids, victim, survivor, conninfo, timeout)
        since = time.monotonic()
        recovered.values.extend(result["recovered"])
        detected.values.extend(result["detected"])
        spread.values.append(result["spread"])
        victim = survivor
    problems = [p for p in fleet.problems() if "Traceback" in p or "ERROR" in p]
    return {
        "trackers": len(ids),
        "kills": kills,
        "recovered": recovered,
        "detected": detected,
        "spread": spread,
        "worker_log_problems": problems,
    }


# -- e. lost worker: plain Celery ----------------------------------------------------------------


def _blpop(client: Any, key: str, timeout: float) -> Any:
    """``BLPOP`` for up to ``timeout`` seconds, in blocks of at most 1 s (redis-py's default socket
    timeout is 5 s); returns at once when an element arrives."""
    deadline = time.monotonic() + timeout
    for _block in range(int(timeout) + 2):
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        got = client.blpop([key], timeout=min(1.0, max(left, 0.01)))
        if got is not None:
            return got
    return None


def celery_redelivery(
    app: Any,
    fleet: Fleet,
    spawn: Callable[[str], Worker],
    names: tuple[str, str],
    client: Any,
    key_prefix: str,
    queue: str,
    bound: float,
) -> dict[str, Any]:
    """Plain Celery: a long task (acks_late, reject_on_worker_lost) runs on worker X alone; worker Y
    starts and proves it consumes; X's process group is SIGKILLed. The time until the task runs
    again, on Y, or None if it did not within ``bound`` seconds."""
    from bench.plainapp import LONG_TASK, WHOAMI_TASK

    def whoami(worker: Worker) -> None:
        key = f"{key_prefix}whoami:{uuid.uuid4().hex}"
        app.send_task(WHOAMI_TASK, args=[key], queue=queue, serializer="json")
        got = _blpop(client, key, 60)
        client.delete(key)
        if got is None:
            raise TimeoutError(f"worker {worker.name} did not run {WHOAMI_TASK} within 60 s:\n{fleet.logs()}")
        if node_name(json.loads(got[1])["hostname"]) != worker.name:
            raise AssertionError(f"{WHOAMI_TASK} ran on {got[1]!r}, not on {worker.name}")

    x = spawn(names[0])
    whoami(x)
    reply = f"{key_prefix}long:{uuid.uuid4().hex}"
    try:
        app.send_task(LONG_TASK, args=[reply, bound + 120], queue=queue, serializer="json")
        got = _blpop(client, reply, 60)
        began = time.monotonic()
        if got is None or node_name(json.loads(got[1])["hostname"]) != x.name:
            raise AssertionError(f"the long task did not start on {x.name}: {got!r}")
        y = spawn(names[1])
        whoami(y)
        t0 = time.monotonic()
        x.kill()
        got = _blpop(client, reply, bound)
        elapsed = time.monotonic() - t0
        if got is None:
            return {"recovered_s": None, "bound_s": bound, "ran_before_kill_s": t0 - began}
        body = json.loads(got[1])
        return {
            "recovered_s": elapsed,
            "bound_s": bound,
            "ran_before_kill_s": t0 - began,
            "worker": node_name(body["hostname"]),
            "redelivered_flag": body["redelivered"],
        }
    finally:
        client.set(f"{reply}:stop", "1", ex=600)  # the task on Y returns, and Y can stop


# -- f. the sweep against the size of the registry -----------------------------------------------

KIND = "bench_sweep"
LIVE_WORKERS = 50
STALE_WORKER = "stale-0"

_BULK = """
INSERT INTO tracking_trackers (kind, transaction_id, status, epoch, task_id, worker, worker_id,
    args, state, policy, restarts, restart_times, backoff_step, last_error, started_at, claimed_at,
    checkpoint_at, due_at)
SELECT %(kind)s, t.txid, t.status, 1 + mod(g, 3), gen_random_uuid()::text,
    CASE WHEN t.status = 'running' THEN 'bench' || mod(g, %(workers)s) || '@bench-host' END,
    CASE WHEN t.status = 'running' THEN 'live-' || mod(g, %(workers)s) END,
    jsonb_build_object('transaction_id', t.txid),
    jsonb_build_object('transaction_id', t.txid, 'confirmations', mod(g, 12)),
    %(policy)s, mod(g, 2), '[]'::jsonb, 0,
    CASE WHEN t.status = 'dead' THEN 'RuntimeError: the source kept failing' END,
    now() - make_interval(secs => mod(g, 86400)),
    CASE WHEN t.status = 'running' THEN now() - make_interval(secs => mod(g, 3600)) END,
    CASE WHEN t.status IN ('running', 'dead') THEN now() - make_interval(secs => mod(g, 15)) END,
    CASE WHEN t.status IN ('pending', 'failed') THEN now() + interval '1 hour' END
FROM generate_series(%(lo)s, %(hi)s - 1) AS g,
LATERAL (
    SELECT '0x' || md5(g::text) || md5((g + 1)::text) AS txid,
           CASE WHEN mod(g, 100) = 1 THEN 'pending'
                WHEN mod(g, 200) = 2 THEN 'failed'
                WHEN mod(g, 100) = 3 THEN 'dead'
                ELSE 'running' END AS status
) AS t
"""

_SPECIAL = """
INSERT INTO tracking_trackers (kind, transaction_id, status, epoch, task_id, args, state, policy,
    restart_times, started_at)
SELECT %(kind)s, %(prefix)s || g, 'pending', 1, gen_random_uuid()::text,
    '{}'::jsonb, '{"confirmations": 0}'::jsonb, %(policy)s, '[]'::jsonb, now() - interval '1 day'
FROM generate_series(1, %(count)s) AS g
RETURNING id
"""


class SweepRegistry:
    """A registry of a chosen size on PostgreSQL, in the states a sweep meets in production.

    Bulk rows (``INSERT ... SELECT generate_series``): 97.5% running, spread over 50 live worker
    processes (lease renewed just before each sweep), 1% pending and 0.5% failed, neither due for
    an hour, 1% dead. Plus ``lost`` running entries owned by a worker process whose lease is an
    hour old, and ``due`` pending entries a minute past their due time: what a sweep rescues.
    :meth:`reset` puts those back before every sweep that is to rescue them.
    """

    def __init__(self, conn: psycopg.Connection[Any], lost: int, due: int) -> None:
        self.conn = conn
        self.lost = lost
        self.due = due
        self.rows = 0
        self.lost_ids: list[int] = []
        self.due_ids: list[int] = []
        self.policy = Jsonb(RestartPolicy().to_json())

    def grow(self, size: int) -> float:
        """Insert bulk rows up to ``size`` rows in all, then VACUUM ANALYZE (what autovacuum does
        after a bulk load). Returns the seconds it took."""
        began = time.monotonic()
        conn = self.conn
        if self.rows == 0:
            conn.execute(
                "INSERT INTO tracking_workers (id, hostname, pid, status, started_at, heartbeat_at)"
                " SELECT 'live-' || w, 'bench' || w || '@bench-host', 10000 + w, 'alive',"
                " now() - interval '1 day', now() FROM generate_series(0, %(n)s - 1) AS w",
                {"n": LIVE_WORKERS},
            )
            for prefix, count, ids in (("lost-", self.lost, self.lost_ids), ("due-", self.due, self.due_ids)):
                rows = conn.execute(
                    _SPECIAL, {"kind": KIND, "prefix": prefix, "count": count, "policy": self.policy}
                ).fetchall()
                ids.extend(r[0] for r in rows)
            self.rows = self.lost + self.due
        if size > self.rows:
            conn.execute(
                _BULK,
                {"kind": KIND, "lo": self.rows, "hi": size, "workers": LIVE_WORKERS, "policy": self.policy},
            )
            self.rows = size
        for table in ("tracking_trackers", "tracking_workers", "tracking_events"):
            conn.execute(f"VACUUM ANALYZE {table}")
        return time.monotonic() - began

    def reset(self) -> None:
        """Live leases renewed; the stale worker back with its hour-old lease and its running
        entries; the due entries a minute past due."""
        conn = self.conn
        conn.execute("UPDATE tracking_workers SET heartbeat_at = now() WHERE id LIKE 'live-%'")
        conn.execute(
            "INSERT INTO tracking_workers (id, hostname, pid, status, started_at, heartbeat_at)"
            " VALUES (%(id)s, 'stale@bench-host', 9999, 'alive', now() - interval '1 day',"
            " now() - interval '1 hour')"
            " ON CONFLICT (id) DO UPDATE SET status = 'alive', heartbeat_at = EXCLUDED.heartbeat_at",
            {"id": STALE_WORKER},
        )
        conn.execute(
            "UPDATE tracking_trackers SET status = 'running', worker = 'stale@bench-host',"
            " worker_id = %(worker)s, claimed_at = now() - interval '2 hours', due_at = NULL,"
            " restarts = 0, restart_times = '[]', backoff_step = 0, stop_reason = NULL,"
            " last_error = NULL WHERE id = ANY(%(ids)s)",
            {"worker": STALE_WORKER, "ids": self.lost_ids},
        )
        conn.execute(
            "UPDATE tracking_trackers SET status = 'pending', worker = NULL, worker_id = NULL,"
            " due_at = now() - interval '1 minute' WHERE id = ANY(%(ids)s)",
            {"ids": self.due_ids},
        )


@contextlib.contextmanager
def captured_statements(settings: Settings) -> Iterator[list[tuple[str, Any]]]:
    """Every statement the registry sends to the database meanwhile, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        seen.append((statement, parameters))

    eng = registry.engine(settings)
    sa.event.listen(eng, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        sa.event.remove(eng, "before_cursor_execute", before)


def main_queries(statements: Sequence[tuple[str, Any]]) -> dict[str, tuple[str, Any]]:
    """The sweep's due query and orphans query among the statements it sent."""
    found: dict[str, tuple[str, Any]] = {}
    for statement, params in statements:
        text = " ".join(statement.split())
        if not text.startswith("SELECT") or "FROM tracking_trackers" not in text:
            continue
        if "ORDER BY tracking_trackers.due_at" in text:
            found.setdefault("due", (statement, params))
        elif "tracking_trackers.worker_id IN" in text:
            found.setdefault("orphans", (statement, params))
    missing = {"due", "orphans"} - set(found)
    if missing:
        raise AssertionError(f"the sweep did not send its {', '.join(sorted(missing))} query")
    return found


def _timed(conn: psycopg.Connection[Any], statement: str, params: Any, runs: int, seq: bool) -> Series:
    """The query through the bare driver (rows fetched and decoded); ``seq``: with index scans
    turned off for it."""
    out = Series()
    for _ in range(runs + 1):  # the first is a warm-up
        with conn.transaction():
            if seq:
                for name in ("enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan"):
                    conn.execute(f"SET LOCAL {name} = off")
            t0 = time.perf_counter()
            # Never prepared: a prepared plan would outlive the SET LOCAL above.
            conn.execute(statement, params, prepare=False).fetchall()
            out.values.append(time.perf_counter() - t0)
    out.values.pop(0)
    return out


def explain(conn: psycopg.Connection[Any], statement: str, params: Any) -> str:
    rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params, prepare=False).fetchall()
    return "\n".join(r[0] for r in rows)


def sweep_scaling(
    conninfo: str, settings: Settings, sizes: Sequence[int], runs: int, lost: int, due: int
) -> dict[str, Any]:
    """For each size, smallest first (the registry grows between them): ``runs`` timed sweeps that
    rescue ``lost`` + ``due`` entries (the registry reset before each), ``runs`` timed sweeps with
    nothing to do, and the baselines. EXPLAIN ANALYZE of the two main queries at the largest size.
    """
    published = [0]

    def publish(_row: registry.Row) -> None:
        published[0] += 1

    out: dict[str, Any] = {"lost": lost, "due": due, "runs": runs, "sizes": []}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        reg = SweepRegistry(conn, lost, due)
        for size in sizes:
            grown = reg.grow(size)
            reg.reset()
            with captured_statements(settings) as seen:  # warm-up, and what the sweep sends
                supervisor.sweep(settings, publish, name="bench")
            queries = main_queries(seen)
            rescue, idle = Series(), Series()
            for _run in range(runs):
                reg.reset()
                published[0] = 0
                t0 = time.perf_counter()
                counts = supervisor.sweep(settings, publish, name="bench")
                rescue.values.append(time.perf_counter() - t0)
                expected = {"lost_workers": 1, "restarted": lost, "republished": due}
                if any(counts[k] != v for k, v in expected.items()) or published[0] != lost + due:
                    raise AssertionError(f"sweep did {counts}, published {published[0]}; expected {expected}")
                t0 = time.perf_counter()
                counts = supervisor.sweep(settings, publish, name="bench")
                idle.values.append(time.perf_counter() - t0)
                if any(counts.values()):
                    raise AssertionError(f"a sweep with nothing to do did {counts}")
            reg.reset()  # the queries below see what a rescuing sweep sees
            count = Series()
            for _run in range(runs + 1):
                t0 = time.perf_counter()
                conn.execute("SELECT count(*) FROM tracking_trackers").fetchone()
                count.values.append(time.perf_counter() - t0)
            count.values.pop(0)
            entry: dict[str, Any] = {
                "rows": size,
                "grow_s": grown,
                "statements": len(seen),
                "sweep": rescue,
                "idle": idle,
                "count": count,
            }
            for name, (statement, params) in queries.items():
                entry[f"{name}_index"] = _timed(conn, statement, params, runs, seq=False)
                entry[f"{name}_seq"] = _timed(conn, statement, params, runs, seq=True)
            out["sizes"].append(entry)
            if size == max(sizes):
                out["explain"] = {
                    "rows": size,
                    **{
                        name: {
                            "sql": _literal_sql(statement, params),
                            "plan": explain(conn, statement, params),
                        }
                        for name, (statement, params) in queries.items()
                    },
                }
            # The next size starts from a registry with nothing due: restarted entries are pending
            # for the start grace; they become running again at the next reset.
    return out


def _literal_sql(statement: str, params: Any) -> str:
    """The statement with its parameters written in, one clause a line, for reading (not for
    running)."""
    text = " ".join(statement.split())
    if isinstance(params, dict):
        for key in sorted(params, key=len, reverse=True):
            value = params[key]
            literal = f"'{value}'" if isinstance(value, str) else str(value)
            text = text.replace(f"%({key})s", literal)
    for clause in (" FROM ", " LEFT OUTER JOIN ", " WHERE ", " AND ", " ORDER BY ", " LIMIT "):
        text = text.replace(clause, "\n" + clause.strip() + " ")
    head, _, rest = text.partition("\n")
    columns = textwrap.fill(head, width=100, subsequent_indent="    ", break_on_hyphens=False)
    return columns + "\n" + rest


# -- g. registry writes per second ---------------------------------------------------------------

#: PostgreSQL (15) flushes a backend's table counters at most once a second while it is busy, and
#: an idle backend's pending ones up to 10 s later (PGSTAT_IDLE_INTERVAL)
STATS_LAG = 11.0
WRITE_TABLES = ("tracking_trackers", "tracking_workers", "tracking_events", "tracking_supervisors")


def table_writes(conn: psycopg.Connection[Any]) -> dict[str, dict[str, int]]:
    """Rows inserted, updated and deleted so far in each registry table (``pg_stat_user_tables``)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = conn.execute(
        "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE relname = ANY(%s)",
        (list(WRITE_TABLES),),
    ).fetchall()
    return {name: {"ins": ins, "upd": upd, "del": dele} for name, ins, upd, dele in rows}


def write_window(conninfo: str, seconds: float) -> dict[str, Any]:
    """Writes per second to each registry table over ``seconds`` of wall time."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        first = table_writes(conn)
        t0 = time.monotonic()
        time.sleep(seconds)
        last = table_writes(conn)
        elapsed = time.monotonic() - t0
    rates = {
        table: {op: (last[table][op] - first.get(table, {}).get(op, 0)) / elapsed for op in last[table]}
        for table in last
    }
    return {"seconds": elapsed, "rates": rates}


def wait_running(conninfo: str, kind: str, count: int, timeout: float) -> float:
    def ready() -> bool:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM tracking_trackers WHERE kind = %s AND status = 'running'"
                " AND checkpoint_at IS NOT NULL",
                (kind,),
            ).fetchone()
        return row is not None and row[0] >= count

    return wait_until(ready, timeout, interval=0.5, what=f"{count} {kind} trackers running")


def raw_checkpoint_rate(conninfo: str, kind: str, seconds: float) -> float:
    """The bare driver on one connection: single-row checkpoint UPDATEs (new state, fenced by id
    and epoch), one per transaction, round robin over the entries of ``kind``, for ``seconds``."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute("SELECT id, epoch FROM tracking_trackers WHERE kind = %s", (kind,)).fetchall()
        if not rows:
            raise AssertionError(f"no {kind} entries to update")
        sql = "UPDATE tracking_trackers SET state = %s, checkpoint_at = now() WHERE id = %s AND epoch = %s"
        done = 0
        t0 = time.monotonic()
        deadline = t0 + seconds
        for i in range(10_000_000):  # bounded
            row_id, epoch = rows[i % len(rows)]
            conn.execute(sql, (Jsonb({"transaction_id": str(row_id), "confirmations": i}), row_id, epoch))
            done += 1
            if time.monotonic() >= deadline:
                break
        return done / (time.monotonic() - t0)
