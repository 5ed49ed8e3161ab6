"""Poison inputs: values the registry database cannot store are refused up front, and a malformed
tracker message is refused once instead of wedging a worker.

The PostgreSQL tests tie the rule to the database: what ``json_value`` refuses is what PostgreSQL
refuses (or would read back changed), and what it accepts PostgreSQL stores and reads back equal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracking
import tracking.worker
from tests.unit.conftest import MessageProbe, ProbeTask
from tracking.models import Json
from tracking.validation import json_object, json_value, stop_reason, storable_text, transaction_id

LIMIT = 64 * 1024

# -- json_value: what cannot be stored is refused ---------------------------------------------------

REFUSED: dict[str, tuple[object, str]] = {
    "NUL in a value": ({"a": "x\x00y"}, "NUL"),
    "NUL alone": ({"a": "\x00"}, "NUL"),
    "NUL in a key": ({"x\x00": 1}, "NUL"),
    "NUL after a backslash": ({"a": "\\\x00"}, "NUL"),
    "NUL after two backslashes": ({"a": "\\\\\x00"}, "NUL"),
    "lone high surrogate in a value": ({"a": "\ud800"}, "surrogate"),
    "lone low surrogate in a value": ({"a": "ok \udfff ok"}, "surrogate"),
    "lone surrogate in a key": ({"\udfff": 1}, "surrogate"),
    "surrogate pair as two code points": ({"a": "\ud83d\ude00"}, "surrogate"),
    "NUL nested deep in a list": ({"a": [1, [2, {"b": [None, {"c": ["fine", "x\x00"]}]}]]}, "NUL"),
    "surrogate nested deep in a list": ({"a": [[[[{"k": [True, "\ud800"]}]]]]}, "surrogate"),
    "NUL in a nested key": ({"a": [{"ok": 1, "k\x00": 2}]}, "NUL"),
}

ACCEPTED: dict[str, object] = {
    "escaped backslash then u0000": {"a": "\\u0000"},
    "two escaped backslashes then u0000": {"a": "\\\\u0000"},
    "escaped backslash then u0000 in a key": {"\\u0000": "\\u0000"},
    "emoji": {"a": "🚚📦 😀", "🔑": ["👩‍👩‍👧"]},
    "right-to-left text": {"a": "تحويل", "ע": "שלום"},
    "combining characters": {"a": "e\u0301 n\u0303", "z\u0335": 1},
    "other control characters": {"a": "tab\there\nnew line\x01\x7f"},
    "the replacement character": {"a": "\ufffd"},
}


@pytest.mark.parametrize(("value", "problem"), REFUSED.values(), ids=REFUSED.keys())
def test_a_string_the_registry_cannot_store_is_refused_with_a_clear_error(
    value: object, problem: str
) -> None:
    with pytest.raises(tracking.StateNotSerializable, match=problem) as info:
        json_value(value, "tick's state", LIMIT)
    message = str(info.value)
    assert "tick's state" in message and "cannot store" in message


@pytest.mark.parametrize(("value", "problem"), REFUSED.values(), ids=REFUSED.keys())
def test_json_object_refuses_the_same_strings(value: object, problem: str) -> None:
    with pytest.raises(tracking.StateNotSerializable, match=problem):
        json_object(value, "start arguments", LIMIT)


def test_a_refused_top_level_string_is_refused_too() -> None:
    with pytest.raises(tracking.StateNotSerializable, match="NUL"):
        json_value("a\x00", "a message", LIMIT)
    with pytest.raises(tracking.StateNotSerializable, match="surrogate"):
        json_value("\ud800", "a message", LIMIT)


@pytest.mark.parametrize("value", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_storable_unicode_and_escaped_backslashes_are_accepted_unchanged(value: object) -> None:
    assert json_value(value, "state", LIMIT) == value


def test_non_str_keys_still_become_strings_as_json_makes_them() -> None:
    assert json_value({1: "a", 2.5: "b", False: "c", None: "d"}, "state", LIMIT) == {
        "1": "a",
        "2.5": "b",
        "false": "c",
        "null": "d",
    }


def test_the_size_limit_counts_the_utf8_bytes_of_the_json() -> None:
    # 300 two-byte characters: 600 bytes stored (the \u escapes would have counted 1800).
    assert json_value({"s": "é" * 300}, "state", 700) == {"s": "é" * 300}
    with pytest.raises(tracking.StateNotSerializable, match="over the limit"):
        json_value({"s": "é" * 400}, "state", 700)


def test_a_state_of_the_full_size_with_many_backslashes_is_accepted() -> None:
    state = {f"k{i}": "\\" * 40 + "u0000" for i in range(LIMIT // 120)}
    assert json_value(state, "state", LIMIT) == state


# -- transaction IDs and stop reasons ---------------------------------------------------------------


@pytest.mark.parametrize("bad", ["\ud800", "txn-\udfff", "\ud83d\ude00"])
def test_a_transaction_id_with_a_lone_surrogate_raises_invalid_transaction_id(bad: str) -> None:
    with pytest.raises(tracking.InvalidTransactionId, match="surrogate"):
        transaction_id(bad)


def test_a_transaction_id_with_an_emoji_is_still_valid() -> None:
    assert transaction_id("order-😀-42") == "order-😀-42"


@pytest.mark.parametrize("good", ["crash", "normal", "operator asked", "x" * 255, "émoji 😀", "تحويل"])
def test_a_valid_stop_reason_is_returned_unchanged(good: str) -> None:
    assert stop_reason(good) == good


@pytest.mark.parametrize(
    "bad",
    ["", "   ", "x" * 256, "nul\x00", "new\nline", "tab\t", "\x7f", "\ud800", "a\udfffb", None, 3, b"crash"],
)
def test_an_invalid_stop_reason_raises_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match="stop reason"):
        stop_reason(bad)


def test_storable_text_removes_nul_and_replaces_lone_surrogates() -> None:
    assert storable_text("a\x00b\x00") == "ab"
    assert storable_text("x\ud800y\udfff") == "x\ufffdy\ufffd"
    assert storable_text("\x00\ud83d\ude00") == "\ufffd\ufffd"


@pytest.mark.parametrize("text", ["", "plain", "Traceback:\n  line 1\tx", "😀 تحويل e\u0301", "\\u0000"])
def test_storable_text_leaves_storable_text_alone(text: str) -> None:
    assert storable_text(text) == text


# -- the rule is PostgreSQL's -----------------------------------------------------------------------


@pytest.fixture
def pg(pg_database: str) -> Iterator[sa.Connection]:
    """A connection to a fresh PostgreSQL database with a temp table ``t`` of the registry's
    JSON type (jsonb) and a text column."""
    engine = sa.create_engine(pg_database)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("CREATE TEMP TABLE t (v jsonb, s text)"))
            conn.commit()
            yield conn
    finally:
        engine.dispose()


T = sa.table("t", sa.column("v", Json), sa.column("s", sa.Text()))


def _store(conn: sa.Connection, value: object, column: str = "v") -> Any:
    """Insert ``value`` into ``column`` (``v``, jsonb, or ``s``, text), return what PostgreSQL reads
    back; rolled back."""
    with conn.begin() as tx:
        try:
            return conn.execute(sa.insert(T).values({column: value}).returning(T.c[column])).scalar_one()
        finally:
            tx.rollback()


@pytest.mark.parametrize(
    "value", [v for v, _ in REFUSED.values() if v != {"a": "\ud83d\ude00"}], ids=lambda v: repr(v)[:40]
)
def test_what_json_value_refuses_postgresql_refuses(pg: sa.Connection, value: object) -> None:
    with pytest.raises(sa.exc.DataError):
        _store(pg, value)


def test_a_surrogate_pair_of_two_code_points_would_come_back_changed_so_it_is_refused(
    pg: sa.Connection,
) -> None:
    value = {"a": "\ud83d\ude00"}
    assert _store(pg, value) == {"a": "😀"} != value
    with pytest.raises(tracking.StateNotSerializable):
        json_value(value, "state", LIMIT)


@pytest.mark.parametrize("value", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_what_json_value_accepts_postgresql_stores_and_reads_back_equal(
    pg: sa.Connection, value: object
) -> None:
    assert _store(pg, json_value(value, "state", LIMIT)) == value


def test_postgresql_refuses_nul_and_lone_surrogates_in_text_and_storable_text_is_always_stored(
    pg: sa.Connection,
) -> None:
    with pytest.raises(sa.exc.DataError):
        _store(pg, "crash\x00report", "s")
    with pytest.raises(UnicodeEncodeError):
        _store(pg, "crash \ud800 report", "s")
    for text in ("crash\x00report", "crash \ud800 report", "\\u0000 😀"):
        assert _store(pg, storable_text(text), "s") == storable_text(text)


_TRICKY = ["\x00", "\\", "u0000", "\\u0000", "\ud800", "\udfff", "\ud83d", "\ude00", "é", "😀", "\u202e", '"']
_strings = st.lists(
    st.sampled_from(_TRICKY) | st.text(st.characters(exclude_categories=()), max_size=4), max_size=5
).map("".join)
_json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _strings,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_strings, children, max_size=4),
    max_leaves=20,
)


def _same_json(expected: Any, got: Any) -> bool:
    """Equal as JSON. jsonb keeps numbers as ``numeric`` and prints them without an exponent, so a
    float such as 1e23 comes back as the int 100000000000000000000000: the same number in JSON, but
    not ``==`` to the float in Python."""
    if isinstance(expected, float):
        return type(got) in (int, float) and float(got) == expected
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and all(map(_same_json, expected, got))
    if isinstance(expected, dict):
        return (
            isinstance(got, dict)
            and got.keys() == expected.keys()
            and all(_same_json(v, got[k]) for k, v in expected.items())
        )
    return type(got) is type(expected) and bool(got == expected)


def test_whatever_json_value_accepts_postgresql_stores_and_reads_back_equal(pg: sa.Connection) -> None:
    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_json_like)
    def stores_or_is_refused(value: object) -> None:
        try:
            accepted = json_value(value, "state", LIMIT)
        except tracking.StateNotSerializable:
            return
        stored = _store(pg, accepted)
        assert _same_json(accepted, stored), (accepted, stored)

    stores_or_is_refused()


# -- a malformed tracker message is refused once -----------------------------------------------------


MALFORMED: dict[str, tuple[list[object], dict[str, object], str]] = {
    "a dict as the transaction ID": ([{"a": 1}], {"epoch": 1}, "{'a': 1}"),
    "an int as the transaction ID": ([42], {"epoch": 1}, "42"),
    "an empty transaction ID": ([""], {"epoch": 1}, "''"),
    "a transaction ID with NUL": (["a\x00b"], {"epoch": 1}, "'a\\x00b'"),
    "a transaction ID with a lone surrogate": (["a\ud800"], {"epoch": 1}, "'a\\ud800'"),
    "a huge transaction ID": (["x" * 5000], {"epoch": 1}, "'xxxx"),
    "a str epoch": (["ok_id"], {"epoch": "x"}, "'x'"),
    "a float epoch": (["ok_id"], {"epoch": 1.0}, "1.0"),
    "a bool epoch": (["ok_id"], {"epoch": True}, "True"),
    "a zero epoch": (["ok_id"], {"epoch": 0}, "0"),
    "a negative epoch": (["ok_id"], {"epoch": -3}, "-3"),
    "a list epoch": (["ok_id"], {"epoch": [1]}, "[1]"),
}


@pytest.mark.parametrize(("args", "kwargs", "shown"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_tracker_message_is_refused_and_logged_without_touching_the_registry(
    probe_task: ProbeTask,
    caplog: pytest.LogCaptureFixture,
    args: list[object],
    kwargs: dict[str, object],
    shown: str,
) -> None:
    task, reached = probe_task
    with caplog.at_level(logging.ERROR, logger="tracking.celery"):
        assert task(*args, **kwargs) == "refused"
    assert reached == []
    [record] = [r for r in caplog.records if "refused a malformed tracker message" in r.getMessage()]
    message = record.getMessage()
    assert record.levelno == logging.ERROR
    assert MessageProbe.kind in message and shown in message
    assert len(message) < 400, "the bad value is shown truncated"


def test_a_well_formed_tracker_message_still_reaches_the_runtime(
    probe_task: ProbeTask,
) -> None:
    task, reached = probe_task
    assert task("ok_id", epoch=1) == "ran"
    assert task("order-😀", epoch=7) == "ran"
    assert reached == [("ok_id", 1), ("order-😀", 7)]


def test_a_tracker_task_called_directly_without_an_epoch_is_still_refused(
    probe_task: ProbeTask,
) -> None:
    task, reached = probe_task
    assert task("ok_id") == "refused"
    assert reached == []
