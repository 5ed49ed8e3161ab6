"""h. Capacity: many live trackers in ONE ``celery -A tracking worker -P gevent`` process.

Per size N, on PostgreSQL + Redis, a fresh worker process (``-P gevent -c N+100``) on a queue of
its own:

- RSS of its process group idle (registered, one task run), then with N live trackers: RSS per
  tracker = (RSS with N - RSS idle) / N, from ``/proc/<pid>/status`` VmRSS of every process in the
  worker's process group (the gevent pool runs every task in the one process);
- time from the first ``start()`` until all N are ``running`` with a checkpoint in the registry
  (``start()`` called from a few threads of the benchmark's process);
- the registry connections the worker process holds (``pg_stat_activity`` by application name),
  sampled while they start;
- registry writes per second in a window after every tracker has ticked (``pg_stat_user_tables``,
  as in g.), and the age of the oldest checkpoint at the end of it (a worker that keeps up has
  none older than one interval plus a little).

Plus what psycopg does under gevent (``bench.geventprobe``, in subprocesses): the wait function it
chose, and the lateness of other greenlets while one waits in ``pg_sleep``, when the patch comes
first (as in Celery) and when psycopg was imported before it (the baseline).

Every wait is bounded in time; every loop in count.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from bench import machine, supervision
from bench.services import REPO_ROOT, Worker, wait_until

START_THREADS = 8


def worker_connections(conn: psycopg.Connection[Any], pid: int) -> int:
    """Connections to the registry held by one worker process (tracking names them by its pid)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s OR application_name = %s",
        (f"tracking-{pid}", f"tracking-{pid}-listen"),
    ).fetchone()
    return int(row[0]) if row else 0


def running_count(conn: psycopg.Connection[Any], kind: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM tracking_trackers WHERE kind = %s AND status = 'running'"
        " AND checkpoint_at IS NOT NULL",
        (kind,),
    ).fetchone()
    return int(row[0]) if row else 0


def checkpoint_ages(conn: psycopg.Connection[Any], kind: str) -> dict[str, float]:
    row = conn.execute(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a), percentile_cont(0.99) WITHIN GROUP"
        " (ORDER BY a), max(a) FROM (SELECT extract(epoch FROM clock_timestamp() - checkpoint_at) AS a"
        " FROM tracking_trackers WHERE kind = %s AND status = 'running') AS ages",
        (kind,),
    ).fetchone()
    assert row is not None
    return {"p50_s": float(row[0] or 0), "p99_s": float(row[1] or 0), "max_s": float(row[2] or 0)}


def other_events(conn: psycopg.Connection[Any], kind: str) -> dict[str, int]:
    """Registry events of ``kind`` other than ``started`` and ``running`` (crashes, republishes,
    lost workers...), by event: none is expected while trackers only start and tick."""
    rows = conn.execute(
        "SELECT event, count(*) FROM tracking_events WHERE kind = %s"
        " AND event NOT IN ('started', 'running') GROUP BY event",
        (kind,),
    ).fetchall()
    return {str(event): int(n) for event, n in rows}


def log_counts(worker: Worker) -> dict[str, int]:
    """Lines of the worker's log that tell of trouble under load, by kind."""
    try:
        text = worker.log_path.read_text(errors="replace")
    except FileNotFoundError:
        return {}
    marks = {
        "pool checkout timeouts (QueuePool limit)": "QueuePool limit",
        "lease declared lost": "was declared lost",
        "trackers crashed": " crashed: ",
        "registry unavailable": "registry unavailable",
    }
    return {what: text.count(mark) for what, mark in marks.items()}


def driver_info(app: Any, queue: str, client: Any, key_prefix: str, timeout: float = 30.0) -> dict[str, Any]:
    """Ask the worker (a task, ``bench.driver_info``) which wait function psycopg uses in it."""
    key = f"{key_prefix}driver:{uuid.uuid4().hex}"
    app.send_task("bench.driver_info", args=[key], queue=queue, serializer="json")
    got = supervision._blpop(client, key, timeout)
    client.delete(key)
    if got is None:
        raise TimeoutError(f"no worker ran bench.driver_info within {timeout} s")
    info: dict[str, Any] = json.loads(got[1])
    return info


def capacity_step(
    tracker: Any,
    count: int,
    worker: Worker,
    conninfo: str,
    app: Any,
    queue: str,
    client: Any,
    key_prefix: str,
    window: float,
    timeout: float,
) -> dict[str, Any]:
    """One size: ``worker`` is started, not yet registered."""
    supervision.wait_worker_registered(conninfo, worker)
    assert worker.proc is not None
    pid = worker.proc.pid
    info = driver_info(app, queue, client, key_prefix)  # one task run: lazy imports done
    time.sleep(1.0)  # a short settling window before the idle reading
    rss_idle = machine.group_usage(pid)[0]
    ids = [f"cap{count}-{i}" for i in range(count)]
    timeline: list[tuple[float, int, int]] = []
    peak_connections = 0
    with psycopg.connect(conninfo, autocommit=True) as conn:
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(START_THREADS, thread_name_prefix="bench-start") as pool:
            futures = [pool.submit(tracker.start, txid) for txid in ids]
            # Sample while they are being started too: the timeline begins at the first start().
            for _sample in range(int(timeout / 0.5) + 1):
                done = sum(f.done() for f in futures)
                running = running_count(conn, tracker.kind)
                conns = worker_connections(conn, pid)
                peak_connections = max(peak_connections, conns)
                timeline.append((time.monotonic() - t0, running, conns))
                if done == count or time.monotonic() - t0 > timeout:
                    break
                time.sleep(0.5)
            for f in futures:
                f.result(timeout=timeout)
        starts_s = time.monotonic() - t0

        def all_running() -> bool:
            nonlocal peak_connections
            if not worker.alive():
                raise RuntimeError(f"worker {worker.name} exited:\n{worker.log_tail()}")
            running = running_count(conn, tracker.kind)
            conns = worker_connections(conn, pid)
            peak_connections = max(peak_connections, conns)
            timeline.append((time.monotonic() - t0, running, conns))
            return running >= count

        to_running: float | None
        try:
            wait_until(all_running, timeout, interval=0.5, what=f"{count} trackers running")
            to_running = time.monotonic() - t0
        except TimeoutError:  # a figure too: how far it got, and what went wrong (events, log)
            to_running = None
        running_at_end = running_count(conn, tracker.kind)
        # Every tracker ticks at once after its first checkpoint; let the starts' table counters
        # reach pg_stat_user_tables (an idle backend flushes them up to 10 s late).
        time.sleep(supervision.STATS_LAG)
        rss_samples = [machine.group_usage(pid)[0]]
        writes = supervision.write_window(conninfo, window)
        rss_samples.append(machine.group_usage(pid)[0])
        ages = checkpoint_ages(conn, tracker.kind)
        steady_connections = worker_connections(conn, pid)
        events = other_events(conn, tracker.kind)
    rss_live = max(rss_samples)
    return {
        "trackers": count,
        "starts_s": starts_s,
        "to_running_s": to_running,
        "timeout_s": timeout,
        "running_at_end": running_at_end,
        "timeline": timeline,
        "rss_idle_kib": rss_idle,
        "rss_live_kib": rss_live,
        "rss_per_tracker_kib": (rss_live - rss_idle) / count,
        "peak_connections": peak_connections,
        "steady_connections": steady_connections,
        "writes": writes,
        "checkpoint_age": ages,
        "other_events": events,
        "driver": info,
        "concurrency": worker.concurrency,
    }


# -- psycopg under gevent ---------------------------------------------------------------------------


def _json_subprocess(module: str, args: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m <module> <args>`` in a fresh interpreter (its own session, killed whole if
    it overruns); the JSON object it prints last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKING_", "CELERY_", "PSYCOPG_"))}
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{module} exited with {proc.returncode}:\n{err[-3000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def gevent_probe(database_url: str, order: str, timeout: float = 180.0) -> dict[str, Any]:
    """``bench.geventprobe`` with the patch first (``celery``) or psycopg first (``psycopg-first``)."""
    return _json_subprocess("bench.geventprobe", [order, database_url], timeout)


# -- j. the Ray peer ------------------------------------------------------------------------------


def ray_peer(actors: int, lookups: int, calls: int, kills: int, temp: Path, timeout: float) -> dict[str, Any]:
    """``bench.raypeer`` in a subprocess; Ray's session folder is removed whatever happens."""
    try:
        return _json_subprocess(
            "bench.raypeer", [str(actors), str(lookups), str(calls), str(kills), str(temp)], timeout
        )
    finally:
        shutil.rmtree(temp, ignore_errors=True)
