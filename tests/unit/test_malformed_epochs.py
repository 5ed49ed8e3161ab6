"""A tracker message whose epoch the registry cannot store (past a signed 64-bit integer) is
refused as malformed, once, instead of reaching the registry (SQLite's driver raised a raw
OverflowError on it)."""

from __future__ import annotations

import logging

import pytest

from tests.unit.conftest import ProbeTask
from tracking.celery import tasks

TOO_LARGE = {
    "2**63": (2**63, str(2**63)),
    "2**64": (2**64, str(2**64)),
    "10**400": (10**400, "1000000000"),
    "past the digits Python prints": (10**5000, "<int too long to show>"),
}


@pytest.mark.parametrize(("epoch", "shown"), TOO_LARGE.values(), ids=TOO_LARGE.keys())
def test_an_epoch_past_a_signed_64_bit_integer_is_malformed(epoch: int, shown: str) -> None:
    problem = tasks.malformed("ok_id", epoch)
    assert problem is not None and shown in problem and len(problem) < 300


@pytest.mark.parametrize(("epoch", "shown"), TOO_LARGE.values(), ids=TOO_LARGE.keys())
def test_a_tracker_message_with_such_an_epoch_is_refused_without_touching_the_registry(
    probe_task: ProbeTask, caplog: pytest.LogCaptureFixture, epoch: int, shown: str
) -> None:
    task, reached = probe_task
    with caplog.at_level(logging.ERROR, logger="tracking.celery"):
        assert task("ok_id", epoch=epoch) == "refused"
    assert reached == []
    [record] = [r for r in caplog.records if "refused a malformed tracker message" in r.getMessage()]
    assert shown in record.getMessage()


@pytest.mark.parametrize("epoch", [1, 2, 2**31, 2**62, 2**63 - 1])
def test_an_epoch_a_signed_64_bit_integer_holds_is_well_formed(probe_task: ProbeTask, epoch: int) -> None:
    assert tasks.malformed("ok_id", epoch) is None
    task, reached = probe_task
    assert task("ok_id", epoch=epoch) == "ran"
    assert reached == [("ok_id", epoch)]


@pytest.mark.parametrize("epoch", [0, -1, -(2**63), -(2**64)])
def test_an_epoch_below_one_is_still_malformed(epoch: int) -> None:
    assert tasks.malformed("ok_id", epoch) is not None
