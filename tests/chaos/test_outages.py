"""Broker and database outages mid-run: every tracker reaches Done, none lost, none done twice.

Each test runs two workers and beat, starts trackers that finish after some ticks, breaks a server
while they run, and waits (bounded) for all of them to finish. The servers it breaks are its own
(tests/chaos/servers.py: a Redis, a RabbitMQ node, a PostgreSQL cluster), except for killed
database connections, which only hit this test's database on the shared PostgreSQL.

After settling, per transaction ID: exactly one "done" event and no registry entry left (none lost,
none finished twice), and no tick of an older incarnation recorded after a newer one's (stale
effects accepted: 0). Trackers started while the broker is down are recorded as pending at once and
run once the broker is back (the supervisor publishes them again after the start grace period); a
tracker started after the broker returns runs at once (the workers consume again, celery#9054); and
no worker's lease renewal waits on the broker. A database restart restarts each tracker at most once.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from tests.chaos.servers import PostgresCluster, RabbitNode, RedisServer
from tests.chaos.test_workers import done_counts, stale_ticks_accepted, start_many
from tests.harness import REDIS_URL, TIMINGS, Cluster, Stack, during, stack_on, wait_for
from tests.integration.trackers import Counter, Recorder
from tracking import Status, registry
from tracking.exceptions import RegistryUnavailable
from tracking.models import events, trackers, workers

pytestmark = pytest.mark.chaos

TRACKERS = 30
#: ticks of 0.1 s before a Recorder finishes: long enough that the fault lands mid-run
UNTIL = 150
#: how long a broker stays down (at least: the starts in the outage take half a second each)
BROKER_DOWN = 15.0
#: ticks before a Recorder finishes when the broker goes down: it runs through the whole outage
UNTIL_BROKER = UNTIL + int(BROKER_DOWN * 10)
#: how long the database stays down
DATABASE_DOWN = 6.0
#: trackers started while the broker is down: enough that the sweeps that publish them again keep
#: failing for seconds on end, which must not hold up the lease renewal of any worker
STARTED_IN_OUTAGE = 30
#: the longest a start() may take while the broker is down (it must not hang on the broker)
START_BUDGET = 3.0
#: after the fault is over, how long every tracker may take to finish
SETTLE = UNTIL * 0.1 + TIMINGS["lease_seconds"] + TIMINGS["start_grace_seconds"] + 30


# -- a stack on servers of the test's choosing ----------------------------------------------------


@contextlib.contextmanager
def running(
    folder: Path, name: str, database_url: str, broker_url: str, redis_prefix: str | None = None
) -> Iterator[Stack]:
    """A stack on these servers (with the Recorder's side table), installed in this process, and
    two workers and beat on it; stopped afterwards, and this process's pool closed."""
    stack = Stack(name, database_url, broker_url, folder, redis_prefix=redis_prefix, side_tables=("ticks",))
    with stack_on(stack), Cluster(stack) as cluster:
        cluster.start("w1", "w2", beat=True)
        yield stack


# -- what the tests start and check ---------------------------------------------------------------


def ticking(ids: list[str], ticks: int = 3) -> bool:
    """Every tracker runs and has checkpointed a few ticks."""
    for txid in ids:
        ref = Recorder.lookup(txid)
        if ref is None or ref.status is not Status.RUNNING:
            return False
        if (Recorder.get_state(txid) or {}).get("ticks", 0) < ticks:
            return False
    return True


def oldest_lease(stack: Stack) -> float:
    """Seconds since the least recently renewed worker lease was renewed, by the database clock."""
    # A timestamp minus a timestamp is an interval, as SQLAlchemy types it at run time; its type
    # annotations say a datetime, hence the (SQL-neutral) type_coerce.
    since_renewed = sa.type_coerce(sa.func.now() - workers.c.heartbeat_at, sa.Interval)
    with registry.engine(stack.settings()).connect() as conn:
        age: timedelta | None = conn.execute(
            sa.select(sa.func.max(since_renewed)).where(workers.c.status == "alive")
        ).scalar_one()
    return age.total_seconds() if age is not None else 0.0


def broker_outage(
    stack: Stack, prefix: str, down_at: float, n: int = STARTED_IN_OUTAGE
) -> tuple[list[str], float]:
    """While the broker is down: ``Counter.start`` of ``n`` new IDs (each returns at once, recorded
    as pending), and the workers' leases watched until the outage has lasted ``BROKER_DOWN``.
    Returns the new IDs and the oldest lease seen: renewal must not wait on the broker."""
    ids = [f"{prefix}_{uuid.uuid4().hex[:10]}_{i}" for i in range(n)]
    oldest = 0.0
    for txid in ids:
        began = time.monotonic()
        ref = Counter.start(txid, until=10)
        took = time.monotonic() - began
        assert took < START_BUDGET, f"start() took {took:.1f} s with the broker down"
        assert ref.status is Status.PENDING and not ref.already_started
        recorded = Counter.lookup(txid)
        assert recorded is not None and recorded.status is Status.PENDING
        oldest = max(oldest, oldest_lease(stack))
    for _left in during(down_at + BROKER_DOWN - time.monotonic(), interval=0.1):  # the outage's length
        oldest = max(oldest, oldest_lease(stack))
    return ids, oldest


def keep_down(since: float, seconds: float) -> None:
    """The deliberate length of an outage (the fault itself, not a wait for a condition)."""
    for _left in during(since + seconds - time.monotonic(), interval=1.0):
        pass


def canary_round_trip(stack: Stack, prefix: str, timeout: float = 30.0) -> float:
    """Start a short tracker and return how long it took to finish: the workers consume again."""
    txid = f"{prefix}_canary_{uuid.uuid4().hex[:10]}"
    settings = stack.settings()
    began = time.monotonic()
    Counter.start(txid, until=1)
    wait_for(
        lambda: _quietly(lambda: registry.get(settings, Counter.kind, txid) is None),
        timeout=timeout,
        interval=0.05,
        what=f"canary {txid} to run to Done",
    )
    return time.monotonic() - began


def _quietly(check: Callable[[], bool]) -> bool:
    """A poll that counts a registry blip (the database is coming back) as "not yet"."""
    try:
        return check()
    except (RegistryUnavailable, sa.exc.DBAPIError):
        return False


def outcome(stack: Stack, ids: list[str]) -> dict[str, list[str]]:
    """Per ID: finished once, finished twice, never finished, or still registered."""
    done = done_counts(stack, ids)
    with registry.engine(stack.settings()).connect() as conn:
        registered = set(
            conn.execute(
                sa.select(trackers.c.transaction_id).where(trackers.c.transaction_id.in_(ids))
            ).scalars()
        )
    return {
        "once": [t for t in ids if done[t] == 1],
        "twice": [t for t in ids if done[t] > 1],
        "lost": [t for t in ids if done[t] == 0 and t not in registered],
        "registered": sorted(registered),
    }


def settled(stack: Stack, ids: list[str]) -> bool:
    return _quietly(
        lambda: (
            (o := outcome(stack, ids))["registered"] == [] and len(o["once"]) + len(o["twice"]) == len(ids)
        )
    )


def abnormal_exits(stack: Stack, ids: list[str]) -> Tally[str]:
    """Abnormal exits of the trackers, by cause (worker lost, crashed, stopped)."""
    with registry.engine(stack.settings()).connect() as conn:
        rows = conn.execute(
            sa.select(events.c.event).where(
                events.c.transaction_id.in_(ids), events.c.event.in_(["worker_lost", "crashed", "stopped"])
            )
        ).scalars()
        return Tally(rows)


def restarted_twice(stack: Stack, ids: list[str]) -> str:
    """The event history of every tracker that exited abnormally more than once."""
    with registry.engine(stack.settings()).connect() as conn:
        rows = conn.execute(
            sa.select(events.c.transaction_id, events.c.epoch, events.c.at, events.c.event, events.c.worker)
            .where(events.c.transaction_id.in_(ids))
            .order_by(events.c.id)
        ).all()
    abnormal = Tally(r.transaction_id for r in rows if r.event in ("worker_lost", "crashed", "stopped"))
    return "\n".join(
        f"{r.transaction_id} epoch {r.epoch} {r.at:%H:%M:%S.%f} {r.event} {r.worker}"
        for r in rows
        if abnormal[r.transaction_id] > 1
    )


def settle_and_check(stack: Stack, ids: list[str], what: str, fault_over: float) -> Tally[str]:
    """Wait for every tracker to finish; assert none lost, none finished twice, no stale effect."""
    wait_for(lambda: settled(stack, ids), timeout=SETTLE, interval=0.25, what=f"{what}: every tracker Done")
    settle_seconds = time.monotonic() - fault_over
    result = outcome(stack, ids)
    causes = abnormal_exits(stack, ids)
    print(
        f"\n{what}: {len(ids)} trackers, all Done {settle_seconds:.1f} s after the fault; "
        f"finished once {len(result['once'])}, twice {len(result['twice'])}, lost {len(result['lost'])}; "
        f"abnormal exits {dict(causes) or 0}"
    )
    assert result["lost"] == []
    assert result["twice"] == []
    assert len(result["once"]) == len(ids)
    assert stale_ticks_accepted(stack, ids) == 0
    return causes


def admin_connection(stack: Stack) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection to the stack's PostgreSQL server that is not one of `tracking`'s."""
    url = sa.make_url(stack.database_url).set(drivername="postgresql", database="postgres")
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)


def listeners(stack: Stack) -> int:
    """Workers' wake-up listeners on the stack's database (application ``tracking-<pid>-listen``)."""
    with admin_connection(stack) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name LIKE %s",
            (sa.make_url(stack.database_url).database, "tracking-%-listen"),
        ).fetchone()
    return int(row[0]) if row else 0


def start_retrying(txid: str, attempts: int = 3) -> int:
    """``Counter.start``, tried again on ``RegistryUnavailable`` (documented as retryable; start
    is idempotent, so a retry after a commit whose answer was lost returns the same entry).
    Returns how many attempts failed."""
    for attempt in range(attempts):
        try:
            Counter.start(txid, until=5)
            return attempt
        except RegistryUnavailable:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def check_leases_held(oldest: float, causes: Tally[str]) -> None:
    """A broker outage costs no worker its lease: renewal never waits on the broker. Leases are
    renewed every heartbeat; one older than three heartbeats was held up (at the lease less one
    heartbeat its trackers stop ticking, at the lease they are restarted elsewhere)."""
    bound = 3 * TIMINGS["heartbeat_seconds"]
    print(f"\noldest worker lease during the broker outage: {oldest:.1f} s (bound {bound} s)")
    assert causes["worker_lost"] == 0, "a broker outage cost a worker its lease"
    assert oldest < bound, "lease renewal waited on the broker"


def check_the_broker_came_back(
    stack: Stack, broker: str, ids: list[str], back_at: float, oldest: float
) -> None:
    """After a broker outage: a tracker started now runs at once (the workers consume again), every
    tracker finishes once, and no worker's lease renewal waited on the broker."""
    canary = canary_round_trip(stack, broker)
    print(f"\n{broker} back: a new tracker ran to Done {canary:.1f} s after the broker returned")
    causes = settle_and_check(stack, ids, f"{broker} restart", back_at)
    check_leases_held(oldest, causes)


# -- Redis ----------------------------------------------------------------------------------------


def test_trackers_ride_out_a_redis_restart_and_those_started_while_it_is_down_run_once_it_is_back(
    pg_databases: Callable[[], str], tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path)
    try:
        redis.start()
        with running(tmp_path / "stack", "redis-restart", pg_databases(), redis.url) as stack:
            ids = start_many(TRACKERS, "redis", until=UNTIL_BROKER)
            wait_for(lambda: ticking(ids), timeout=30, what="trackers ticking before the fault")

            redis.shutdown()  # SHUTDOWN NOSAVE: every queued message and binding is gone too
            down_at = time.monotonic()
            late, oldest = broker_outage(stack, "redis_late", down_at)
            redis.start()
            back_at = time.monotonic()

            check_the_broker_came_back(stack, "redis", ids + late, back_at, oldest)
    finally:
        redis.close()


# -- RabbitMQ -------------------------------------------------------------------------------------


def test_trackers_ride_out_closed_rabbitmq_connections_and_an_app_restart_and_starts_in_the_outage_run(
    pg_databases: Callable[[], str], tmp_path: Path
) -> None:
    node = RabbitNode()
    try:
        node.start()
        with running(tmp_path / "stack", "rabbitmq-restart", pg_databases(), node.url) as stack:
            ids = start_many(TRACKERS, "rabbit", until=UNTIL_BROKER + 50)
            wait_for(lambda: ticking(ids), timeout=30, what="trackers ticking before the fault")

            for _ in range(3):
                node.ctl("close_all_connections", "-p", "/", "chaos")
                canary = canary_round_trip(stack, "rabbit")
                print(f"\nrabbitmq connections closed: a new tracker ran to Done in {canary:.1f} s")

            node.ctl("stop_app")
            down_at = time.monotonic()
            try:
                late, oldest = broker_outage(stack, "rabbit_late", down_at)
            finally:
                node.ctl("start_app")
                node.await_startup()
            back_at = time.monotonic()

            check_the_broker_came_back(stack, "rabbitmq", ids + late, back_at, oldest)
    finally:
        node.close()


# -- PostgreSQL -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster this module may restart; stopped and removed afterwards."""
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_trackers_ride_out_a_postgresql_restart_and_no_tracker_runs_twice(
    mode: str, pg_cluster: PostgresCluster, redis_prefix: str, tmp_path: Path
) -> None:
    database = pg_cluster.create_database()
    with running(tmp_path / "stack", f"postgres-{mode}", database, REDIS_URL, redis_prefix) as stack:
        ids = start_many(TRACKERS, f"pg_{mode}", until=UNTIL)
        wait_for(lambda: ticking(ids), timeout=30, what="trackers ticking before the fault")

        pg_cluster.stop(mode)
        down_at = time.monotonic()
        try:
            keep_down(down_at, DATABASE_DOWN)
        finally:
            pg_cluster.start()
        back_at = time.monotonic()

        causes = settle_and_check(stack, ids, f"postgresql -m {mode} restart", back_at)
        # Each tracker is restarted at most once for the outage: no restart storm.
        assert sum(causes.values()) <= len(ids), restarted_twice(stack, ids)
        # Each worker's wake-up listener (LISTEN for casts, calls and stops) is connected again.
        wait_for(lambda: listeners(stack) == 2, timeout=15, what="both wake-up listeners back")


def test_trackers_ride_out_their_database_connections_being_killed_again_and_again(
    pg_databases: Callable[[], str], redis_prefix: str, tmp_path: Path
) -> None:
    database = pg_databases()
    name = sa.make_url(database).database
    with (
        running(tmp_path / "stack", "postgres-kill-connections", database, REDIS_URL, redis_prefix) as stack,
        admin_connection(stack) as admin,
    ):
        ids = start_many(TRACKERS, "pg_kill", until=UNTIL)
        wait_for(lambda: ticking(ids), timeout=30, what="trackers ticking before the fault")

        killed, lookups, errors = 0, 0, Tally[str]()
        started: list[str] = []
        for _ in range(5):
            killed += len(
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name LIKE %s AND pid <> pg_backend_pid()",
                    (name, "tracking-%"),
                ).fetchall()
            )
            # Right after the kill, callers start and look up trackers: they get answers, or a
            # documented error (RegistryUnavailable), never anything else.
            txid = f"pg_kill_started_{uuid.uuid4().hex[:10]}"
            errors["start: RegistryUnavailable"] += start_retrying(txid)
            started.append(txid)
            for _left in during(2.0):  # the time between two kills: part of the fault
                for txid in ids[:5]:
                    lookups += 1
                    try:
                        Recorder.lookup(txid)
                    except RegistryUnavailable:
                        errors["lookup: RegistryUnavailable"] += 1
        fault_over = time.monotonic()
        print(
            f"\npg_terminate_backend: {killed} connections killed in 5 rounds; "
            f"{len(started)} starts and {lookups} lookups meanwhile, errors {dict(+errors) or 0}"
        )
        assert killed >= 5
        settle_and_check(stack, ids + started, "killed database connections", fault_over)
        wait_for(lambda: listeners(stack) == 2, timeout=15, what="both wake-up listeners back")
