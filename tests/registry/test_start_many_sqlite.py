"""``start_many`` on SQLite, the embedded default: a batch of new IDs is inserted by one statement
(the IDs bound as one JSON array) and its ``started`` events by one more, run as driver SQL. What a
batch writes and returns is what ``start`` writes and returns for each ID."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.harness import migrated
from tracking import registry
from tracking.exceptions import RegistryRefused
from tracking.models import events, token_floor, trackers
from tracking.policy import RestartPolicy
from tracking.settings import Settings

KIND = "batch"
POLICY = RestartPolicy(max_restarts=7, max_seconds=30, backoff=2, backoff_max=90)
#: the columns a start writes alike for every entry of a batch (not its key, task, or times)
ALIKE = ("kind", "status", "args", "state", "policy", "restarts", "restart_times", "backoff_step", "due_at")


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    with migrated(Settings(database_url=f"sqlite:///{tmp_path}/registry.sqlite3")) as migrated_settings:
        yield migrated_settings


def stored(settings: Settings, *ids: str) -> list[dict[str, Any]]:
    """The rows of ``ids`` as SQLite holds them (JSON as its text, times as their text)."""
    with registry.engine(settings).connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT *, typeof(epoch) AS epoch_type FROM tracking_trackers WHERE transaction_id IN "
            f"({', '.join('?' for _ in ids)}) ORDER BY transaction_id",
            ids,
        )
        return [dict(row._mapping) for row in rows]


def started(settings: Settings) -> list[tuple[str, int, str, str | None, str | None]]:
    with registry.engine(settings).connect() as conn:
        query = sa.select(
            events.c.transaction_id, events.c.epoch, events.c.event, events.c.worker, events.c.detail
        )
        return [tuple(row) for row in conn.execute(query.order_by(events.c.id))]


def test_a_batch_writes_and_returns_what_start_does_for_each_id(settings: Settings) -> None:
    args = {"n": [1, 2.5, None], "name": "é 😀"}
    single, _ = registry.start(settings, KIND, "a_single", args, POLICY)

    found = registry.start_many(settings, KIND, ["b_2", "b_1"], args, POLICY)

    for t, (row, created) in found.items():
        assert created
        assert registry.get(settings, KIND, t) == row
        assert {f: getattr(row, f) for f in ALIKE if f != "due_at"} == {
            f: getattr(single, f) for f in ALIKE if f != "due_at"
        }
        assert type(row.started_at) is type(single.started_at) and row.started_at.tzinfo is not None
        assert row.due_at is not None and single.due_at is not None
        assert row.due_at - row.started_at == single.due_at - single.started_at
    one, *batch = stored(settings, "a_single", "b_1", "b_2")
    for written in batch:
        assert {c: written[c] for c in (*ALIKE[:-1], "epoch", "epoch_type")} == {
            c: one[c] for c in (*ALIKE[:-1], "epoch", "epoch_type")
        }
    assert started(settings) == [(t, 1, "started", None, None) for t in ("a_single", "b_1", "b_2")]


def test_the_entries_of_a_batch_share_no_mutable_value(settings: Settings) -> None:
    found = registry.start_many(settings, KIND, ["a", "b"], {"list": [1]}, POLICY)

    (a, _), (b, _) = found["a"], found["b"]
    assert a.args == b.args and a.args is not b.args and a.args["list"] is not b.args["list"]
    assert a.policy is not b.policy and a.restart_times is not b.restart_times


def test_a_batch_is_inserted_in_the_sorted_order_of_its_ids(settings: Settings) -> None:
    ids = [f"id_{n:04}" for n in range(300)]

    found = registry.start_many(settings, KIND, [*reversed(ids), *ids[:10]], {}, POLICY)

    assert list(found) == ids
    assert [row.id for row, _ in found.values()] == sorted(row.id for row, _ in found.values())
    assert [t for t, *_ in started(settings)] == ids


def test_a_batch_past_sqlites_limit_of_bound_values_is_one_statement(settings: Settings) -> None:
    ids = [f"id_{n:05}" for n in range(40_000)]
    statements: list[str] = []
    eng = registry.engine(settings)
    sa.event.listen(eng, "before_cursor_execute", lambda *a: statements.append(a[2]))

    found = registry.start_many(settings, KIND, ids, {}, POLICY)

    assert len(found) == len(ids) and all(created for _, created in found.values())
    assert sum(s.startswith("INSERT INTO tracking_trackers") for s in statements) == 1
    assert sum(s.startswith("INSERT INTO tracking_events") for s in statements) == 1
    assert len(started(settings)) == len(ids)


def test_a_new_life_in_a_batch_takes_an_epoch_above_its_events_and_the_token_floor(
    settings: Settings,
) -> None:
    with registry.engine(settings).begin() as conn:
        conn.execute(token_floor.update().where(token_floor.c.id == 1).values(epoch=4))
        conn.execute(
            events.insert().values(
                kind=KIND, transaction_id="past", epoch=9, at=datetime.now(UTC), event="exited"
            )
        )

    found = registry.start_many(settings, KIND, ["new", "past"], {}, POLICY)

    assert (found["new"][0].epoch, found["past"][0].epoch) == (5, 10)
    assert [(t, epoch) for t, epoch, event, *_ in started(settings) if event == "started"] == [
        ("new", 5),
        ("past", 10),
    ]


@pytest.mark.parametrize("ids", [["café", "日本", "😀", "a'b\"c\\d", "  x  ", "null", "123"]])
def test_any_text_id_round_trips_through_the_batchs_json(settings: Settings, ids: list[str]) -> None:
    found = registry.start_many(settings, KIND, ids, {}, POLICY)

    assert list(found) == sorted(ids)
    assert [row.transaction_id for row, _ in found.values()] == sorted(ids)
    assert {e.transaction_id for e in registry.get_many(settings, KIND, ids)} == set(ids)
    assert {type(row["transaction_id"]) for row in stored(settings, *ids)} == {str}


def test_a_batch_with_an_id_the_database_cannot_store_writes_nothing(settings: Settings) -> None:
    with pytest.raises(RegistryRefused):
        registry.start_many(settings, KIND, ["a", "b", "z\ud800"], {}, POLICY)

    assert stored(settings, "a", "b") == [] and started(settings) == []


def test_a_batch_in_the_callers_transaction_commits_or_rolls_back_with_it(settings: Settings) -> None:
    eng = registry.engine(settings)
    with eng.connect() as conn:  # no transaction begun: the batch begins it, as execute would
        registry.start_many(settings, KIND, ["gone_1", "gone_2"], {}, POLICY, conn)
        assert conn.in_transaction()
        conn.rollback()
    with eng.connect() as conn:
        registry.start_many(settings, KIND, ["kept_1", "kept_2"], {}, POLICY, conn)
        conn.commit()

    with eng.connect() as conn:
        assert sorted(conn.scalars(sa.select(trackers.c.transaction_id))) == ["kept_1", "kept_2"]
    assert [t for t, *_ in started(settings)] == ["kept_1", "kept_2"]


def test_a_batch_of_registered_ids_returns_them_as_they_are(settings: Settings) -> None:
    first = registry.start_many(settings, KIND, ["a", "b"], {"v": 1}, POLICY)

    again = registry.start_many(settings, KIND, ["a", "b", "c"], {"v": 2}, POLICY)

    assert again["a"] == (first["a"][0], False) and again["b"] == (first["b"][0], False)
    assert again["c"][1] and again["c"][0].args == {"v": 2}
    assert [t for t, *_ in started(settings)] == ["a", "b", "c"]
