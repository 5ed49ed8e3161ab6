"""``start_many`` and ``lookup_many`` with real workers, on SQLite and PostgreSQL: a batch is
recorded in one transaction (all or none), idempotent per ID, each new entry published once and
run, past a few entries through fan-out messages (delivered twice, still one incarnation each;
malformed, refused whole); ``lookup_many`` finds the live ones by ID."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import orm

import tracking
import tracking.celery
from tests.harness import Cluster, Stack, running, wait_for
from tests.integration.trackers import Counter, TemporaryCrasher
from tracking import client, registry
from tracking.celery.publishing import FAN_OUT_ABOVE, FAN_OUT_TASK, publish_many_with, send_fan_out
from tracking.client import Publishable
from tracking.models import events
from tracking.policy import RestartPolicy

pytestmark = [pytest.mark.stacks("sqlite-embedded", "postgres-redis"), pytest.mark.cluster(workers=("w1",))]


@pytest.fixture(params=["one by one", "on one producer"])
def sent(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """The transaction IDs the test's client publishes (it publishes them as before), one publish
    each or, for a batch, on one producer (``publish_many``)."""
    before = client.current()
    seen: list[str] = []

    def publish(row: Publishable) -> None:
        seen.append(row.transaction_id)
        before.publish(row)

    many = None
    if request.param == "on one producer":
        on_one = publish_many_with(tracking.celery.current_app(), before.settings)

        def many(rows: Sequence[Publishable]) -> None:
            seen.extend(row.transaction_id for row in rows)
            on_one(rows)

    client.use(dataclasses.replace(before, publish=publish, publish_many=many))
    yield seen
    client.use(before)


def test_start_many_records_the_batch_publishes_each_new_entry_once_and_all_run(
    cluster: Cluster, sent: list[str], txid: str
) -> None:
    ids = [f"{txid}_{n}" for n in range(20)]
    first = Counter.start(ids[0])
    sent.clear()

    refs = Counter.start_many([*ids, ids[1]])  # one ID twice: started once

    assert list(refs) == ids
    assert refs[ids[0]].already_started and refs[ids[0]].task_id == first.task_id
    assert not any(refs[t].already_started for t in ids[1:])
    assert sorted(sent) == sorted(ids[1:])
    wait_for(
        lambda: (
            all(ref.status == "running" for ref in Counter.lookup_many(ids).values())
            and len(Counter.lookup_many(ids)) == len(ids)
        ),
        timeout=60,
        what="every tracker of the batch to run",
    )

    again = Counter.start_many(ids)
    assert all(ref.already_started for ref in again.values())
    assert sorted(sent) == sorted(ids[1:])  # nothing published twice


def test_a_batch_with_one_bad_id_records_nothing(cluster: Cluster, sent: list[str], txid: str) -> None:
    ids = [f"{txid}_ok", "", f"{txid}_ok2"]

    with pytest.raises(tracking.InvalidTransactionId):
        Counter.start_many(ids)

    assert Counter.lookup_many([ids[0], ids[2]]) == {}
    assert sent == []


def test_lookup_many_finds_the_live_trackers_by_id_and_leaves_out_unknown_and_dead_ones(
    cluster: Cluster, txid: str
) -> None:
    live, dead, unknown = f"{txid}_live", f"{txid}_dead", f"{txid}_unknown"
    Counter.start(live)
    TemporaryCrasher.start(dead)
    wait_for(lambda: running(Counter, live), timeout=30, what="the live one to run")
    settings = cluster.stack.settings()

    def is_dead() -> bool:
        entry = registry.get(settings, TemporaryCrasher.kind, dead)
        return entry is not None and entry.status == "dead"

    wait_for(is_dead, timeout=30, what="the temporary crasher to be dead")

    assert set(Counter.lookup_many([live, unknown])) == {live}
    assert TemporaryCrasher.lookup_many([dead]) == {}
    assert Counter.lookup_many([live])[live].status == "running"


def test_a_batch_the_database_refuses_midway_records_none_of_it(pg_database: str, txid: str) -> None:
    # Below the client's checks: PostgreSQL refuses an ID longer than its column, after the
    # batch's earlier IDs were inserted in the same transaction.
    settings = tracking.Settings(database_url=pg_database)
    registry.migrate(settings)
    try:
        with pytest.raises(tracking.RegistryRefused):
            registry.start_many(settings, "bulk", [f"{txid}_a", "z" * 300], {}, RestartPolicy())
        assert registry.get_many(settings, "bulk", [f"{txid}_a"]) == []
    finally:
        registry.dispose(settings)


def test_start_many_inside_a_session_takes_effect_only_if_it_commits(
    cluster: Cluster, sent: list[str], txid: str, tmp_path: Path
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.sqlite3'}")  # the registry is elsewhere
    ids = [f"{txid}_{n}" for n in range(3)]
    try:
        with orm.Session(engine) as session:
            session.begin()
            with tracking.in_transaction(session):
                waiting = Counter.start_many(ids)
            session.rollback()
        assert all(ref.on_commit for ref in waiting.values())
        assert Counter.lookup_many(ids) == {} and sent == []

        with orm.Session(engine) as session, session.begin(), tracking.in_transaction(session):
            Counter.start_many(ids)
        assert set(Counter.lookup_many(ids)) == set(ids) and sorted(sent) == sorted(ids)
    finally:
        engine.dispose()


# -- fan-out messages -----------------------------------------------------------------------------


def running_epochs(stack: Stack, kind: str, ids: list[str]) -> dict[str, list[int]]:
    """The epochs each ID's incarnations ran under (one "running" event per incarnation), by ID."""
    with registry.engine(stack.settings()).connect() as conn:
        rows = conn.execute(
            sa.select(events.c.transaction_id, events.c.epoch)
            .where(events.c.kind == kind, events.c.transaction_id.in_(ids), events.c.event == "running")
            .order_by(events.c.id)
        )
        found: dict[str, list[int]] = {t: [] for t in ids}
        for row in rows:
            found[row.transaction_id].append(row.epoch)
        return found


def fan_outs_sent(cluster: Cluster, count: int) -> int:
    """How many fan-out messages of ``count`` entries the worker ran to the end."""
    lines = cluster.log("w1").splitlines()
    return sum(1 for line in lines if f"{FAN_OUT_TASK}[" in line and f"'sent {count}'" in line)


def test_start_many_past_the_threshold_runs_each_tracker_once_under_its_recorded_epoch(
    cluster: Cluster, txid: str
) -> None:
    ids = [f"{txid}_{n}" for n in range(FAN_OUT_ABOVE + 3)]
    before = fan_outs_sent(cluster, len(ids))

    refs = Counter.start_many(ids, until=3)  # each finishes (Done) after three ticks

    wait_for(lambda: Counter.lookup_many(ids) == {}, timeout=60, what="every tracker of the batch to finish")
    assert running_epochs(cluster.stack, Counter.kind, ids) == {t: [refs[t].epoch] for t in ids}
    assert fan_outs_sent(cluster, len(ids)) == before + 1  # published by one fan-out message


@pytest.mark.stacks("postgres-redis")
def test_a_fan_out_message_delivered_twice_still_runs_one_incarnation_per_id(
    cluster: Cluster, txid: str
) -> None:
    ids = [f"{txid}_{n}" for n in range(FAN_OUT_ABOVE + 2)]
    Counter.start_many(ids)
    wait_for(
        lambda: all(running(Counter, t) for t in ids), timeout=60, what="every tracker of the batch to run"
    )
    rows = registry.get_many(cluster.stack.settings(), Counter.kind, ids)
    app = tracking.celery.current_app()

    for _ in range(2):  # the same fan-out again, twice: a broker's redelivery, a duplicate
        with app.producer_or_acquire() as producer:
            send_fan_out(app, rows, {"queue": cluster.stack.queue}, producer=producer)

    def each_dropped_twice() -> bool:
        # at least: a message the supervisor published again before the first claim is dropped too
        lines = [line for line in cluster.log("w1").splitlines() if "'dropped'" in line]
        return all(sum(row.task_id in line for line in lines) >= 2 for row in rows)

    wait_for(each_dropped_twice, timeout=60, what="every second and third message to be dropped")
    assert running_epochs(cluster.stack, Counter.kind, ids) == {
        row.transaction_id: [row.epoch] for row in rows
    }
    for t in ids:
        Counter.stop(t)


@pytest.mark.stacks("postgres-redis")
def test_a_malformed_fan_out_message_is_refused_whole_logged_and_sends_nothing(
    cluster: Cluster, txid: str
) -> None:
    app = tracking.celery.current_app()
    good_task = str(uuid.uuid4())
    good = [Counter.kind, f"{txid}_good", 1, good_task]
    messages = {
        "not a list": {"rows": [good]},
        "a bad ID": [good, [Counter.kind, "", 1, str(uuid.uuid4())]],
        "a bad epoch": [good, [Counter.kind, f"{txid}_epoch", "1", str(uuid.uuid4())]],
        "an unknown kind": [good, ["NoSuchKind", f"{txid}_kind", 1, str(uuid.uuid4())]],
        "a short row": [good, [Counter.kind, f"{txid}_short", 1]],
    }
    task_ids = {what: str(uuid.uuid4()) for what in messages}
    for what, rows in messages.items():
        app.send_task(FAN_OUT_TASK, args=[rows], task_id=task_ids[what], queue=cluster.stack.queue)

    def refusals() -> list[str]:
        return [
            line for line in cluster.log("w1").splitlines() if "refused a malformed fan-out message" in line
        ]

    wait_for(
        lambda: all(any(task_id in line for line in refusals()) for task_id in task_ids.values()),
        what="each malformed fan-out message refused in the worker's log",
    )
    # A tracker started now runs: the worker is not wedged, and had the refused messages sent
    # anything, it would have been queued before this one's message.
    Counter.start(txid, until=2)
    wait_for(lambda: Counter.lookup(txid) is None, timeout=60, what="a tracker started afterwards to finish")
    assert good_task not in cluster.log("w1")
    assert Counter.lookup_many([f"{txid}_good", f"{txid}_epoch", f"{txid}_kind", f"{txid}_short"]) == {}
    assert len([line for line in refusals() if any(t in line for t in task_ids.values())]) == len(messages)
