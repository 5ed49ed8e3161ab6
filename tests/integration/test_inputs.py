"""Bad input gets a clear error and changes nothing; odd but valid IDs round-trip exactly."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import tracking
from tests.harness import Stack
from tests.integration.trackers import Counter
from tracking import registry
from tracking.models import events, trackers

INVALID = ["", " ", "a" * 256, "nul\x00", "new\nline", None, 123, b"x"]
ODD_BUT_VALID = [
    "'; DROP TABLE tracking_trackers;--",
    "%",
    "_",
    "0x5a1e%_\\",
    "تحويل-💸-é",
    "e\u0301",  # NFD: must not be confused with the NFC "é" above
    "a" * 255,
]


def table_counts(stack: Stack) -> tuple[int, int]:
    with registry.engine(stack.settings()).connect() as conn:
        return (
            conn.execute(sa.select(sa.func.count()).select_from(trackers)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one(),
        )


@pytest.mark.parametrize("bad", INVALID, ids=repr)
def test_an_invalid_transaction_id_raises_and_writes_nothing(stack: Stack, bad: object) -> None:
    before = table_counts(stack)
    for call in (Counter.start, Counter.lookup, Counter.get_state, Counter.stop):
        with pytest.raises(tracking.InvalidTransactionId) as info:
            call(bad)  # type: ignore[arg-type]  # invalid on purpose
        assert "transaction ID" in str(info.value)
    assert table_counts(stack) == before


def test_start_arguments_that_are_not_json_raise_and_write_nothing(stack: Stack) -> None:
    before = table_counts(stack)
    with pytest.raises(tracking.StateNotSerializable):
        Counter.start("txn_not_json", when={1, 2})
    assert table_counts(stack) == before
    assert Counter.lookup("txn_not_json") is None


def test_odd_but_valid_ids_round_trip_exactly(stack: Stack) -> None:
    for txid in ODD_BUT_VALID:
        ref = Counter.start(txid)
        assert ref.transaction_id == txid
    for txid in ODD_BUT_VALID:
        found = Counter.lookup(txid)
        assert found is not None and found.transaction_id == txid
    # "%" and "_" are matched literally, never as LIKE patterns
    assert sorted(r.transaction_id for r in Counter.list() if r.transaction_id in ODD_BUT_VALID) == sorted(
        ODD_BUT_VALID
    )
    for txid in ODD_BUT_VALID:
        Counter.stop(txid)
        assert Counter.lookup(txid) is None
